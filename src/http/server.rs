//! The server: [`router`] puts the routes behind the edge layers, [`serve`]
//! runs it on a listener until a shutdown future completes.
//!
//! Every route sits behind the [`Edge`](crate::http::edge::Edge): tracing,
//! JSON errors, request metrics, catch-panic, admission control (503
//! `OVERLOADED` + `Retry-After` past `requests_in_flight_max`), a request
//! timeout and the body limit, in one layer.
//!
//! Connections are bounded too ([`BoundedListener`]): past
//! `connections_max`, new ones wait in the kernel's backlog, a connection
//! idle for `connection_idle_ms` is closed, and so is one that sends no
//! complete request head within `request_head_timeout_ms` (30 s).

use crate::engine::Engine;
use crate::http::dashboard::{self, Dashboard};
use crate::http::edge::Edge;
use crate::http::error::ApiError;
use crate::http::layers::{self, CorsOrigins};
use crate::http::routes;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
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
    /// A request admitted and not answered within this is answered 504
    /// `OUTCOME_UNKNOWN`; its work runs to its end, holding its admission slot.
    pub request_timeout_ms: u64,
    /// A connection that has not sent a complete request head within this
    /// is closed (hyper's header-read timeout). The wait for the next
    /// request on a keep-alive connection counts too, so an idle keep-alive
    /// connection is closed after this as well.
    pub request_head_timeout_ms: u64,
    /// The origins answered with CORS headers; `None`: no CORS headers at all.
    pub cors: Option<CorsOrigins>,
    /// After the shutdown signal, how long in-flight requests may take
    /// before the remaining connections are dropped.
    pub shutdown_grace_ms: u64,
    /// In a cluster: once this node stops leading, `/api/v1` answers 503
    /// `NOT_LEADER` and `/ready` 503 `standby` ([`crate::http::cluster::gate`]).
    pub cluster: Option<Arc<crate::engine::cluster_node::ClusterStatus>>,
    /// Customer authentication: `None` (the default) leaves it off; with a
    /// verifier, `/api/v1` needs tokens ([`crate::http::auth`]).
    pub auth: Option<Arc<crate::http::auth::Verifier>>,
}

