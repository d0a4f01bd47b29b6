//! Customer authentication (optional; off by default): who a request acts
//! as, from `Authorization: Bearer <JWT>`, and what it may act on.
//!
//! With `--auth-jwt-secret S` tokens are HS256 signed with `S`; with
//! `--auth-jwks FILE`, RS256 or ES256 signed by a key of that JWKS file
//! (picked by the token's `kid`, or every key of the token's algorithm).
//! A token needs a valid signature and `exp`; `exp` and `nbf` are checked
//! with [`Limits::TOKEN_LEEWAY_SECS`](crate::domain::limits::Limits::TOKEN_LEEWAY_SECS) of clock skew. `"role":"admin"` makes the caller
//! an admin; otherwise the caller is the user named by `sub`. The static
//! admin token (`--admin-token`) is accepted wherever a token is.
//!
//! [`layer`] runs before routing, so a refusal comes before any body is
//! read and before any change (an `Idempotency-Key` of a refused request is
//! never stored):
//! - the product reads (`GET /api/v1/products`, `/products/{id}`,
//!   `/products/top`) and `GET /api/v1/openapi.json` are open; so is
//!   everything outside `/api/v1` (health, readiness, metrics, docs);
//! - any other `/api/v1` route without a token, or with a bad one → 401
//!   `UNAUTHORIZED`;
//! - `/api/v1/users/{user_id}/...` of another user → 403 `FORBIDDEN`;
//! - `POST /api/v1/users` (creating a user) needs an admin → 403 otherwise:
//!   accounts come from whoever issues the tokens, not from sign-ups here.
//!
//! Handlers then check what only they know, with [`Caller`]: the body's
//! `user_id` (placing an order, issuing a coupon) and the user of an order
//! acted on by id (read, pay, cancel), read through the engine first; and
//! the admin routes ([`crate::http::extract::Admin`]): an admin by role or
//! the static token, 403 for a customer's token. This module is the only
//! one that sees `jsonwebtoken`.

use crate::domain::ids::UserId;
use crate::http::error::ApiError;
use crate::http::extract::constant_time_eq;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Who a request acts as, once its token is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The static admin token, or a token with `"role":"admin"`.
    Admin,
    /// A customer: the token's `sub`.
    User(String),
}

impl Principal {
    /// Whether it may act on `user`'s resources.
    pub fn may_act_on(&self, user: UserId) -> bool {
        match self {
            Principal::Admin => true,
            Principal::User(sub) => *sub == user.0.to_string(),
        }
    }
}

/// The claims read from a token (others are ignored).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string (a number is taken too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<serde_json::Value>,
    /// `"admin"` for an admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("the JWKS file {0} cannot be read: {1}")]
    Read(String, std::io::Error),
    #[error("the JWKS file is not a JWK set: {0}")]
    Parse(String),
    #[error("JWKS key {index}: {reason}")]
    Key { index: usize, reason: String },
    #[error("the JWKS file holds no key")]
    Empty,
    #[error("the JWT secret is empty")]
    EmptySecret,
}

struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Checks tokens: the keys, and how claims are validated.
pub struct Verifier {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<_> = self
            .keys
            .iter()
            .map(|k| (k.kid.clone(), k.algorithm))
            .collect();
        f.debug_struct("Verifier").field("keys", &algs).finish()
    }
}

