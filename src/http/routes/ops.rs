//! Operations: `/health` and `/metrics`.

use crate::http::server::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
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
