//! The edge every route sits behind: one hand-written layer, so a request
//! pays for two boxed futures (its own, and the handler's, boxed so that
//! past the timeout it can move to a task of its own) and one clone of the
//! route, not for a stack of general-purpose middleware each cloning and
//! boxing its own. Such a stack costs about 13 µs of server CPU per
//! request, a quarter of what the server spends on it (docs/performance.md,
//! "One hand-written edge layer for HTTP"). What it does, outermost first:
//!
//! 1. the request id and the access line: the request is handled in the
//!    scope of its id (the `X-Request-Id` that [`crate::http::layers`]
//!    set), a tokio task-local, so every line logged while it is handled
//!    carries the id ([`crate::http::log_lines`]), and it gets one access
//!    line when it is answered: method, route template, status, latency (at
//!    info, for every status: a 5xx is counted in `/metrics` for alerts).
//!    The line costs about 0.8 µs of the server's 55–75 µs per request
//!    (`benches/logs.rs`); a tracing span per request holding the id had
//!    cost about 28% of HTTP mixed: every poll entered and left the span,
//!    and its fields were formatted into an allocation per request
//!    (docs/performance.md, "Request ids in a task-local, not a span");
//! 2. JSON errors: any error answer without a JSON body (axum's 405, a
//!    timeout) gets the `{"code","message"}` of its status;
//! 3. request metrics per method, route template and status
//!    ([`RequestMetrics`]);
//! 4. catch-panic: a panicking handler answers 500 `INTERNAL`, never a
//!    dropped connection;
//! 5. admission: at most `requests_in_flight_max` requests past this point;
//!    one more is shed at once with 503 `OVERLOADED` + `Retry-After`, so
//!    waiting work never piles up in memory. Nothing has started then, so
//!    the client may simply retry;
//! 6. the request timeout: a request admitted and not answered in time is
//!    answered 504 `OUTCOME_UNKNOWN`, never 503: its change may already be
//!    under way and may still commit, so only a retry with the same
//!    `Idempotency-Key` can say what happened. The handler's future is not
//!    dropped: it moves to a task of its own that keeps the admission
//!    permit until the work really ends, so in-flight work stays bounded by
//!    `requests_in_flight_max` even when clients give up;
//! 7. the body limit: a declared length over it is refused with 413 before
//!    anything is read, and a streamed body is cut at it (`DefaultBodyLimit`).

use crate::http::error::ApiError;
use crate::http::log_lines;
use crate::http::metrics::{method_label, RequestMetrics};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

/// The request id header, set (or kept from the caller) before the edge.
const REQUEST_ID: &str = "x-request-id";

/// The edge's settings and state, shared by every route.
#[derive(Clone)]
pub struct Edge {
    shared: Arc<Shared>,
}

struct Shared {
    admission: Arc<Semaphore>,
    timeout: Duration,
    body_bytes_max: usize,
    metrics: RequestMetrics,
}

impl Edge {
    pub fn new(requests_in_flight_max: usize, timeout: Duration, body_bytes_max: usize) -> Edge {
        Edge {
            shared: Arc::new(Shared {
                admission: Arc::new(Semaphore::new(requests_in_flight_max.max(1))),
                timeout,
                body_bytes_max,
                metrics: RequestMetrics::default(),
            }),
        }
    }
}

impl<S> Layer<S> for Edge {
    type Service = EdgeService<<DefaultBodyLimit as Layer<S>>::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeService {
            inner: DefaultBodyLimit::max(self.shared.body_bytes_max).layer(inner),
            shared: self.shared.clone(),
        }
    }
}

/// One route behind the [`Edge`].
#[derive(Clone)]
pub struct EdgeService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for EdgeService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the inner service's, awaited per request in `handle`
        // (routes are always ready); admission is decided there too, so a
        // full server sheds at once instead of making hyper wait.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Box::pin(handle(self.shared.clone(), self.inner.clone(), req))
    }
}

async fn handle<S>(shared: Arc<Shared>, inner: S, req: Request) -> Result<Response, Infallible>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().cloned();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("-"));
    let handled = async move {
        let answered = AssertUnwindSafe(answer(&shared, inner, req))
            .catch_unwind()
            .await;
        let response = json_errors(answered.unwrap_or_else(panic_response));
        let status = response.status();
        let elapsed = started.elapsed();
        let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        shared
            .metrics
            .record(method, route, status.as_u16(), elapsed.as_secs_f64());
        log_access(method, route, status.as_u16(), elapsed);
        Ok(response)
    };
    log_lines::in_request(request_id, handled).await
}

/// The access line of a request answered after `elapsed` (at info; `benches/logs.rs` measures it).
pub fn log_access(method: &str, route: &str, status: u16, elapsed: Duration) {
    let latency_ms = elapsed.as_micros() as f64 / 1000.0;
    tracing::info!(method, route, status, latency_ms, "request");
}

