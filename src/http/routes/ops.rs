//! Operations: `/health` (liveness), `/ready` (readiness) and `/metrics`.

use crate::http::server::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: &'static str,
}

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The server answers", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// `ready`, or why not: `starting`, `storage_unavailable`, `standby`, `stopping`.
    pub status: &'static str,
    /// A sentence saying why changes are not accepted; when ready, what
    /// the operator should still know (snapshots failing); else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Readiness, for a load balancer: 200 while this node accepts changes,
/// else 503 with the reason. `/health` stays 200 meanwhile.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "This node accepts changes", body = Ready),
        (status = 503, description = "Starting, storage unavailable, standby or stopping", body = Ready),
    ))]
async fn ready(State(s): State<AppState>) -> (StatusCode, Json<Ready>) {
    let readiness = s.engine.readiness();
    if readiness.is_ready() {
        // Changes are still accepted while snapshots fail; the journal and
        // the replay after a crash grow meanwhile.
        let detail = s.engine.snapshots_failing().map(|(n, error)| {
            format!("the last {n} snapshots failed (retried by the next): {error}")
        });
        return (
            StatusCode::OK,
            Json(Ready {
                status: readiness.status(),
                detail,
            }),
        );
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(Ready {
            status: readiness.status(),
            detail: Some(readiness.detail()),
        }),
    )
}

/// Prometheus metrics: requests and latency per route and status, engine
/// gauges, journal flush latency and batch sizes.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let page = crate::http::metrics::render(&s.engine, s.metrics.as_ref());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
}