impl HttpSettings {
    pub fn new(admin_token: impl Into<String>) -> HttpSettings {
        HttpSettings {
            admin_token: admin_token.into(),
            requests_in_flight_max: 1024,
            connections_max: 8192,
            connection_idle_ms: 60_000,
            request_timeout_ms: 30_000,
            request_head_timeout_ms: 30_000,
            cors: None,
            shutdown_grace_ms: 5_000,
            cluster: None,
            auth: None,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub admin_token: Arc<str>,
    pub metrics: Option<PrometheusHandle>,
    /// The operator's dashboard: throughput history and the last overview.
    pub dashboard: Arc<Dashboard>,
}

/// The OpenAPI document of the API, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::api().split_for_parts().1
}

/// The whole application: API routes, `/docs`, the dashboard, and the
/// edge layers. The dashboard's throughput history is sampled by
/// [`serve`] and [`serve_on_engine_threads`]; with this router alone it
/// stays empty.
pub fn router(engine: Engine, settings: &HttpSettings) -> Router {
    app(engine, settings, Arc::new(Dashboard::default()))
}

fn app(engine: Engine, settings: &HttpSettings, dashboard: Arc<Dashboard>) -> Router {
    let body_bytes_max = engine.limits().request_body_bytes_max;
    let counted = dashboard.clone();
    let state = AppState {
        engine,
        admin_token: Arc::from(settings.admin_token.as_str()),
        metrics: crate::http::metrics::install(),
        dashboard,
    };
    let auth = settings
        .auth
        .clone()
        .map(|verifier| crate::http::auth::AuthState {
            verifier,
            admin_token: state.admin_token.clone(),
        });
    let (api, openapi) = routes::api().split_for_parts();
    api.merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", openapi))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state)
        // One `layer` call: axum boxes the route once per call.
        .layer(
            tower::ServiceBuilder::new()
                // The dashboard's requests/s: one relaxed atomic add per request.
                .map_request(move |req: axum::extract::Request| {
                    counted.throughput.count_request();
                    req
                })
                .layer(layers::SetRequestIdLayer::x_request_id(
                    layers::NextRequestId,
                ))
                .layer(layers::PropagateRequestIdLayer::x_request_id())
                .option_layer(settings.cors.as_ref().map(layers::cors))
                .option_layer(settings.cluster.clone().map(|status| {
                    axum::middleware::from_fn_with_state(status, crate::http::cluster::gate)
                }))
                .layer(Edge::new(
                    settings.requests_in_flight_max,
                    Duration::from_millis(settings.request_timeout_ms),
                    body_bytes_max,
                ))
                // Inside the edge: a refusal is logged, counted and JSON.
                .option_layer(auth.map(|auth| {
                    axum::middleware::from_fn_with_state(auth, crate::http::auth::layer)
                })),
        )
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
        (CountedStream::new(stream, self.idle, permit), addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Connections accepted elsewhere and handed to this thread
/// ([`serve_on_engine_threads`]): each is registered with the reactor of the
/// thread that serves it.
struct HandedListener {
    connections: tokio::sync::mpsc::UnboundedReceiver<Handed>,
    idle: Duration,
    local: SocketAddr,
}

/// An accepted connection, its permit taken, on its way to a thread.
struct Handed {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
}

impl axum::serve::Listener for HandedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        loop {
            let Some(handed) = self.connections.recv().await else {
                // The acceptor has stopped: nothing more comes (the server
                // is being shut down gracefully meanwhile).
                return std::future::pending().await;
            };
            match TcpStream::from_std(handed.stream) {
                Ok(stream) => {
                    return (
                        CountedStream::new(stream, self.idle, handed.permit),
                        handed.peer,
                    )
                }
                Err(e) => tracing::warn!(error = %e, "a handed connection could not be registered"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
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
    fn new(stream: TcpStream, idle: Duration, permit: OwnedSemaphorePermit) -> CountedStream {
        let _ = stream.set_nodelay(true);
        CountedStream {
            stream,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _permit: permit,
        }
    }

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
    let dashboard = Arc::new(Dashboard::default());
    let app = app(engine.clone(), &settings, dashboard.clone());
    let upkeep = metrics_upkeep();
    let sampler = dashboard::spawn_sampler(engine, dashboard);
    let (signal_tx, signal_rx) = watch::channel(false);
    let signal_task = tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });
    let listener = BoundedListener::new(
        listener,
        settings.connections_max,
        settings.connection_idle_ms,
    );
    let result = serve_until(
        app,
        listener,
        signal_rx,
        Duration::from_millis(settings.shutdown_grace_ms),
        Duration::from_millis(settings.request_head_timeout_ms.max(1)),
    )
    .await;
    signal_task.abort();
    sampler.abort();
    if let Some(u) = upkeep {
        u.abort();
    }
    result
}

/// Like [`serve`], but the connections are served on the engine's own
/// threads ([`Engine::spawn_on_engine_threads`]): a request's messages to
/// actors on the thread that serves it, and their answers, then wake no
/// other thread, and the process runs no HTTP threads of its own. The
/// caller's runtime accepts connections (a permit first, so connections
/// past `connections_max` wait in the kernel's backlog) and hands them to
/// the threads in turn, so each serves as many; it also waits for
/// `shutdown` and keeps the metrics. The request limits are shared. The
/// engine must run its threads with [`EngineConfig::actor_threads_io`].
///
/// [`EngineConfig::actor_threads_io`]: crate::engine::EngineConfig::actor_threads_io
pub async fn serve_on_engine_threads(
    engine: Engine,
    listener: std::net::TcpListener,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    if !engine.engine_threads_have_io() {
        return Err(io::Error::other(
            "the engine's threads run no I/O driver: start it with `actor_threads_io`",
        ));
    }
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    let dashboard = Arc::new(Dashboard::default());
    let app = app(engine.clone(), &settings, dashboard.clone());
    let upkeep = metrics_upkeep();
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(settings.connections_max.max(1)));
    let (to_threads, done_rx) = serve_on_each_thread(&engine, app, local, &settings, stop_rx)?;
    let sampler = dashboard::spawn_sampler(engine.clone(), dashboard);
    let failed =
        accept_until_stopped(&listener, &permits, to_threads, done_rx, &stop_tx, shutdown).await;
    sampler.abort();
    if let Some(u) = upkeep {
        u.abort();
    }
    failed.map_or(Ok(()), Err)
}

/// Where the acceptor hands one engine thread its connections.
type ToThread = tokio::sync::mpsc::UnboundedSender<Handed>;
/// Where each engine thread's server says how it ended.
type ThreadsDone = tokio::sync::mpsc::UnboundedReceiver<io::Result<()>>;

/// Starts a server on each engine thread, serving the connections handed
/// to it until `stop` turns true. Returns a sender per thread, and where
/// each thread's server says how it ended.
fn serve_on_each_thread(
    engine: &Engine,
    app: Router,
    local: SocketAddr,
    settings: &HttpSettings,
    stop_rx: watch::Receiver<bool>,
) -> io::Result<(Vec<ToThread>, ThreadsDone)> {
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    let head = Duration::from_millis(settings.request_head_timeout_ms.max(1));
    let idle = Duration::from_millis(settings.connection_idle_ms.max(1));
    let threads = engine.engine_threads().max(1);
    let mut to_threads = Vec::with_capacity(threads);
    let mut from_acceptor = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Handed>();
        to_threads.push(tx);
        from_acceptor.push(Some(rx));
    }
    let from_acceptor = std::sync::Mutex::new(from_acceptor);
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel::<io::Result<()>>();
    engine
        .spawn_on_engine_threads(|i| {
            let connections = from_acceptor
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_mut(i)
                .and_then(Option::take);
            let (app, stop, done) = (app.clone(), stop_rx.clone(), done_tx.clone());
            async move {
                let result = match connections {
                    Some(connections) => {
                        let listener = HandedListener {
                            connections,
                            idle,
                            local,
                        };
                        serve_until(app, listener, stop, grace, head).await
                    }
                    None => Err(io::Error::other("no connections for this thread")),
                };
                let _ = done.send(result);
            }
        })
        .map_err(|_| io::Error::other("the engine is shutting down"))?;
    Ok((to_threads, done_rx))
}

/// Accepts connections and hands them to the threads in turn until
/// `shutdown`, or until a thread's server ends on its own (an error): then
/// all of them stop; each ends within the grace period. Returns the first
/// thread's error, if any.
async fn accept_until_stopped(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    mut to_threads: Vec<ToThread>,
    mut done_rx: ThreadsDone,
    stop_tx: &watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) -> Option<io::Error> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0;
    let mut failed = None;
    let mut stopping = false;
    loop {
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                stopping = true;
                let _ = stop_tx.send(true);
                to_threads.clear();
            }
            handed = accept_one(listener, permits), if !stopping => match handed {
                Ok(handed) => {
                    if let Some(thread) = to_threads.get(next % to_threads.len()) {
                        let _ = thread.send(handed);
                    }
                    next += 1;
                }
                // One failed accept (the peer gone, out of descriptors for a
                // moment) must not end the server.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            done = done_rx.recv() => match done {
                Some(result) => {
                    if let Err(e) = result {
                        tracing::error!(error = %e, "an HTTP server thread failed; stopping all of them");
                        failed.get_or_insert(e);
                    }
                    stopping = true;
                    let _ = stop_tx.send(true);
                    to_threads.clear();
                }
                // Every thread's server is done (or was dropped with the engine).
                None => break,
            }
        }
    }
    failed
}

