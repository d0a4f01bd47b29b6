//! Users and balance: `/api/v1/users/...`.

use crate::domain::ids::UserId;
use crate::domain::money::Krw;
use crate::domain::rejection::Rejection;
use crate::domain::user::BalanceEntry;
use crate::domain::views::{BalanceView, Page, UserView};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, Id, IdemKey, PageParams, Paging};
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
        .routes(routes!(create_user))
        .routes(routes!(get_user))
        .routes(routes!(get_balance))
        .routes(routes!(charge_balance))
        .routes(routes!(balance_history))
}

/// A new user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    /// 1..=200 characters.
    pub name: String,
}

/// A charge to a user's balance.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChargeRequest {
    /// KRW to add, 1..=10,000,000. A number outside that range (negative,
    /// fractional, too large) is 400 `INVALID_AMOUNT`; a non-number is 400
    /// `INVALID_REQUEST`.
    #[schema(value_type = u64, minimum = 1, maximum = 10_000_000)]
    pub amount: serde_json::Number,
}

/// The amount of a charge: any JSON number that is not a u64 is an invalid
/// amount; the engine checks the range of the rest.
fn charge_amount(amount: &serde_json::Number, state: &AppState) -> Result<Krw, ApiError> {
    amount.as_u64().map(Krw).ok_or_else(|| {
        let limits = state.engine.limits();
        ApiError::from(Rejection::InvalidAmount {
            min: limits.charge_krw_min.0,
            max: limits.charge_krw_max.0,
        })
    })
}

/// Create a user with a zero balance.
#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    params(IdempotencyHeader),
    request_body = NewUser,
    responses(
        (status = 201, description = "The new user", body = UserView),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn create_user(
    State(s): State<AppState>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let engine = &s.engine;
    let user = engine.create_user(&body.name, key).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// A user.
#[utoipa::path(get, path = "/api/v1/users/{user_id}", tag = "users",
    params(("user_id" = u64, Path, description = "User id", minimum = 1)),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
    ))]
async fn get_user(
    State(s): State<AppState>,
    Id(id): Id<UserId>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(s.engine.user(id).await?))
}

/// A user's balance.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/balance", tag = "users",
    params(("user_id" = u64, Path, description = "User id", minimum = 1)),
    responses(
        (status = 200, description = "The balance", body = BalanceView),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
    ))]
async fn get_balance(
    State(s): State<AppState>,
    Id(id): Id<UserId>,
) -> Result<Json<BalanceView>, ApiError> {
    Ok(Json(s.engine.balance(id).await?))
}

/// Add money to a user's balance.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/balance/charge", tag = "users",
    params(("user_id" = u64, Path, description = "User id", minimum = 1), IdempotencyHeader),
    request_body = ChargeRequest,
    responses(
        (status = 200, description = "The new balance", body = BalanceView),
        (status = 400, description = "INVALID_AMOUNT or INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "BALANCE_LIMIT_EXCEEDED", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
async fn charge_balance(
    State(s): State<AppState>,
    Id(id): Id<UserId>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<ChargeRequest>,
) -> Result<Json<BalanceView>, ApiError> {
    let amount = charge_amount(&body.amount, &s)?;
    let engine = &s.engine;
    Ok(Json(engine.charge(id, amount, key).await?))
}

/// A user's balance history, newest first.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/balance/history", tag = "users",
    params(("user_id" = u64, Path, description = "User id", minimum = 1), PageParams),
    responses(
        (status = 200, description = "Charges, payments and refunds, newest first", body = Page<BalanceEntry>),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
    ))]
async fn balance_history(
    State(s): State<AppState>,
    Id(id): Id<UserId>,
    Paging(page): Paging,
) -> Result<Json<Page<BalanceEntry>>, ApiError> {
    Ok(Json(s.engine.history(id, page).await?))
}
