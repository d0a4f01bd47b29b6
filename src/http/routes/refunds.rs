//! Refunds (admin): `POST /api/v1/orders/{order_id}/refund`.

use crate::domain::ids::{OrderId, ProductId};
use crate::domain::order::Order;
use crate::domain::refund::{RefundLine, RefundRequest};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{positive_id, Admin, ApiJson, Id, IdemKey};
use crate::http::routes::IdempotencyHeader;
use crate::http::server::AppState;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(refund_order))
}

/// Units of one product of the order to refund.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RefundLineRequest {
    #[schema(minimum = 1)]
    pub product_id: u64,
    /// 1..=1,000, at most what is left of the line.
    #[schema(minimum = 1, maximum = 1_000)]
    pub quantity: u64,
}

/// A refund: `items` (each product of the order once), or without them
/// everything left of the order (`{}`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RefundOrderRequest {
    #[serde(default)]
    pub items: Option<Vec<RefundLineRequest>>,
    /// At most 200 characters.
    #[serde(default)]
    pub reason: Option<String>,
}

impl RefundOrderRequest {
    fn into_request(self) -> Result<RefundRequest, ApiError> {
        let items = self
            .items
            .map(|items| {
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let id = positive_id(&format!("items[{i}].product_id"), l.product_id)?;
                        Ok(RefundLine {
                            product_id: ProductId(id),
                            quantity: l.quantity,
                        })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            })
            .transpose()?;
        Ok(RefundRequest {
            items,
            reason: self.reason,
        })
    }
}

/// Refund a paid order (admin), wholly or line by line: the user's balance
/// is credited with the refunded lines' share of `pay_amount` (rounded
/// down; the last refund returns exactly what is left), the units go back
/// to stock, and a wholly refunded order's coupon is available again.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/refund", tag = "orders",
    security(("admin_token" = [])),
    params(("order_id" = u64, Path, description = "Order id", minimum = 1), IdempotencyHeader),
    request_body = RefundOrderRequest,
    responses(
        (status = 200, description = "The order, status partially_refunded or refunded", body = Order),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ORDER_NOT_REFUNDABLE or REFUND_EXCEEDS_ORDER", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn refund_order(
    _: Admin,
    State(s): State<AppState>,
    Id(id): Id<OrderId>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<RefundOrderRequest>,
) -> Result<Json<Order>, ApiError> {
    let request = body.into_request()?;
    Ok(Json(s.engine.refund_order(id, request, key).await?))
}
