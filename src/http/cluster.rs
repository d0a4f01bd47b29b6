//! `serve --cluster`: a node of a cluster that shares one journal
//! replicated by NATS JetStream (API.md "Cluster", `docs/cluster.md`).
//!
//! The node recovers its local store, joins the cluster and follows the
//! journal stream as a standby ([`ClusterNode`]); meanwhile its address
//! answers `/api/v1` with 503 `NOT_LEADER` and `X-Leader`, `/ready` with
//! 503 `standby`, and serves `/health` and `/metrics`. Once the lease makes
//! it leader and it has read the stream to its end and opened its term, it
//! starts the engine from the world it followed, with a journal writer
//! that publishes every batch to the stream before its local write, and
//! serves the API as `serve` does ([`gate`] in front).
//!
//! A leader that stops leading (its append refused, its lease ended)
//! answers the requests under way `NOT_LEADER` or `OUTCOME_UNKNOWN`, new
//! ones `NOT_LEADER`, stops accepting, and then starts its own program
//! again in the same process (`exec`, same pid and arguments): it comes
//! back with nothing in memory but what its disk and the stream hold, a
//! standby that catches up and follows the new leader.

use crate::cluster::{ClusterName, LeaseConfig};
use crate::engine::cluster_node::{
    describe_metrics, ClusterNode, ClusterSettings, ClusterStatus, Leading,
};
use crate::engine::{Engine, EngineConfig, Readiness, SystemClock};
use crate::http::demo;
use crate::http::error::ApiError;
use crate::http::layers::CorsOrigins;
use crate::http::serve::{engine_config, shutdown_signal, ServeArgs};
use crate::http::server::{serve_on_engine_threads, HttpSettings};
use crate::store::recovery::recover_for_serving_under;
use crate::store::SledStore;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The header naming the leader's advertise URL on a `NOT_LEADER` answer.
pub const X_LEADER: &str = "x-leader";

/// How a clustered `serve` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ClusterExit {
    /// On a signal: the engine shut down, the lease given up.
    Stopped,
    /// Leadership ended: start again as a standby.
    Rejoin,
}

/// The cluster flags, checked; `None` without `--cluster`. Called before
/// anything is written.
pub fn settings(
    args: &ServeArgs,
    addr: SocketAddr,
) -> Result<Option<ClusterSettings>, crate::CliError> {
    if args.cluster.is_empty() {
        if args.node_id.is_some() || args.advertise_url.is_some() {
            return Err("--node-id and --advertise-url need --cluster".into());
        }
        return Ok(None);
    }
    for url in &args.cluster {
        let rest = url
            .strip_prefix("nats://")
            .or_else(|| url.strip_prefix("tls://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
            return Err(format!(
                "--cluster {url:?} is not a NATS server: give nats://HOST:PORT[,nats://...]"
            )
            .into());
        }
    }
    let Some(node_id) = args.node_id.clone() else {
        return Err("--cluster needs --node-id NAME, unique in the cluster".into());
    };
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !valid_name(&node_id) {
        return Err(
            format!("--node-id {node_id:?}: use 1 to 64 of A-Z, a-z, 0-9, '_' and '-'").into(),
        );
    }
    let name = ClusterName::new(&args.cluster_name).map_err(|e| format!("--cluster-name: {e}"))?;
    let advertise_url = args
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let scheme_ok = ["http://", "https://"]
        .iter()
        .any(|s| advertise_url.strip_prefix(s).is_some_and(|r| !r.is_empty()));
    if !scheme_ok
        || advertise_url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "--advertise-url {advertise_url:?}: give http://HOST:PORT, where clients reach this node"
        )
        .into());
    }
    Ok(Some(ClusterSettings {
        urls: args.cluster.clone(),
        name,
        node_id,
        advertise_url,
        lease: LeaseConfig::default(),
        trim_every: Duration::from_secs(args.cluster_trim_secs),
    }))
}

