//! Extractors that turn every malformed input into an [`ApiError`] with a
//! documented code, instead of axum's plain-text rejections.
//!
//! - [`ApiJson`]: a JSON body; too large → 413 `PAYLOAD_TOO_LARGE`, anything
//!   unparsable → 400 `INVALID_REQUEST` naming the field (the path comes from
//!   `serde_path_to_error`, which axum's `Json::from_bytes` uses). The
//!   `Content-Type` is not checked: a body that parses as JSON is accepted.
//! - [`Id`]: one positive integer path id, looked up by its name.
//! - [`IdemKey`]: the optional `Idempotency-Key` header.
//! - [`Admin`]: `Authorization: Bearer <admin token>`, compared in constant time,
//!   or, with authentication on, a caller the auth layer found to be an admin.
//! - [`Paging`]: `?limit=` and `?after=`; [`ApiQuery`]: other query parameters.

use crate::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use crate::engine::{IdempotencyKey, PageRequest};
use crate::http::auth::Principal;
use crate::http::error::ApiError;
use crate::http::server::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Characters of client input echoed back in an error message, at most.
const ECHO_CHARS_MAX: usize = 40;

fn echo(raw: &str) -> String {
    let mut s: String = raw.chars().take(ECHO_CHARS_MAX).collect();
    if raw.chars().nth(ECHO_CHARS_MAX).is_some() {
        s.push('…');
    }
    s
}

/// A JSON request body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(
                    crate::domain::limits::Limits::API.request_body_bytes_max,
                )
            } else {
                ApiError::invalid(format!(
                    "the request body could not be read: {}",
                    e.body_text()
                ))
            }
        })?;
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(value)| ApiJson(value))
            .map_err(|rejection| ApiError::invalid(json_message(&rejection.body_text())))
    }
}

/// axum's rejection text without its prefix: what remains names the field
/// (`items[0].quantity: invalid type: string "a", expected u64 at line 1 column 30`).
fn json_message(text: &str) -> String {
    const PREFIXES: [&str; 2] = [
        "Failed to deserialize the JSON body into the target type: ",
        "Failed to parse the request body as JSON: ",
    ];
    let detail = PREFIXES
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .unwrap_or(text);
    format!("invalid JSON body: {detail}")
}

/// A positive id, as every id of the API is (`0` is never assigned).
pub fn positive_id(field: &str, value: u64) -> Result<u64, ApiError> {
    if value == 0 {
        return Err(ApiError::invalid(format!(
            "{field} must be a positive integer"
        )));
    }
    Ok(value)
}

fn parse_id(field: &str, raw: &str) -> Result<u64, ApiError> {
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<u64>() {
        Ok(n) if digits && n > 0 => Ok(n),
        _ => Err(ApiError::invalid(format!(
            "{field} must be a positive integer, got \"{}\"",
            echo(raw)
        ))),
    }
}

/// An id type that can appear in a path, under its parameter name.
pub trait PathId: Sized {
    const NAME: &'static str;
    fn from_u64(id: u64) -> Self;
}

macro_rules! path_id {
    ($ty:ty, $name:literal) => {
        impl PathId for $ty {
            const NAME: &'static str = $name;
            fn from_u64(id: u64) -> Self {
                Self(id)
            }
        }
    };
}

path_id!(UserId, "user_id");
path_id!(ProductId, "product_id");
path_id!(CouponId, "coupon_id");
path_id!(OrderId, "order_id");
path_id!(UserCouponId, "user_coupon_id");

/// A path id, e.g. `{user_id}`: 400 `INVALID_REQUEST` unless a positive integer.
pub struct Id<T>(pub T);

impl<S, T> FromRequestParts<S> for Id<T>
where
    S: Send + Sync,
    T: PathId,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("invalid path: {}", e.body_text())))?;
        let raw = params
            .iter()
            .find(|(name, _)| *name == T::NAME)
            .map(|(_, value)| value)
            .ok_or_else(|| {
                tracing::error!(param = T::NAME, "route has no such path parameter");
                ApiError::internal()
            })?;
        Ok(Id(T::from_u64(parse_id(T::NAME, raw)?)))
    }
}

/// The `Idempotency-Key` header, if any (1..=128 printable ASCII characters).
pub struct IdemKey(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        let Some(value) = values.next() else {
            return Ok(IdemKey(None));
        };
        if values.next().is_some() {
            return Err(ApiError::invalid("send at most one Idempotency-Key header"));
        }
        let text = value.to_str().map_err(|_| {
            ApiError::invalid("Idempotency-Key must be 1 to 128 printable characters")
        })?;
        Ok(IdemKey(Some(IdempotencyKey::new(text)?)))
    }
}

/// Compares in time that depends only on the lengths, not on where the
/// first difference is, so a caller cannot guess the token byte by byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Proof that the request carries the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Authentication on: the auth layer has named the caller.
        match parts.extensions.get::<Principal>() {
            Some(Principal::Admin) => return Ok(Admin),
            Some(Principal::User(_)) => {
                return Err(ApiError::forbidden("this endpoint needs an admin"))
            }
            None => {}
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(ApiError::unauthorized)?;
        if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

/// A query string: unparsable → 400 `INVALID_REQUEST`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::invalid(format!("invalid query string: {}", e.body_text())))
    }
}

/// `?limit=` (1..=100, default 20) and `?after=<cursor>` of a list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1..=100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// A validated page request.
pub struct Paging(pub PageRequest);

impl FromRequestParts<AppState> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(q) = Query::<PageParams>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::invalid(format!("invalid query string: {}", e.body_text())))?;
        let page = PageRequest::parse(
            q.limit.as_deref(),
            q.after.as_deref(),
            state.engine.limits(),
        )?;
        Ok(Paging(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_must_be_positive_decimal_integers() {
        // proves zero, signs, spaces, overflow and non-digits are refused
        assert_eq!(parse_id("user_id", "42").ok(), Some(42));
        for bad in [
            "0",
            "-1",
            "+1",
            " 1",
            "1.0",
            "abc",
            "",
            "18446744073709551616",
        ] {
            let e = parse_id("user_id", bad).unwrap_err();
            assert_eq!(e.code, "INVALID_REQUEST", "{bad}");
            assert!(e.message.contains("user_id"), "{}", e.message);
        }
    }

    #[test]
    fn token_comparison_needs_every_byte_to_match() {
        // proves equal tokens match and any difference (or length) does not
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
