//! The tower-http layers around the [`Edge`](crate::http::edge::Edge), for
//! what tower-http already does well:
//!
//! - request ids: `SetRequestIdLayer` keeps the caller's `X-Request-Id` or
//!   sets one from [`NextRequestId`], before the edge, so the edge's
//!   `request` span (and so every log line of the request) carries it;
//!   `PropagateRequestIdLayer` copies it onto the response;
//! - CORS ([`cors`]): only with `--cors-origin`; it answers preflights
//!   itself and adds the CORS headers for the origins given, and no others.
//!
//! They are stacked with the edge into one `Router::layer` call, so a
//! request still costs one boxed route (see the edge's module doc).

use axum::http::{header, HeaderName, HeaderValue, Method, Request};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestId, RequestId};

pub use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

/// Request ids of this process: a random 32-bit prefix chosen once per
/// process and a counter, as hex (`3f9a12c0-1a`): unique within a run,
/// and unlikely to repeat across restarts.
#[derive(Clone, Copy, Debug, Default)]
pub struct NextRequestId;

static NEXT: AtomicU64 = AtomicU64::new(1);

fn process_prefix() -> u32 {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // std's hash keys are random per process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32
    })
}

impl NextRequestId {
    /// The next id, as text.
    pub fn next_id() -> String {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:x}", process_prefix())
    }
}

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        HeaderValue::try_from(NextRequestId::next_id())
            .ok()
            .map(RequestId::new)
    }
}

/// The origins `--cors-origin` allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin.
    Any,
    /// These origins exactly (`scheme://host[:port]`).
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// The origins of repeated `--cors-origin` flags; `None` when none was
    /// given. `*` among them allows any origin.
    pub fn parse(values: &[String]) -> Result<Option<CorsOrigins>, String> {
        if values.is_empty() {
            return Ok(None);
        }
        if values.iter().any(|v| v.trim() == "*") {
            return Ok(Some(CorsOrigins::Any));
        }
        let mut list = Vec::with_capacity(values.len());
        for v in values {
            list.push(origin(v.trim())?);
        }
        Ok(Some(CorsOrigins::List(list)))
    }
}

/// One origin as a browser sends it: `http(s)://host[:port]`, nothing after.
fn origin(v: &str) -> Result<HeaderValue, String> {
    let bad = || {
        format!(
            "--cors-origin {v:?} is not an origin: give scheme://host[:port], \
             e.g. https://shop.example, or *"
        )
    };
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let well_formed = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !well_formed {
        return Err(bad());
    }
    HeaderValue::from_str(v).map_err(|_| bad())
}

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for `origins`: the API's methods and request headers
/// allowed, the request id and `Retry-After` readable by the page.
pub fn cors(origins: &CorsOrigins) -> CorsLayer {
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
        .max_age(PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_checked_and_a_star_allows_any() {
        // proves the flag's parsing: none → no CORS, `*` wins, origins kept exactly, paths and other schemes refused
        assert_eq!(CorsOrigins::parse(&[]), Ok(None));
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            CorsOrigins::parse(&s(&["https://a.example", "*"])),
            Ok(Some(CorsOrigins::Any))
        );
        assert_eq!(
            CorsOrigins::parse(&s(&["https://a.example", "http://localhost:3000"])),
            Ok(Some(CorsOrigins::List(vec![
                HeaderValue::from_static("https://a.example"),
                HeaderValue::from_static("http://localhost:3000"),
            ])))
        );
        for bad in [
            "a.example",
            "ftp://a.example",
            "https://",
            "https://a.example/",
            "https://a.example/path",
            "https://a b",
        ] {
            let e = CorsOrigins::parse(&s(&[bad])).expect_err(bad);
            assert!(e.contains("--cors-origin"), "{e}");
        }
    }

    #[test]
    fn generated_request_ids_differ_and_share_the_process_prefix() {
        // proves generated ids are unique within the process and carry one prefix
        let a = NextRequestId::next_id();
        let b = NextRequestId::next_id();
        assert_ne!(a, b);
        assert_eq!(a.split('-').next(), b.split('-').next());
        assert_eq!(a.split('-').next().map(str::len), Some(8));
    }
}