/// What a node that does not lead answers on `path`; `None` for what it
/// serves anyway (`/health`, `/metrics`, the API's documents).
pub fn standby_answer(status: &ClusterStatus, path: &str) -> Option<Response> {
    if path == "/ready" {
        let readiness = Readiness::Standby {
            leader: status.leader_url(),
        };
        let body = serde_json::json!({
            "status": readiness.status(),
            "detail": readiness.detail(),
        });
        return Some((StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response());
    }
    if path.starts_with("/api/v1/") && path != "/api/v1/openapi.json" {
        let leader = status.leader_url();
        let message = match &leader {
            Some(url) => format!("this node is a standby: send requests to the leader, {url}"),
            None => {
                "this node is a standby and the leader is not known yet: retry shortly".to_owned()
            }
        };
        let mut response =
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_LEADER", message).into_response();
        if let Some(value) = leader.and_then(|url| HeaderValue::from_str(&url).ok()) {
            response.headers_mut().insert(X_LEADER, value);
        }
        return Some(response);
    }
    None
}

/// In front of the leader's routes: once this node stops leading, what a
/// standby answers. One atomic load per request while it leads.
pub async fn gate(
    State(status): State<Arc<ClusterStatus>>,
    request: Request,
    next: Next,
) -> Response {
    if status.is_leading() {
        return next.run(request).await;
    }
    match standby_answer(&status, request.uri().path()) {
        Some(answer) => answer,
        None => next.run(request).await,
    }
}

/// What a standby serves: `/health`, `/metrics`, and [`standby_answer`].
pub fn standby_router(status: Arc<ClusterStatus>) -> Router {
    let handle = crate::http::metrics::install();
    let metrics_status = status.clone();
    Router::new()
        .route(
            "/health",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let status = metrics_status.clone();
                let handle = handle.clone();
                async move {
                    status.publish_metrics();
                    let page = handle.map(|h| h.render()).unwrap_or_default();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        page,
                    )
                }
            }),
        )
        .fallback(move |request: Request| {
            let status = status.clone();
            async move {
                standby_answer(&status, request.uri().path())
                    .unwrap_or_else(|| ApiError::not_found().into_response())
            }
        })
}

/// Runs a cluster node on `listener` and `store` until a signal
/// ([`ClusterExit::Stopped`]) or until it stops leading
/// ([`ClusterExit::Rejoin`]: the caller starts the program again).
pub fn run(
    args: &ServeArgs,
    settings: ClusterSettings,
    listener: std::net::TcpListener,
    store: SledStore,
    admin_token: String,
    cors: Option<CorsOrigins>,
) -> Result<ClusterExit, crate::CliError> {
    let mut config = engine_config(args);
    // The cluster's connection, lease and journal I/O; the journal writer
    // and the follower wait on it from their own threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cluster")
        .enable_all()
        .build()?;
    let node = join(args, &settings, store, &mut config, &runtime)?;
    let (status, lease) = (node.status(), node.lease());
    let Some(leading) = standby_until_leader(node, &listener, &settings, &runtime)? else {
        tracing::info!("stopped as a standby");
        runtime.shutdown_timeout(Duration::from_secs(1));
        return Ok(ClusterExit::Stopped);
    };

    // The leader.
    let term = leading.term;
    let (engine, seed) = start_engine_as_leader(args, config, leading)?;
    let http = HttpSettings {
        request_timeout_ms: args.request_timeout_secs.saturating_mul(1_000),
        cors,
        // A node that stopped leading answers what is under way, then
        // starts again: not long.
        shutdown_grace_ms: 2_000,
        cluster: Some(status.clone()),
        auth: crate::http::serve::auth_verifier(args)?,
        ..HttpSettings::new(admin_token)
    };
    tracing::info!(term, "serving as the leader");
    let (served, signalled) = runtime.block_on(serve_as_leader(
        engine.clone(),
        listener,
        http,
        status,
        seed,
    ));
    if !signalled {
        // Stopped leading: whatever is in memory may hold a batch the
        // stream never took; the program starts again from its disk.
        // The runtime is left running until the program is replaced: the
        // journal writer may still be settling an append on it, and a
        // runtime shut down under it would panic its thread.
        std::mem::forget(runtime);
        return Ok(ClusterExit::Rejoin);
    }
    // A signal: the last batches and snapshot as the leader, then the
    // lease goes to a standby at once instead of after its TTL.
    engine.shutdown();
    lease.publish_refused();
    runtime.block_on(tokio::time::sleep(Duration::from_millis(300)));
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
    tracing::info!("stopped as the leader");
    Ok(ClusterExit::Stopped)
}

