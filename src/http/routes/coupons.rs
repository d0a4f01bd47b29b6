//! Coupon campaigns, first come first served: `/api/v1/coupons/...` and
//! `/api/v1/users/{user_id}/coupons`.

use crate::domain::coupon::Discount;
use crate::domain::coupon_terms::CouponTerms;
use crate::domain::ids::{CouponId, UserId};
use crate::domain::money::Krw;
use crate::domain::time::Timestamp;
use crate::domain::views::{CouponView, Page, UserCouponView};
use crate::engine::NewCoupon;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{positive_id, Admin, ApiJson, Id, IdemKey, PageParams, Paging};
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
        .routes(routes!(create_coupon, list_coupons))
        .routes(routes!(get_coupon))
        .routes(routes!(issue_coupon))
        .routes(routes!(user_coupons))
}

/// A new coupon campaign.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewCouponRequest {
    /// 1..=200 characters.
    pub name: String,
    pub discount: Discount,
    /// Coupons to issue at most, 1..=10,000,000.
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub quantity: u64,
    /// When the campaign's coupons stop being usable (RFC 3339); none: never.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// No coupon is issued before it (RFC 3339, before `expires_at`); none: at once.
    #[serde(default)]
    pub starts_at: Option<Timestamp>,
    /// KRW, 1..=1,000,000,000: an order whose total is below it cannot use the coupon.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub min_order_amount: Option<u64>,
    /// KRW, 1..=100,000,000, percent discounts only: the most taken off an order.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub max_discount: Option<u64>,
}

/// Who gets a coupon.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct IssueRequest {
    #[schema(minimum = 1)]
    pub user_id: u64,
}

/// Create a coupon campaign (admin).
#[utoipa::path(post, path = "/api/v1/coupons", tag = "coupons",
    security(("admin_token" = [])),
    params(IdempotencyHeader),
    request_body = NewCouponRequest,
    responses(
        (status = 201, description = "The new campaign", body = CouponView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn create_coupon(
    _: Admin,
    State(s): State<AppState>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<NewCouponRequest>,
) -> Result<(StatusCode, Json<CouponView>), ApiError> {
    let new = NewCoupon {
        name: body.name,
        discount: body.discount,
        quantity: body.quantity,
        expires_at: body.expires_at,
        terms: CouponTerms {
            starts_at: body.starts_at,
            min_order_amount: body.min_order_amount.map(Krw),
            max_discount: body.max_discount.map(Krw),
        },
    };
    let engine = &s.engine;
    let coupon = engine.create_coupon(new, key).await?;
    Ok((StatusCode::CREATED, Json(coupon)))
}

/// Every coupon campaign, by id (admin).
#[utoipa::path(get, path = "/api/v1/coupons", tag = "coupons",
    security(("admin_token" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of the campaigns", body = Page<CouponView>),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
    ))]
async fn list_coupons(
    _: Admin,
    State(s): State<AppState>,
    Paging(page): Paging,
) -> Result<Json<Page<CouponView>>, ApiError> {
    Ok(Json(s.engine.coupons(page).await?))
}

/// A coupon campaign and how many coupons remain.
#[utoipa::path(get, path = "/api/v1/coupons/{coupon_id}", tag = "coupons",
    params(("coupon_id" = u64, Path, description = "Coupon campaign id", minimum = 1)),
    responses(
        (status = 200, description = "The campaign", body = CouponView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
    ))]
async fn get_coupon(
    State(s): State<AppState>,
    Id(id): Id<CouponId>,
) -> Result<Json<CouponView>, ApiError> {
    Ok(Json(s.engine.coupon(id).await?))
}

/// Issue one coupon of the campaign to a user: never more than its
/// quantity, at most one per user.
#[utoipa::path(post, path = "/api/v1/coupons/{coupon_id}/issue", tag = "coupons",
    params(("coupon_id" = u64, Path, description = "Coupon campaign id", minimum = 1), IdempotencyHeader),
    request_body = IssueRequest,
    responses(
        (status = 201, description = "The user's coupon", body = UserCouponView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND or COUPON_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "COUPON_SOLD_OUT, COUPON_ALREADY_ISSUED, COUPON_EXPIRED or COUPON_NOT_STARTED", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn issue_coupon(
    State(s): State<AppState>,
    caller: Caller,
    Id(coupon_id): Id<CouponId>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<IssueRequest>,
) -> Result<(StatusCode, Json<UserCouponView>), ApiError> {
    let user_id = UserId(positive_id("user_id", body.user_id)?);
    caller.check(user_id, "this request")?;
    let engine = &s.engine;
    let coupon = engine.issue_coupon(coupon_id, user_id, key).await?;
    Ok((StatusCode::CREATED, Json(coupon)))
}

/// A user's coupons, by id.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/coupons", tag = "coupons",
    params(("user_id" = u64, Path, description = "User id", minimum = 1), PageParams),
    responses(
        (status = 200, description = "A page of the user's coupons", body = Page<UserCouponView>),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
    ))]
async fn user_coupons(
    State(s): State<AppState>,
    Id(id): Id<UserId>,
    Paging(page): Paging,
) -> Result<Json<Page<UserCouponView>>, ApiError> {
    Ok(Json(s.engine.user_coupons(id, page).await?))
}