/// Admission, the declared body length and the timeout, around the route.
async fn answer<S>(shared: &Shared, inner: S, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let Ok(permit) = shared.admission.clone().try_acquire_owned() else {
        metrics::counter!("http_overloaded_total").increment(1);
        return ApiError::overloaded().into_response();
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.body_bytes_max as u64) {
        return ApiError::payload_too_large(shared.body_bytes_max).into_response();
    }
    // Boxed so that, past the timeout, it can move to a task of its own.
    let mut work = Box::pin(inner.oneshot(req));
    match tokio::time::timeout(shared.timeout, &mut work).await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_elapsed) => {
            metrics::counter!("http_outcome_unknown_total").increment(1);
            tracing::warn!(
                timeout_ms = shared.timeout.as_millis() as u64,
                "request timed out; its work goes on and keeps its admission slot"
            );
            let finish = async move {
                let _permit = permit;
                if let Err(panic) = AssertUnwindSafe(work).catch_unwind().await {
                    drop(panic_response(panic));
                }
            };
            tokio::spawn(log_lines::in_current_request(finish));
            ApiError::outcome_unknown().into_response()
        }
    }
}

/// Gives every error answer without a JSON body the `{"code","message"}` of its status.
fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let mut fresh = ApiError::for_status(status).into_response();
    *fresh.status_mut() = status;
    if let Some(allow) = parts.headers.remove(header::ALLOW) {
        fresh.headers_mut().insert(header::ALLOW, allow);
    }
    fresh
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    tracing::error!(panic = what, "a request handler panicked");
    ApiError::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use axum::Router;

    async fn answer_of(
        app: Router,
        req: axum::http::Request<Body>,
    ) -> (StatusCode, serde_json::Value) {
        let resp = app.oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), 1 << 16).await.expect("body");
        (status, serde_json::from_slice(&bytes).expect("a JSON body"))
    }

    fn get_req(uri: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(uri)
            .body(Body::empty())
            .expect("request")
    }

    async fn boom() -> &'static str {
        panic!("boom")
    }

    fn app(in_flight: usize, timeout_ms: u64) -> Router {
        Router::new()
            .route("/boom", get(boom))
            .route("/only-post", post(|| async { "ok" }))
            .route(
                "/bare-503",
                get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            )
            .route(
                "/echo",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
            .layer(Edge::new(in_flight, Duration::from_millis(timeout_ms), 16))
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_internal_as_json() {
        // proves the catch-panic step turns a panic into {"code":"INTERNAL"} instead of a dropped connection
        let (status, body) = answer_of(app(8, 10_000), get_req("/boom")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["code"], "INTERNAL");
    }

    #[tokio::test]
    async fn error_answers_without_a_body_get_the_code_of_their_status() {
        // proves the JSON-errors step: a bare 405 or 503 becomes {"code","message"}, Allow kept
        let resp = app(8, 10_000)
            .oneshot(get_req("/only-post"))
            .await
            .expect("infallible");
        assert_eq!(resp.headers()[header::ALLOW], "POST");
        let (status, body) = answer_of(app(8, 10_000), get_req("/only-post")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("METHOD_NOT_ALLOWED"))
        );
        let (status, body) = answer_of(app(8, 10_000), get_req("/bare-503")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("OVERLOADED"))
        );
    }

    #[tokio::test]
    async fn a_request_past_its_time_answers_504_outcome_unknown() {
        // proves the timeout step: a handler that would take a minute is answered 504 OUTCOME_UNKNOWN, never 503
        let (status, body) = answer_of(app(8, 50), get_req("/slow")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::GATEWAY_TIMEOUT, Some("OUTCOME_UNKNOWN"))
        );
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("Idempotency-Key")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_timed_out_request_keeps_its_slot_until_its_work_ends_and_the_work_completes() {
        // proves the permit moves with the abandoned work: the slot stays taken (503 for the next) until the handler finishes, and it does finish
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let release = Arc::new(std::sync::Mutex::new(Some(release_rx)));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(std::sync::Mutex::new(Some(done_tx)));
        let app = Router::new()
            .route(
                "/work",
                get(move || async move {
                    let rx = release.lock().expect("lock").take();
                    if let Some(rx) = rx {
                        let _ = rx.await;
                    }
                    if let Some(tx) = done.lock().expect("lock").take() {
                        let _ = tx.send(());
                    }
                    "done"
                }),
            )
            .route("/ok", get(|| async { "ok" }))
            .layer(Edge::new(1, Duration::from_millis(50), 16));
        let (status, body) = answer_of(app.clone(), get_req("/work")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::GATEWAY_TIMEOUT, Some("OUTCOME_UNKNOWN"))
        );
        let (status, body) = answer_of(app.clone(), get_req("/ok")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("OVERLOADED")),
            "the abandoned work still holds the only slot"
        );
        release_tx.send(()).expect("the handler is still waiting");
        done_rx
            .await
            .expect("the abandoned handler runs to its end");
        // On this current-thread runtime the spawned task dropped its permit
        // in the same poll in which the handler finished.
        let resp = app.oneshot(get_req("/ok")).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK, "the slot came back");
    }

    #[tokio::test]
    async fn a_request_past_the_in_flight_limit_is_shed_and_the_slot_comes_back() {
        // proves admission: with the one slot taken, the next request is refused at once with Retry-After, then admitted
        let entered = Arc::new(tokio::sync::Notify::new());
        let signal = entered.clone();
        let app = Router::new()
            .route(
                "/hold",
                get(move || async move {
                    signal.notify_one();
                    std::future::pending::<()>().await;
                }),
            )
            .route("/ok", get(|| async { "ok" }))
            .layer(Edge::new(1, Duration::from_secs(60), 16));
        let holder = tokio::spawn(app.clone().oneshot(get_req("/hold")));
        entered.notified().await;
        let (status, body) = answer_of(app.clone(), get_req("/ok")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("OVERLOADED"))
        );
        let shed = app
            .clone()
            .oneshot(get_req("/ok"))
            .await
            .expect("infallible");
        assert!(shed.headers().contains_key(header::RETRY_AFTER));
        holder.abort();
        let _ = holder.await;
        let resp = app.oneshot(get_req("/ok")).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK, "the slot was given back");
    }

    #[tokio::test]
    async fn every_line_logged_while_a_request_is_handled_carries_its_id_and_it_gets_one_access_line(
    ) {
        // proves the request id reaches a handler's error (the panic), the timeout's warning and the access line, once each, and no other request's lines
        use crate::http::log_lines::{testing::capture, Lines};
        // tracing caches each callsite's interest process-wide, and other
        // tests of this binary set and drop thread-local subscribers at the
        // same time: a rebuild of that cache can let one event of this
        // thread pass unseen. A few attempts keep the test about the edge;
        // a wrong line or id fails every one of them.
        let mut failure = String::new();
        for _ in 0..3 {
            let (out, default) = capture(Lines::text());
            let with_id = |uri: &str, id: &'static str| {
                axum::http::Request::get(uri)
                    .header(REQUEST_ID, id)
                    .body(Body::empty())
                    .expect("request")
            };
            let (status, _) = answer_of(app(8, 50), with_id("/boom", "req-boom")).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            let (status, _) = answer_of(app(8, 50), with_id("/slow", "req-slow")).await;
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
            let (status, _) = answer_of(app(8, 50), get_req("/bare-503")).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            drop(default);
            match check_request_lines(&out.text()) {
                Ok(()) => return,
                Err(e) => failure = e,
            }
        }
        panic!("{failure}");
    }

    /// The lines of the three requests of the test above, each with its id.
    fn check_request_lines(text: &str) -> Result<(), String> {
        let of = |id: &str| -> Vec<&str> {
            let tag = format!(" request{{id={id}}}: ");
            text.lines().filter(|l| l.contains(&tag)).collect()
        };
        let ok = |cond: bool, what: &str| {
            if cond {
                Ok(())
            } else {
                Err(format!("{what}: {text}"))
            }
        };
        let boom = of("req-boom");
        ok(boom.len() == 2, "two lines of /boom")?;
        ok(
            boom[0].contains("ERROR") && boom[0].contains("a request handler panicked"),
            "the panic",
        )?;
        ok(
            boom[1].contains("INFO") && boom[1].contains("route=\"/boom\" status=500"),
            "its access line",
        )?;
        let slow = of("req-slow");
        ok(slow.len() == 2, "two lines of /slow")?;
        ok(
            slow[0].contains("WARN") && slow[0].contains("request timed out"),
            "the timeout",
        )?;
        ok(
            slow[1].contains("route=\"/slow\" status=504 latency_ms="),
            "its access line",
        )?;
        let unnamed = of("-");
        ok(unnamed.len() == 1, "one line of /bare-503")?;
        ok(
            unnamed[0].contains("method=\"GET\" route=\"/bare-503\" status=503"),
            "its access line",
        )?;
        ok(text.lines().count() == 5, "no line outside a request")
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_with_413_declared_or_streamed() {
        // proves the body limit: a declared length over it and a body that turns out longer both get 413
        let declared = axum::http::Request::post("/echo")
            .header(header::CONTENT_LENGTH, "17")
            .body(Body::from(vec![b'x'; 17]))
            .expect("request");
        let (status, body) = answer_of(app(8, 10_000), declared).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE"))
        );
        let chunks = futures_util::stream::iter([
            Ok::<_, std::io::Error>(vec![b'x'; 10]),
            Ok(vec![b'x'; 10]),
        ]);
        let streamed = axum::http::Request::post("/echo")
            .body(Body::from_stream(chunks))
            .expect("request");
        let (status, body) = answer_of(app(8, 10_000), streamed).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE"))
        );
        let fits = axum::http::Request::post("/echo")
            .body(Body::from(vec![b'x'; 16]))
            .expect("request");
        let resp = app(8, 10_000).oneshot(fits).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
