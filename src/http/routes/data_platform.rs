//! The data platform's delivery, for the operator (admin):
//! `/api/v1/admin/data-platform`, its dead letters and their redrive.

use crate::domain::order::Order;
use crate::domain::time::Timestamp;
use crate::domain::views::Page;
use crate::engine::delivery::admin::DataPlatformStatus;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Admin, IdemKey, PageParams, Paging};
use crate::http::routes::IdempotencyHeader;
use crate::http::server::AppState;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(data_platform_status))
        .routes(routes!(list_dead_letters))
        .routes(routes!(redrive_dead_letters))
}

/// An event as the data platform receives it (`API.md`, Data platform).
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // describes the JSON of `PlatformEvent::write_json`; never built
struct DataPlatformEvent {
    /// Stable across redeliveries: `order-paid-<order id>`.
    event_id: String,
    /// `order_paid`.
    #[serde(rename = "type")]
    kind: String,
    /// The paid order.
    order: Order,
    /// When the payment happened.
    at: Timestamp,
}

/// An event the data platform refused too often.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    /// The dead letter's id: the cursor of the next page.
    pub id: u64,
    #[schema(value_type = DataPlatformEvent)]
    pub event: serde_json::Value,
    /// What the data platform answered the last time.
    pub last_error: String,
    /// How many times it was refused alone.
    pub refusals: u32,
    /// When it became a dead letter.
    pub dead_at: Timestamp,
}

/// How many dead letters went back to the outbox.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Redriven {
    pub redriven: u64,
}

/// The data platform's backlog and what it accepted (admin).
#[utoipa::path(get, path = "/api/v1/admin/data-platform", tag = "data platform",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Pending, delivered and dead-lettered events", body = DataPlatformStatus),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
    ))]
async fn data_platform_status(
    _: Admin,
    State(s): State<AppState>,
) -> Result<Json<DataPlatformStatus>, ApiError> {
    Ok(Json(s.engine.data_platform_status().await?))
}

/// The dead letters, by id (admin).
#[utoipa::path(get, path = "/api/v1/admin/data-platform/dead-letters", tag = "data platform",
    security(("admin_token" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of dead letters, by id", body = Page<DeadLetterView>),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
    ))]
async fn list_dead_letters(
    _: Admin,
    State(s): State<AppState>,
    Paging(page): Paging,
) -> Result<Json<Page<DeadLetterView>>, ApiError> {
    let found = s.engine.dead_letters(page).await?;
    let items = found
        .items
        .into_iter()
        .map(|(id, d)| DeadLetterView {
            id,
            event: d.event.to_json_value(),
            last_error: d.last_error,
            refusals: d.refusals,
            dead_at: d.at,
        })
        .collect();
    Ok(Json(Page {
        items,
        next: found.next.map(|n| n.to_string()),
    }))
}

/// Send every dead letter again: they rejoin the outbox, with their
/// refusals counted from zero (admin). Repeating it sends what is dead
/// then, so a retry never sends an event twice.
#[utoipa::path(post, path = "/api/v1/admin/data-platform/dead-letters/redrive", tag = "data platform",
    security(("admin_token" = [])),
    params(IdempotencyHeader),
    responses(
        (status = 200, description = "How many dead letters were sent again", body = Redriven),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 503, description = "STORAGE_UNAVAILABLE", body = ErrorBody),
    ))]
async fn redrive_dead_letters(
    _: Admin,
    State(s): State<AppState>,
    _key: IdemKey,
) -> Result<Json<Redriven>, ApiError> {
    Ok(Json(Redriven {
        redriven: s.engine.redrive_dead_letters().await?,
    }))
}
