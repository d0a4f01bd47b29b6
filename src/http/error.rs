//! [`ApiError`]: the one error type of the HTTP layer, and the one place
//! where an error becomes a status code and a documented error code.
//!
//! Every error leaves as `{"code","message"}` with
//! `Content-Type: application/json`. Engine errors carry their code
//! ([`Error::code`]); this module only decides the status. Internal errors
//! (storage, panics) are logged with their details and answered without them.

use crate::domain::rejection::Rejection;
use crate::engine::Error;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// An UPPER_SNAKE code of `API.md`, e.g. `USER_NOT_FOUND`.
    pub code: String,
    /// A human sentence; for a bad field it names the field.
    pub message: String,
}

/// An error answer: status, code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// Seconds a client should wait before retrying an overloaded server.
pub const RETRY_AFTER_SECS: &str = "1";

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "this endpoint needs Authorization: Bearer <admin token>",
        )
    }

    /// No token, or a bad one, where authentication is on: `why` says which.
    pub fn unauthorized_token(why: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", why)
    }

    /// A valid token that may not act on what the request acts on.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "this method is not allowed on this endpoint",
        )
    }

    pub fn payload_too_large(bytes_max: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the request body is larger than {bytes_max} bytes"),
        )
    }

    pub fn overloaded() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            "the server cannot take more work now; retry shortly",
        )
    }

    /// A request admitted and not answered within the request timeout: its
    /// change may still be under way, so the client cannot be told whether
    /// it happened, only how to learn it.
    pub fn outcome_unknown() -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "OUTCOME_UNKNOWN",
            "the request was not answered in time: the change may or may not have happened; \
             retry with the same Idempotency-Key to learn which",
        )
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error; nothing was acknowledged",
        )
    }

    /// The error for a status that some layer produced without a JSON body
    /// (axum's 405, tower-http's 413 and timeouts): one code per status.
    pub fn for_status(status: StatusCode) -> ApiError {
        match status {
            StatusCode::BAD_REQUEST => ApiError::invalid("the request is malformed"),
            StatusCode::UNAUTHORIZED => ApiError::unauthorized(),
            StatusCode::FORBIDDEN => ApiError::forbidden("the request was refused"),
            StatusCode::NOT_FOUND => ApiError::not_found(),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(
                crate::domain::limits::Limits::API.request_body_bytes_max,
            ),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => ApiError::overloaded(),
            StatusCode::GATEWAY_TIMEOUT => ApiError::outcome_unknown(),
            s if s.is_client_error() => {
                ApiError::new(s, "INVALID_REQUEST", "the request was refused")
            }
            _ => ApiError::internal(),
        }
    }
}

/// The status of an engine error code: `*_NOT_FOUND` → 404, bad input →
/// 400, a reused key → 422, unavailable → 503, other business rules → 409.
fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Overloaded | Error::Storage(_) | Error::ShuttingDown | Error::NotLeader => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
        Error::Rejected(r) => match r.code() {
            "INVALID_REQUEST" | "INVALID_AMOUNT" => StatusCode::BAD_REQUEST,
            code if code.ends_with("_NOT_FOUND") => StatusCode::NOT_FOUND,
            _ => StatusCode::CONFLICT,
        },
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let message = match &error {
            Error::Storage(e) => {
                tracing::error!(error = %e, "storage failed; the engine refuses writes until restarted");
                "storage is unavailable; nothing was acknowledged".to_owned()
            }
            other => other.to_string(),
        };
        ApiError {
            status: status_of(&error),
            code: error.code(),
            message,
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        ApiError::from(Error::Rejected(rejection))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The body was not read, so the connection cannot carry another
            // request: say so, or a client that pools connections sends its
            // next request down one the server is closing.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{CouponId, UserId};
    use crate::store::StorageError;

    #[test]
    fn engine_errors_map_to_the_documented_statuses() {
        // proves the one mapping table: not found 404, bad input 400, rules 409, key 422, 503
        let cases: Vec<(Error, u16, &str)> = vec![
            (
                Rejection::UserNotFound(UserId(1)).into(),
                404,
                "USER_NOT_FOUND",
            ),
            (Error::invalid("x"), 400, "INVALID_REQUEST"),
            (
                Rejection::InvalidAmount { min: 1, max: 2 }.into(),
                400,
                "INVALID_AMOUNT",
            ),
            (
                Rejection::CouponSoldOut(CouponId(1)).into(),
                409,
                "COUPON_SOLD_OUT",
            ),
            (Error::IdempotencyKeyReused, 422, "IDEMPOTENCY_KEY_REUSED"),
            (Error::Overloaded, 503, "OVERLOADED"),
            (Error::ShuttingDown, 503, "SHUTTING_DOWN"),
            (
                Error::Storage(StorageError::Poisoned),
                503,
                "STORAGE_UNAVAILABLE",
            ),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
        }
    }
}