/// Follows the stream on a thread of its own while answering as a standby
/// on `listener`, until this node leads (`Some`, what it starts from) or
/// a signal (`None`).
fn standby_until_leader(
    node: ClusterNode,
    listener: &std::net::TcpListener,
    settings: &ClusterSettings,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<Leading>, crate::CliError> {
    let status = node.status();
    let (lead_tx, lead_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cluster-follower".into())
        .spawn(move || {
            let _ = lead_tx.send(node.follow_until_leader());
        })?;
    match runtime.block_on(serve_as_standby(listener, settings, &status, lead_rx))? {
        None => Ok(None),
        Some(Err(_)) => Err("the cluster follower stopped without an answer".into()),
        Some(Ok(Err(e))) => Err(format!("following the cluster failed: {e}").into()),
        Some(Ok(Ok(leading))) => Ok(Some(leading)),
    }
}

/// The engine of a node that leads, started from what it followed, and
/// whether it seeds the demo catalogue (a new store without `--empty`).
fn start_engine_as_leader(
    args: &ServeArgs,
    config: EngineConfig,
    leading: Leading,
) -> Result<(Engine, bool), crate::CliError> {
    let engine = Engine::start_replicated(
        config,
        leading.store,
        Arc::new(SystemClock),
        leading.world,
        Box::new(leading.replica),
    )
    .map_err(|e| format!("cannot start the engine as the leader: {e}"))?;
    let seed = !args.empty && demo::is_new(&engine);
    engine.set_starting(seed);
    Ok((engine, seed))
}

/// Serves as the leader until a signal (`true`) or until it stops
/// leading (`false`), seeding the demo catalogue meanwhile if `seed`.
async fn serve_as_leader(
    engine: Engine,
    listener: std::net::TcpListener,
    http: HttpSettings,
    status: Arc<ClusterStatus>,
    seed: bool,
) -> (std::io::Result<()>, bool) {
    let signalled = Arc::new(AtomicBool::new(false));
    let (stopping, flag) = (engine.clone(), signalled.clone());
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => {
                flag.store(true, Ordering::Release);
                stopping.begin_stopping();
            }
            () = status.stepped_down() => {}
        }
    };
    let serving = serve_on_engine_threads(engine.clone(), listener, http, stop);
    let seeding = async {
        if seed {
            match demo::seed(&engine).await {
                Ok(_) => engine.set_starting(false),
                Err(e) => tracing::error!(error = %e, "the demo catalogue could not be seeded"),
            }
        }
    };
    let (served, ()) = tokio::join!(serving, seeding);
    (served, signalled.load(Ordering::Acquire))
}

/// Recovers the local store and joins the cluster as a node (a standby
/// until the lease makes it leader); fits the journal's batches to the
/// stream's messages.
fn join(
    args: &ServeArgs,
    settings: &ClusterSettings,
    store: SledStore,
    config: &mut EngineConfig,
    runtime: &tokio::runtime::Runtime,
) -> Result<ClusterNode, crate::CliError> {
    let (world, report) = recover_for_serving_under(&store, &config.limits).map_err(|e| {
        format!(
            "cannot recover the data dir {}: {e}",
            args.data_dir.display()
        )
    })?;
    tracing::info!(
        snapshot_seq = report.snapshot_seq,
        records_replayed = report.records_replayed,
        last_seq = report.last_seq,
        "local store recovered"
    );
    describe_metrics();
    let node = ClusterNode::join(
        runtime.handle().clone(),
        settings,
        args.data_dir.clone(),
        world,
        Box::new(store),
        config.journal.clone(),
    )
    .map_err(|e| format!("cannot join the cluster: {e}"))?;
    // A batch is one stream message: keep it well inside one (a batch may
    // pass its limit by one record).
    config.journal.batch_bytes_max = config
        .journal
        .batch_bytes_max
        .min(node.max_batch_bytes() / 2);
    Ok(node)
}

/// Answers as a standby on `listener` until the follower hands over
/// (`Some`, what it handed) or a signal (`None`).
async fn serve_as_standby<T>(
    listener: &std::net::TcpListener,
    settings: &ClusterSettings,
    status: &Arc<ClusterStatus>,
    handed: tokio::sync::oneshot::Receiver<T>,
) -> std::io::Result<Option<Result<T, tokio::sync::oneshot::error::RecvError>>> {
    let standby_listener = listener.try_clone()?;
    standby_listener.set_nonblocking(true)?;
    let local = standby_listener.local_addr()?;
    let standby_listener = tokio::net::TcpListener::from_std(standby_listener)?;
    tracing::info!(addr = %local, node = %settings.node_id, "listening as a standby");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(standby_listener, standby_router(status.clone()))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    let handed = tokio::select! {
        handed = handed => Some(handed),
        () = shutdown_signal() => None,
    };
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(handed)
}

/// Starts this program again in this process, with its arguments and
/// environment; returns only if that failed.
pub fn rejoin() -> crate::CliError {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return format!("cannot find this program to start it again: {e}").into(),
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    format!("cannot start this program again: {error}").into()
}
