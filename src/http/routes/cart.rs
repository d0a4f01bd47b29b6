//! A user's cart: `/api/v1/users/{user_id}/cart/...`. The cart reserves nothing.

use crate::domain::ids::{ProductId, UserId};
use crate::domain::views::CartView;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{positive_id, ApiJson, Id, IdemKey};
use crate::http::routes::IdempotencyHeader;
use crate::http::server::AppState;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart))
        .routes(routes!(set_cart_item))
        .routes(routes!(remove_cart_item))
}

/// A cart line: adding a product already in the cart sets its quantity.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CartItemRequest {
    #[schema(minimum = 1)]
    pub product_id: u64,
    /// 1..=1,000.
    #[schema(minimum = 1, maximum = 1_000)]
    pub quantity: u64,
}

/// A user's cart.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/cart", tag = "cart",
    params(("user_id" = u64, Path, description = "User id", minimum = 1)),
    responses(
        (status = 200, description = "The cart", body = CartView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
    ))]
async fn get_cart(
    State(s): State<AppState>,
    Id(id): Id<UserId>,
) -> Result<Json<CartView>, ApiError> {
    Ok(Json(s.engine.cart(id).await?))
}

/// Add a product to the cart, or set its quantity.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/cart/items", tag = "cart",
    params(("user_id" = u64, Path, description = "User id", minimum = 1), IdempotencyHeader),
    request_body = CartItemRequest,
    responses(
        (status = 200, description = "The cart", body = CartView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND or PRODUCT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "OUT_OF_STOCK", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn set_cart_item(
    State(s): State<AppState>,
    Id(user_id): Id<UserId>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<CartItemRequest>,
) -> Result<Json<CartView>, ApiError> {
    let product_id = ProductId(positive_id("product_id", body.product_id)?);
    let engine = &s.engine;
    Ok(Json(
        engine
            .set_cart_item(user_id, product_id, body.quantity, key)
            .await?,
    ))
}

/// Remove a product from the cart (removing one that is not there is not an error).
#[utoipa::path(delete, path = "/api/v1/users/{user_id}/cart/items/{product_id}", tag = "cart",
    params(
        ("user_id" = u64, Path, description = "User id", minimum = 1),
        ("product_id" = u64, Path, description = "Product id", minimum = 1),
    ),
    responses(
        (status = 200, description = "The cart", body = CartView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND or PRODUCT_NOT_FOUND", body = ErrorBody),
    ))]
async fn remove_cart_item(
    State(s): State<AppState>,
    Id(user_id): Id<UserId>,
    Id(product_id): Id<ProductId>,
) -> Result<Json<CartView>, ApiError> {
    let engine = &s.engine;
    Ok(Json(engine.remove_cart_item(user_id, product_id).await?))
}
