//! One module per resource of `API.md`, each with its own `router()`, and
//! the OpenAPI document they add up to.

pub mod cart;
pub mod coupons;
pub mod data_platform;
pub mod ops;
pub mod orders;
pub mod overview;
pub mod products;
pub mod refunds;
pub mod users;

use crate::http::server::AppState;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "commerce-engine",
        description = "Wallets, stock, first-come-first-served coupons, carts, orders and payment. \
Every error is {\"code\",\"message\"}; a 2xx answer to a state-changing request is durable. \
Any POST accepts an Idempotency-Key.",
    ),
    modifiers(&AdminToken),
    tags(
        (name = "users", description = "Users and balance"),
        (name = "products", description = "Products, stock and the top-products ranking"),
        (name = "coupons", description = "Coupon campaigns, first come first served"),
        (name = "cart", description = "A user's cart"),
        (name = "orders", description = "Orders and payment"),
        (name = "data platform", description = "Delivery of events to the data platform: backlog, dead letters, redrive"),
        (name = "operations", description = "Health, readiness, metrics and the operator's dashboard"),
    )
)]
struct ApiDoc;

/// Declares the bearer token of the admin endpoints.
struct AdminToken;

impl utoipa::Modify for AdminToken {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "admin_token",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

/// Every route of the API, with its OpenAPI document.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::router())
        .merge(products::router())
        .merge(coupons::router())
        .merge(cart::router())
        .merge(orders::router())
        .merge(refunds::router())
        .merge(data_platform::router())
        .merge(ops::router())
        .merge(overview::router())
        .merge(crate::http::dashboard::router())
}

/// The `Idempotency-Key` header, as documented on every POST.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // describes a header; read by `IdemKey`
pub struct IdempotencyHeader {
    /// 1..=128 printable characters. A retry with the same key and body gets
    /// the first answer and changes nothing; another body gets 422
    /// `IDEMPOTENCY_KEY_REUSED`. Kept at least 24 hours.
    #[serde(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}