/// Takes a connection permit, then accepts one connection.
async fn accept_one(listener: &TcpListener, permits: &Arc<Semaphore>) -> io::Result<Handed> {
    // The semaphore is never closed, so acquiring only waits.
    let Ok(permit) = permits.clone().acquire_owned().await else {
        return Err(io::Error::other("the connection semaphore is closed"));
    };
    let (stream, peer) = listener.accept().await?;
    Ok(Handed {
        stream: stream.into_std()?,
        peer,
        permit,
    })
}

/// Serves `app` on `listener` until `stop` turns true (or its sender is
/// gone), then stops accepting, lets in-flight requests finish (idle
/// keep-alive connections are closed at once) and returns, at the latest
/// `grace` after the signal.
///
/// Each connection is served by hyper's HTTP/1 builder with hyper-util's
/// tokio timer, so its header-read timeout works: a connection that sends
/// no complete request head within `head` is closed (`axum::serve` sets no
/// timer, and without one that timeout is off).
async fn serve_until<L>(
    app: Router,
    mut listener: L,
    stop: watch::Receiver<bool>,
    grace: Duration,
    head: Duration,
) -> io::Result<()>
where
    L: axum::serve::Listener<Io = CountedStream, Addr = SocketAddr>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut stopped = std::pin::pin!(stopped(stop));
    loop {
        tokio::select! {
            () = &mut stopped => break,
            (stream, _peer) = listener.accept() => {
                let service = TowerToHyperService::new(app.clone());
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    // A peer that goes away, or a head that came too late,
                    // ends its connection; the server goes on.
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; dropping the connections still open");
        }
    }
    Ok(())
}

/// Completes when `rx` turns true, or its sender is gone.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Prometheus histograms need upkeep; `None` if another recorder is installed.
fn metrics_upkeep() -> Option<tokio::task::JoinHandle<()>> {
    crate::http::metrics::install().map(|handle| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    })
}
