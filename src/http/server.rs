//! The server: [`router`] puts the routes behind the edge layers, [`serve`]
//! runs it on a listener until a shutdown future completes.
//!
//! Every route sits behind the [`Edge`](crate::http::edge::Edge): tracing,
//! JSON errors, request metrics, catch-panic, admission control (503
//! `OVERLOADED` + `Retry-After` past `requests_in_flight_max`), a request
//! timeout and the body limit, in one layer.
//!
//! Connections are bounded too ([`BoundedListener`]): past
//! `connections_max`, new ones wait in the kernel's backlog, and a
//! connection idle for `connection_idle_ms` is closed.

use crate::engine::Engine;
use crate::http::edge::Edge;
use crate::http::error::ApiError;
use crate::http::routes;
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
    api.merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", openapi))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state)
        .layer(Edge::new(
            settings.requests_in_flight_max,
            Duration::from_millis(settings.request_timeout_ms),
            body_bytes_max,
        ))
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
