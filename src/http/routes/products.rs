//! Products, restock and the top-products ranking: `/api/v1/products/...`
//! and `/api/v1/admin/stats/refresh`.

use crate::domain::ids::ProductId;
use crate::domain::money::Krw;
use crate::domain::product::ProductPatch;
use crate::domain::stats::TopProducts;
use crate::domain::views::{Page, ProductView};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Admin, ApiJson, Id, IdemKey, PageParams, Paging};
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
        .routes(routes!(list_products, create_product))
        .routes(routes!(top_products))
        .routes(routes!(get_product, update_product))
        .routes(routes!(restock_product))
        .routes(routes!(refresh_stats))
}

/// A new product.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewProduct {
    /// 1..=200 characters.
    pub name: String,
    /// KRW, 1..=100,000,000.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub price: u64,
    /// Units in stock, 0..=1,000,000,000.
    #[schema(maximum = 1_000_000_000)]
    pub stock: u64,
    /// Units one user may hold in pending, paid and partially refunded
    /// orders, 1..=1,000; absent or null: no limit.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000)]
    pub max_per_user: Option<u64>,
}

/// A change of a product: at least one field; absent fields stay.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ProductUpdate {
    /// 1..=200 characters.
    #[serde(default)]
    pub name: Option<String>,
    /// KRW, 1..=100,000,000; applies to orders placed after the change.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub price: Option<u64>,
    /// 1..=1,000, or null to remove the limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1_000)]
    pub max_per_user: Option<Option<u64>>,
}

/// A field that may be absent (`None`), null (`Some(None)`) or a value.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Units to add to a product's stock.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RestockRequest {
    /// 1 or more; the stock may hold at most 1,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub quantity: u64,
}

/// Create a product (admin).
#[utoipa::path(post, path = "/api/v1/products", tag = "products",
    security(("admin_token" = [])),
    params(IdempotencyHeader),
    request_body = NewProduct,
    responses(
        (status = 201, description = "The new product", body = ProductView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn create_product(
    _: Admin,
    State(s): State<AppState>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<NewProduct>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    let engine = &s.engine;
    let product = engine
        .create_limited_product(
            &body.name,
            Krw(body.price),
            body.stock,
            body.max_per_user,
            key,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(product)))
}

/// Products by id.
#[utoipa::path(get, path = "/api/v1/products", tag = "products",
    params(PageParams),
    responses(
        (status = 200, description = "A page of products, by id", body = Page<ProductView>),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
    ))]
async fn list_products(
    State(s): State<AppState>,
    Paging(page): Paging,
) -> Result<Json<Page<ProductView>>, ApiError> {
    Ok(Json(s.engine.products(page).await?))
}

/// A product; `stock` is what can still be ordered now.
#[utoipa::path(get, path = "/api/v1/products/{product_id}", tag = "products",
    params(("product_id" = u64, Path, description = "Product id", minimum = 1)),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "PRODUCT_NOT_FOUND", body = ErrorBody),
    ))]
async fn get_product(
    State(s): State<AppState>,
    Id(id): Id<ProductId>,
) -> Result<Json<ProductView>, ApiError> {
    Ok(Json(s.engine.product(id).await?))
}

/// Change a product's name, price or per-user limit (admin). A price
/// change applies to orders placed after it; a limit lowered below what a
/// user holds refuses that user's new units only.
#[utoipa::path(patch, path = "/api/v1/products/{product_id}", tag = "products",
    security(("admin_token" = [])),
    params(("product_id" = u64, Path, description = "Product id", minimum = 1), IdempotencyHeader),
    request_body = ProductUpdate,
    responses(
        (status = 200, description = "The product as changed", body = ProductView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "PRODUCT_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn update_product(
    _: Admin,
    State(s): State<AppState>,
    Id(id): Id<ProductId>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<ProductUpdate>,
) -> Result<Json<ProductView>, ApiError> {
    let patch = ProductPatch {
        name: body.name,
        price: body.price.map(Krw),
        max_per_user: body.max_per_user,
    };
    Ok(Json(s.engine.update_product(id, patch, key).await?))
}

/// Add stock to a product (admin).
#[utoipa::path(post, path = "/api/v1/products/{product_id}/restock", tag = "products",
    security(("admin_token" = [])),
    params(("product_id" = u64, Path, description = "Product id", minimum = 1), IdempotencyHeader),
    request_body = RestockRequest,
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "PRODUCT_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn restock_product(
    _: Admin,
    State(s): State<AppState>,
    Id(id): Id<ProductId>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<RestockRequest>,
) -> Result<Json<ProductView>, ApiError> {
    let engine = &s.engine;
    Ok(Json(engine.restock(id, body.quantity, key).await?))
}

/// The 5 products with the most units paid in the last 3 days, as of the
/// last refresh.
#[utoipa::path(get, path = "/api/v1/products/top", tag = "products",
    responses((status = 200, description = "The ranking", body = TopProducts)))]
async fn top_products(State(s): State<AppState>) -> Result<Json<TopProducts>, ApiError> {
    Ok(Json(s.engine.top_products().await?))
}

/// Recompute the ranking now (admin). An `Idempotency-Key` is checked for
/// its shape; the refresh itself changes nothing a retry could repeat.
#[utoipa::path(post, path = "/api/v1/admin/stats/refresh", tag = "products",
    security(("admin_token" = [])),
    params(IdempotencyHeader),
    responses(
        (status = 200, description = "The ranking, recomputed", body = TopProducts),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
    ))]
async fn refresh_stats(
    _: Admin,
    State(s): State<AppState>,
    _key: IdemKey,
) -> Result<Json<TopProducts>, ApiError> {
    let engine = &s.engine;
    Ok(Json(engine.refresh_stats().await?))
}
