//! Orders and payment: `/api/v1/orders/...` and `/api/v1/users/{user_id}/orders`.

use crate::domain::ids::{OrderId, ProductId, UserCouponId, UserId};
use crate::domain::order::{validate_lines, LineRequest, Order};
use crate::domain::views::Page;
use crate::engine::{OrderFilter, OrderSource, PlaceOrder};
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{
    positive_id, Admin, ApiJson, ApiQuery, Id, IdemKey, PageParams, Paging,
};
use crate::http::routes::IdempotencyHeader;
use crate::http::server::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(user_orders))
        .routes(routes!(cancel_order))
        .routes(routes!(pay_order))
}

/// One line of a new order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OrderLineRequest {
    #[schema(minimum = 1)]
    pub product_id: u64,
    /// 1..=1,000.
    #[schema(minimum = 1, maximum = 1_000)]
    pub quantity: u64,
}

/// A new order: either `items` (1..=50 lines, each product once) or
/// `"from_cart": true` (the cart's lines; they leave the cart).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PlaceOrderRequest {
    #[schema(minimum = 1)]
    pub user_id: u64,
    #[serde(default)]
    pub items: Option<Vec<OrderLineRequest>>,
    #[serde(default)]
    pub from_cart: Option<bool>,
    /// A coupon the user holds, status `available`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub user_coupon_id: Option<u64>,
}

impl PlaceOrderRequest {
    /// Checks the shape of the request; every limit is checked before the engine sees it.
    fn into_command(self, state: &AppState) -> Result<PlaceOrder, ApiError> {
        let user_id = UserId(positive_id("user_id", self.user_id)?);
        let user_coupon_id = self
            .user_coupon_id
            .map(|id| positive_id("user_coupon_id", id).map(UserCouponId))
            .transpose()?;
        let source = match (self.items, self.from_cart.unwrap_or(false)) {
            (Some(_), true) => {
                return Err(ApiError::invalid(
                    "send either items or \"from_cart\": true, not both",
                ))
            }
            (None, false) => {
                return Err(ApiError::invalid(
                    "send items (1 to 50 lines) or \"from_cart\": true",
                ))
            }
            (None, true) => OrderSource::Cart,
            (Some(items), false) => {
                let lines = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let id = positive_id(&format!("items[{i}].product_id"), l.product_id)?;
                        Ok(LineRequest {
                            product_id: ProductId(id),
                            quantity: l.quantity,
                        })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()?;
                validate_lines(&lines, state.engine.limits())?;
                OrderSource::Items(lines)
            }
        };
        Ok(PlaceOrder {
            user_id,
            source,
            user_coupon_id,
        })
    }
}

/// Place an order: reserves the stock of every line and uses the coupon,
/// all or nothing. Pay it within the order's time or it expires.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders",
    params(IdempotencyHeader),
    request_body = PlaceOrderRequest,
    responses(
        (status = 201, description = "The order, status pending", body = Order),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND or PRODUCT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "OUT_OF_STOCK, INVALID_COUPON or PURCHASE_LIMIT_EXCEEDED", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn place_order(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<PlaceOrderRequest>,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    let command = body.into_command(&s)?;
    caller.check(command.user_id, "this order")?;
    let engine = &s.engine;
    let order = engine.place_order(command, key).await?;
    Ok((StatusCode::CREATED, Json(order)))
}

/// `?status=` of the admin list of orders.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusParam {
    /// One of `pending`, `paid`, `failed`, `cancelled`, `expired`,
    /// `partially_refunded`, `refunded`; none: every order.
    pub status: Option<String>,
}

/// Every order, or those of one status, by id (admin).
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders",
    security(("admin_token" = [])),
    params(StatusParam, PageParams),
    responses(
        (status = 200, description = "A page of orders, by id", body = Page<Order>),
        (status = 400, description = "INVALID_REQUEST (a status not of the API names `status`)", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
    ))]
async fn list_orders(
    _: Admin,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<StatusParam>,
    Paging(page): Paging,
) -> Result<Json<Page<Order>>, ApiError> {
    let filter = OrderFilter::parse(q.status.as_deref())?;
    Ok(Json(s.engine.orders(filter, page).await?))
}

/// An order.
#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "orders",
    params(("order_id" = u64, Path, description = "Order id", minimum = 1)),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND", body = ErrorBody),
    ))]
async fn get_order(
    State(s): State<AppState>,
    caller: Caller,
    Id(id): Id<OrderId>,
) -> Result<Json<Order>, ApiError> {
    let order = s.engine.order(id).await?;
    caller.check(order.user_id, "this order")?;
    Ok(Json(order))
}

/// With authentication on, a customer acts only on their own orders: the
/// order's user is read first (it never changes), before anything is done.
async fn check_owner(s: &AppState, caller: &Caller, id: OrderId) -> Result<(), ApiError> {
    if !caller.is_customer() {
        return Ok(());
    }
    let order = s.engine.order(id).await?;
    caller.check(order.user_id, "this order")
}

/// A user's orders, newest first.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/orders", tag = "orders",
    params(("user_id" = u64, Path, description = "User id", minimum = 1), PageParams),
    responses(
        (status = 200, description = "A page of the user's orders, newest first", body = Page<Order>),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
    ))]
async fn user_orders(
    State(s): State<AppState>,
    Id(id): Id<UserId>,
    Paging(page): Paging,
) -> Result<Json<Page<Order>>, ApiError> {
    Ok(Json(s.engine.user_orders(id, page).await?))
}

/// Cancel a pending order: its stock comes back and its coupon is available again.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/cancel", tag = "orders",
    params(("order_id" = u64, Path, description = "Order id", minimum = 1), IdempotencyHeader),
    responses(
        (status = 200, description = "The order, status cancelled", body = Order),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ORDER_NOT_CANCELLABLE", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn cancel_order(
    State(s): State<AppState>,
    caller: Caller,
    Id(id): Id<OrderId>,
    IdemKey(key): IdemKey,
) -> Result<Json<Order>, ApiError> {
    check_owner(&s, &caller, id).await?;
    let engine = &s.engine;
    Ok(Json(engine.cancel_order(id, key).await?))
}

/// Pay a pending order from the user's balance. With too little balance the
/// order becomes `failed`, its stock returned and its coupon restored.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/payment", tag = "orders",
    params(("order_id" = u64, Path, description = "Order id", minimum = 1), IdempotencyHeader),
    responses(
        (status = 200, description = "The order, status paid", body = Order),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "INSUFFICIENT_BALANCE or ORDER_NOT_PAYABLE", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn pay_order(
    State(s): State<AppState>,
    caller: Caller,
    Id(id): Id<OrderId>,
    IdemKey(key): IdemKey,
) -> Result<Json<Order>, ApiError> {
    check_owner(&s, &caller, id).await?;
    let engine = &s.engine;
    Ok(Json(engine.pay_order(id, key).await?))
}