impl Verifier {
    /// HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> Result<Verifier, AuthSetupError> {
        if secret.is_empty() {
            return Err(AuthSetupError::EmptySecret);
        }
        let key = DecodingKey::from_secret(secret).map_err(|e| AuthSetupError::Key {
            index: 0,
            reason: e.to_string(),
        })?;
        Ok(Verifier {
            keys: vec![Key {
                kid: None,
                algorithm: Algorithm::HS256,
                key,
            }],
        })
    }

    /// RS256 and ES256 (P-256) public keys of a JWKS document.
    pub fn from_jwks(json: &str) -> Result<Verifier, AuthSetupError> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| AuthSetupError::Parse(e.to_string()))?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for (index, jwk) in set.keys.iter().enumerate() {
            let bad = |reason: String| AuthSetupError::Key { index, reason };
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => {
                    return Err(bad(
                        "only RSA (RS256) and P-256 (ES256) keys are taken".into()
                    ))
                }
            };
            if let Some(alg) = jwk.common.key_algorithm {
                let named = format!("{alg:?}");
                if named != format!("{algorithm:?}") {
                    return Err(bad(format!("\"alg\" {named} does not fit its key")));
                }
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err(AuthSetupError::Empty);
        }
        Ok(Verifier { keys })
    }

    /// Reads a JWKS file.
    pub fn from_jwks_file(path: &std::path::Path) -> Result<Verifier, AuthSetupError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthSetupError::Read(path.display().to_string(), e))?;
        Verifier::from_jwks(&text)
    }

    /// Who `token` says the caller is; `Err` with why not (a 401).
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let candidates = self.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(kid)) => want == kid,
                    _ => true,
                }
        });
        let mut last = format!("no key for a token signed with {:?}", header.alg);
        for key in candidates {
            let mut validation = Validation::new(key.algorithm);
            validation.leeway = crate::domain::limits::Limits::TOKEN_LEEWAY_SECS;
            validation.validate_nbf = true;
            validation.validate_aud = false;
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return principal_of(data.claims),
                Err(e) => last = format!("invalid token: {e}"),
            }
        }
        Err(last)
    }
}

fn principal_of(claims: Claims) -> Result<Principal, String> {
    if claims.role.as_deref() == Some("admin") {
        return Ok(Principal::Admin);
    }
    match claims.sub {
        Some(serde_json::Value::String(s)) => Ok(Principal::User(s)),
        Some(serde_json::Value::Number(n)) => Ok(Principal::User(n.to_string())),
        _ => Err("the token names no user (sub) and is not an admin's".into()),
    }
}

/// Signs an HS256 token: `sub` the user (or none), `"role":"admin"` if
/// `admin`, valid for `ttl_secs` from now. For the bench, `simulate` and
/// tests, which act as users of a server that checks tokens.
pub fn mint_hs256(
    secret: &[u8],
    sub: Option<u64>,
    admin: bool,
    ttl_secs: u64,
) -> Result<String, String> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: sub.map(|id| serde_json::Value::String(id.to_string())),
        role: admin.then(|| "admin".to_owned()),
        exp: now.saturating_add(ttl_secs),
        nbf: None,
    };
    let key = EncodingKey::from_secret(secret).map_err(|e| e.to_string())?;
    sign(&Header::new(Algorithm::HS256), &claims, &key)
}

/// Signs `claims` with `key` as `header` says (tests sign RS256/ES256 with it).
pub fn sign(header: &Header, claims: &Claims, key: &EncodingKey) -> Result<String, String> {
    jsonwebtoken::encode(header, claims, key).map_err(|e| e.to_string())
}

/// What the auth layer needs: the verifier and the static admin token.
#[derive(Clone)]
pub struct AuthState {
    pub verifier: Arc<Verifier>,
    pub admin_token: Arc<str>,
}

