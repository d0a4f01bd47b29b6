//! The server: [`router`] puts the routes behind the edge layers, [`serve`]
//! runs it on a listener until a shutdown future completes.
//!
//! Edge layers, outermost first (each route gets them; the concurrency
//! semaphore is shared by all routes):
//! 1. catch-panic: a panic becomes 500 `INTERNAL`, never a dropped connection;
//! 2. trace: one span per request;
//! 3. JSON errors: any error answer some layer produced without a JSON body
//!    (axum's 405, a timeout) gets `{"code","message"}`;
//! 4. request metrics per route template and status;
//! 5. admission: at most `requests_in_flight_max` requests in the handlers;
//!    one more is shed at once with 503 `OVERLOADED` + `Retry-After`, so
//!    waiting work never piles up in memory;
//! 6. a request timeout (503 `OVERLOADED`) and the 64 KiB body limit.
//!
//! Connections are bounded too ([`BoundedListener`]): past
//! `connections_max`, new ones wait in the kernel's backlog, and a
//! connection idle for `connection_idle_ms` is closed.

use crate::engine::Engine;
use crate::http::error::ApiError;
use crate::http::routes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

/// How the HTTP layer is set up. Units are in the names.
#[derive(Clone)]
pub struct HttpSettings {
    /// The bearer token of the admin endpoints.
    pub admin_token: String,
    /// Requests in the handlers at once; more are answered 503 `OVERLOADED`.
    pub requests_in_flight_max: usize,
    /// Open connections at once; more wait in the kernel's accept backlog.
    pub connections_max: usize,
    /// A connection that neither reads nor writes for this long is closed.
    pub connection_idle_ms: u64,
    /// A request not answered within this is answered 503 `OVERLOADED`
    /// (its engine call still runs to its end).
    pub request_timeout_ms: u64,
    /// After the shutdown signal, how long in-flight requests may take
    /// before the remaining connections are dropped.
    pub shutdown_grace_ms: u64,
}

impl HttpSettings {
    pub fn new(admin_token: impl Into<String>) -> HttpSettings {
        HttpSettings {
            admin_token: admin_token.into(),
            requests_in_flight_max: 1024,
            connections_max: 8192,
            connection_idle_ms: 60_000,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 5_000,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub admin_token: Arc<str>,
    pub metrics: Option<PrometheusHandle>,
}

/// The OpenAPI document of the API, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::api().split_for_parts().1
}

/// The whole application: API routes, `/docs`, and the edge layers.
pub fn router(engine: Engine, settings: &HttpSettings) -> Router {
    let body_bytes_max = engine.limits().request_body_bytes_max;
    let state = AppState {
        engine,
        admin_token: Arc::from(settings.admin_token.as_str()),
        metrics: crate::http::metrics::install(),
    };
    let (api, openapi) = routes::api().split_for_parts();
    let admission = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(shed))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(
            settings.requests_in_flight_max.max(1),
        ));
    api.merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", openapi))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(middleware::from_fn(move |req, next| {
            refuse_large_bodies(req, next, body_bytes_max)
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(settings.request_timeout_ms),
        ))
        .layer(admission)
        .layer(middleware::from_fn(crate::http::metrics::track))
        .layer(middleware::map_response(json_errors))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(panic_response))
}

async fn shed(_: BoxError) -> ApiError {
    metrics::counter!("http_overloaded_total").increment(1);
    ApiError::overloaded()
}

/// 413 at once when the declared length is over the limit, before reading
/// anything (a streamed body is cut at the limit by `DefaultBodyLimit`).
async fn refuse_large_bodies(req: Request, next: Next, bytes_max: usize) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > bytes_max as u64 => ApiError::payload_too_large(bytes_max).into_response(),
        _ => next.run(req).await,
    }
}

/// Gives every error answer without a JSON body the `{"code","message"}` of its status.
async fn json_errors(response: Response) -> Response {
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

/// A TCP listener that holds at most `connections_max` connections open,
/// and closes a connection that neither reads nor writes for `idle_ms`
/// (hyper has no idle timeout of its own without a timer): idle keep-alive
/// clients cannot hold every slot forever.
pub struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl BoundedListener {
    pub fn new(inner: TcpListener, connections_max: usize, idle_ms: u64) -> BoundedListener {
        BoundedListener {
            inner,
            permits: Arc::new(Semaphore::new(connections_max.max(1))),
            idle: Duration::from_millis(idle_ms.max(1)),
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        // The semaphore is never closed, so acquiring only waits.
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => unreachable!("the connection semaphore is never closed"),
        };
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let _ = stream.set_nodelay(true);
        let idle = self.idle;
        (
            CountedStream {
                stream,
                idle,
                deadline: Box::pin(tokio::time::sleep(idle)),
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that gives its permit back when closed and times out when idle.
pub struct CountedStream {
    stream: TcpStream,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl CountedStream {
    fn active(&mut self) {
        let next = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                self.active();
                ready
            }
        }
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if written.is_ready() {
            self.active();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if written.is_ready() {
            self.active();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves the API on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish (idle keep-alive connections
/// are closed at once) and returns, at the latest `shutdown_grace_ms` after
/// the signal. The engine is left running: the caller shuts it down.
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = router(engine, &settings);
    let upkeep = crate::http::metrics::install().map(|handle| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    });
    let (signal_tx, signal_rx) = tokio::sync::watch::channel(false);
    let signal_task = tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An Err means the sender is gone: treat it as the signal.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = axum::serve(
        BoundedListener::new(
            listener,
            settings.connections_max,
            settings.connection_idle_ms,
        ),
        app,
    )
    .with_graceful_shutdown(stopped(signal_rx.clone()))
    .into_future();
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    let deadline = async {
        stopped(signal_rx).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!(grace_ms = settings.shutdown_grace_ms, "grace period over; dropping the connections still open");
            Ok(())
        }
    };
    signal_task.abort();
    if let Some(u) = upkeep {
        u.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::routing::get;
    use tower::ServiceExt;

    async fn answer(app: Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let req = axum::http::Request::get(uri)
            .body(Body::empty())
            .expect("request");
        let resp = app.oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), 1 << 16).await.expect("body");
        (status, serde_json::from_slice(&bytes).expect("a JSON body"))
    }

    async fn boom() -> &'static str {
        panic!("boom")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_internal_as_json() {
        // proves the catch-panic layer turns a panic into {"code":"INTERNAL"} instead of a dropped connection
        let app = Router::new()
            .route("/boom", get(boom))
            .layer(CatchPanicLayer::custom(panic_response));
        let (status, body) = answer(app, "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["code"], "INTERNAL");
    }

    #[tokio::test]
    async fn error_answers_without_a_body_get_the_code_of_their_status() {
        // proves the JSON-errors layer: a bare 405 or timeout 503 becomes {"code","message"}
        let app = Router::new()
            .route("/only-post", axum::routing::post(|| async { "ok" }))
            .route("/slow", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .layer(middleware::map_response(json_errors));
        let (status, body) = answer(app.clone(), "/only-post").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("METHOD_NOT_ALLOWED"))
        );
        let (status, body) = answer(app, "/slow").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("OVERLOADED"))
        );
    }
}
