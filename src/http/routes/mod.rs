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

/// What the `customer_jwt` scheme says (API.md "Customer authentication").
const CUSTOMER_JWT: &str = "Customer authentication, off by default. With `--auth-jwt-secret` \
(HS256) or `--auth-jwks` (RS256/ES256), every /api/v1 route except the product reads and \
/api/v1/openapi.json needs `Authorization: Bearer <JWT>` with a valid signature and `exp` \
(`exp` and `nbf` checked with 30 s of leeway); none or a bad one: 401 `UNAUTHORIZED`. \
`sub` is the user the token acts as: another user's resources (path `user_id`, body `user_id`, \
the order's user) answer 403 `FORBIDDEN`. `\"role\":\"admin\"` acts on every user and on the \
admin routes (a customer's token there: 403); the static admin token still works. Creating \
users (POST /api/v1/users) needs an admin then.";

/// Declares the customer JWT on every operation that needs it when
/// authentication is on (optional: `{}` is the other requirement), with
/// its 401 and 403 answers.
fn document_customer_auth(openapi: &mut OpenApiDoc) {
    use utoipa::openapi::security::{HttpBuilder, SecurityRequirement};
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    if let Some(components) = openapi.components.as_mut() {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(CUSTOMER_JWT))
            .build();
        components.add_security_scheme("customer_jwt", SecurityScheme::Http(scheme));
    }
    let answer = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        let reads_open = path == "/api/v1/products" || path.starts_with("/api/v1/products/");
        if !path.starts_with("/api/v1/") {
            continue;
        }
        let operations = [
            (item.get.as_mut(), reads_open),
            (item.post.as_mut(), false),
            (item.put.as_mut(), false),
            (item.delete.as_mut(), false),
            (item.patch.as_mut(), false),
        ];
        for (operation, open) in operations {
            let Some(op) = operation.filter(|_| !open) else {
                continue;
            };
            let security = op.security.get_or_insert_with(Vec::new);
            if security.is_empty() {
                security.push(SecurityRequirement::default());
            }
            security.push(SecurityRequirement::new(
                "customer_jwt",
                Vec::<String>::new(),
            ));
            let responses = &mut op.responses.responses;
            responses.entry("401".into()).or_insert_with(|| {
                answer("UNAUTHORIZED (authentication on: no token, or a bad one)").into()
            });
            responses.entry("403".into()).or_insert_with(|| {
                answer("FORBIDDEN (authentication on: another user's resource, or an admin route)")
                    .into()
            });
        }
    }
}

/// Every route of the API, with its OpenAPI document.
pub fn api() -> OpenApiRouter<AppState> {
    let mut router = routes();
    document_customer_auth(router.get_openapi_mut());
    router
}

fn routes() -> OpenApiRouter<AppState> {
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