/// The bearer token of a request, if any.
pub fn bearer(parts_headers: &axum::http::HeaderMap) -> Option<&str> {
    parts_headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// Whether `method path` is open without a token.
fn is_open(method: &Method, path: &str) -> bool {
    if !path.starts_with("/api/v1/") {
        return true;
    }
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    path == "/api/v1/openapi.json"
        || path == "/api/v1/products"
        || path
            .strip_prefix("/api/v1/products/")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// The user a path acts on: `/api/v1/users/{user_id}/...`.
fn path_user(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/v1/users/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// The auth layer (see the module's docs): authenticates, checks the path's
/// user, and hands the [`Principal`] to the handlers.
pub async fn layer(State(auth): State<AuthState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    if is_open(req.method(), path) {
        return next.run(req).await;
    }
    let principal = match bearer(req.headers()) {
        None => {
            return ApiError::unauthorized_token(
                "this endpoint needs Authorization: Bearer <token>",
            )
            .into_response()
        }
        Some(token) if constant_time_eq(token.as_bytes(), auth.admin_token.as_bytes()) => {
            Principal::Admin
        }
        Some(token) => match auth.verifier.verify(token) {
            Ok(p) => p,
            Err(why) => return ApiError::unauthorized_token(why).into_response(),
        },
    };
    if let Principal::User(_) = &principal {
        if let Some(user) = path_user(path) {
            // As the route reads it: a user id, compared as the handlers do.
            let allowed = user
                .parse::<u64>()
                .is_ok_and(|id| principal.may_act_on(UserId(id)));
            if !allowed {
                return ApiError::forbidden("the token's user is not the user of this path")
                    .into_response();
            }
        } else if req.method() == Method::POST && path.trim_end_matches('/') == "/api/v1/users" {
            return ApiError::forbidden("creating users needs an admin").into_response();
        }
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Who the request acts as: `None` when authentication is off (everyone
/// may act on everything but the admin routes).
pub struct Caller(pub Option<Principal>);

impl Caller {
    /// 403 `FORBIDDEN` unless the caller may act on `user`'s resources.
    pub fn check(&self, user: UserId, what: &str) -> Result<(), ApiError> {
        match &self.0 {
            Some(p) if !p.may_act_on(user) => Err(ApiError::forbidden(format!(
                "the token's user is not the user of {what}"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether a check is needed at all (auth on, and not an admin).
    pub fn is_customer(&self) -> bool {
        matches!(self.0, Some(Principal::User(_)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Caller(parts.extensions.get::<Principal>().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_product_reads_and_the_openapi_document_are_open() {
        // proves which routes need no token when authentication is on
        let open = [
            (Method::GET, "/api/v1/products"),
            (Method::GET, "/api/v1/products/7"),
            (Method::GET, "/api/v1/products/top"),
            (Method::GET, "/api/v1/openapi.json"),
            (Method::GET, "/health"),
            (Method::GET, "/docs/"),
        ];
        for (m, p) in open {
            assert!(is_open(&m, p), "{m} {p}");
        }
        let closed = [
            (Method::POST, "/api/v1/products"),
            (Method::POST, "/api/v1/products/7/restock"),
            (Method::GET, "/api/v1/products/7/x"),
            (Method::GET, "/api/v1/users/1"),
            (Method::GET, "/api/v1/coupons/1"),
            (Method::GET, "/api/v1/orders/1"),
            (Method::POST, "/api/v1/users"),
        ];
        for (m, p) in closed {
            assert!(!is_open(&m, p), "{m} {p}");
        }
        assert_eq!(path_user("/api/v1/users/12/cart/items/3"), Some("12"));
        assert_eq!(path_user("/api/v1/users/12"), Some("12"));
        assert_eq!(path_user("/api/v1/users"), None);
        assert_eq!(path_user("/api/v1/orders/1"), None);
    }

    #[test]
    fn an_hs256_token_names_its_user_or_an_admin_and_a_forged_one_is_refused() {
        // proves sub and role are read, and a token signed with another secret is refused
        let v = Verifier::hs256(b"s3cret").unwrap();
        assert_eq!(
            v.verify(&mint_hs256(b"s3cret", Some(5), false, 60).unwrap()),
            Ok(Principal::User("5".into()))
        );
        assert_eq!(
            v.verify(&mint_hs256(b"s3cret", None, true, 60).unwrap()),
            Ok(Principal::Admin)
        );
        assert!(v
            .verify(&mint_hs256(b"other", Some(5), false, 60).unwrap())
            .is_err());
        assert!(
            v.verify(&mint_hs256(b"s3cret", None, false, 60).unwrap())
                .is_err(),
            "no sub, no role"
        );
        assert!(v.verify("not.a.token").is_err());
        assert!(Verifier::hs256(b"").is_err());
        assert!(Principal::User("5".into()).may_act_on(UserId(5)));
        assert!(!Principal::User("5".into()).may_act_on(UserId(6)));
        assert!(Principal::Admin.may_act_on(UserId(6)));
    }
}
