//! `commerce-engine serve` (also what a bare `commerce-engine` runs): checks
//! every flag and binds the address before anything is written, takes the
//! data dir's lock (`<data-dir>/LOCK`: a second server on the same dir
//! fails at once), opens the sled data dir, recovers the engine, serves the
//! API on the engine's own threads, and meanwhile seeds a new data dir with
//! the demo catalogue unless `--empty` (`/ready` answers `starting` until
//! that is done), until SIGINT or SIGTERM; then `/ready` answers
//! `stopping`, it stops accepting, finishes what is in flight, shuts the
//! engine down (last flush and snapshot) and exits 0.
//!
//! Without `--admin-token`, the token is kept in `<data-dir>/admin-token`
//! (made once, readable by its owner only, printed once when made), so it
//! survives restarts.

use crate::engine::{DataPlatform, Engine, EngineConfig, SystemClock};
use crate::http::demo;
use crate::http::layers::CorsOrigins;
use crate::http::log_lines::Lines;
use crate::http::logs::{BufferedStderr, FlushOnDrop};
use crate::http::server::{serve_on_engine_threads, HttpSettings};
use crate::store::SledStore;
use crate::store::Store;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where the HTTP API listens.
    #[arg(long, env = "COMMERCE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// The sled database: journal, snapshots, outbox.
    #[arg(long, env = "COMMERCE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Bearer token of the admin endpoints. Without it, the token kept in
    /// <data-dir>/admin-token is used; a new data dir gets one made (0600)
    /// and printed once.
    #[arg(long, env = "COMMERCE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Start without the demo catalogue (otherwise a new data dir is seeded).
    #[arg(long, env = "COMMERCE_EMPTY")]
    pub empty: bool,
    /// How long a pending order holds its stock.
    #[arg(long, env = "COMMERCE_ORDER_TTL_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub order_ttl_secs: u64,
    /// How often the top-products ranking is refreshed.
    #[arg(long, env = "COMMERCE_STATS_INTERVAL_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stats_interval_secs: u64,
    /// POST the data platform's events here, as JSON arrays, or, for
    /// nats://host:port/subject, publish each to that JetStream subject; without it,
    /// they are appended as JSON lines to <data-dir>/data-platform.jsonl.
    #[arg(long, env = "COMMERCE_DATA_PLATFORM_URL", value_parser = platform_url)]
    pub data_platform_url: Option<String>,
    /// Events per POST to the data platform at most.
    #[arg(long, env = "COMMERCE_DATA_PLATFORM_BATCH", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub data_platform_batch: u64,
    /// Refusals (a 4xx other than 408 and 429, the event alone) after which
    /// an event becomes a dead letter.
    #[arg(long, env = "COMMERCE_DATA_PLATFORM_MAX_REFUSALS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub data_platform_max_refusals: u32,
    /// Log as JSON lines (to stderr).
    #[arg(long, env = "COMMERCE_LOG_JSON")]
    pub log_json: bool,
    /// A request admitted and not answered within this is answered 504
    /// OUTCOME_UNKNOWN (its change may still happen: retry with the same
    /// Idempotency-Key to learn which).
    #[arg(long, env = "COMMERCE_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub request_timeout_secs: u64,
    /// An origin allowed to call the API from a browser (CORS), as
    /// scheme://host or scheme://host:port; repeat it for more, or give * for any. Without
    /// it, no CORS headers are sent.
    #[arg(
        long = "cors-origin",
        env = "COMMERCE_CORS_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origin: Vec<String>,
    /// Join a cluster whose journal is replicated by these NATS servers
    /// (nats://HOST:PORT, comma-separated): one node leads, the others
    /// follow as standbys (see API.md "Cluster"). Without it, one node on
    /// its own store.
    #[arg(long, env = "COMMERCE_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This node's name in the cluster, unique (needed with --cluster).
    #[arg(long, env = "COMMERCE_NODE_ID")]
    pub node_id: Option<String>,
    /// The cluster's name: it names the journal stream and the lease.
    #[arg(long, env = "COMMERCE_CLUSTER_NAME", default_value = "commerce")]
    pub cluster_name: String,
    /// Where clients reach this node (X-Leader on the standbys); default
    /// http://<--addr>.
    #[arg(long, env = "COMMERCE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Seconds between the leader's trims of the journal stream: it
    /// removes what every node that reported holds in its own store.
    #[arg(long, env = "COMMERCE_CLUSTER_TRIM_SECS", default_value_t = crate::engine::cluster_trim::TRIM_EVERY_DEFAULT_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub cluster_trim_secs: u64,
    /// Customer authentication with HS256 tokens signed with this secret:
    /// every /api/v1 route but the product reads and the OpenAPI document
    /// then needs Authorization: Bearer <JWT> (see API.md). Off without it.
    #[arg(long, env = "COMMERCE_AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,
    /// Customer authentication with RS256/ES256 tokens, checked against the
    /// public keys of this JWKS file (not with --auth-jwt-secret).
    #[arg(long, env = "COMMERCE_AUTH_JWKS")]
    pub auth_jwks: Option<PathBuf>,
}

/// The token checker of `--auth-jwt-secret` or `--auth-jwks`; `None`: off.
/// Both given, an empty secret or an unreadable key file stop the start.
pub(crate) fn auth_verifier(
    args: &ServeArgs,
) -> Result<Option<Arc<crate::http::auth::Verifier>>, crate::CliError> {
    use crate::http::auth::Verifier;
    let verifier = match (&args.auth_jwt_secret, &args.auth_jwks) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(
                "give --auth-jwt-secret or --auth-jwks, not both: tokens are checked one way"
                    .into(),
            )
        }
        (Some(secret), None) => {
            Verifier::hs256(secret.as_bytes()).map_err(|e| format!("--auth-jwt-secret: {e}"))?
        }
        (None, Some(path)) => {
            Verifier::from_jwks_file(path).map_err(|e| format!("--auth-jwks: {e}"))?
        }
    };
    Ok(Some(Arc::new(verifier)))
}

/// Logs to stderr through [`BufferedStderr`], in the line format of
/// [`Lines`] (text, or JSON with `--log-json`); the guard writes out what
/// is still buffered when `serve` ends.
fn init_logs(json: bool) -> FlushOnDrop {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let out = BufferedStderr::start();
    let guard = out.flush_on_drop();
    // Colour codes only for a person at a terminal, never into a file.
    let ansi = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = if json { Lines::json() } else { Lines::text() };
    // try_init: a subscriber set earlier (a test, an embedding) is kept.
    let _ = lines.subscriber(filter, ansi, out).try_init();
    guard
}

/// 128 random bits as hex, from the OS; std's per-process random hash keys
/// if `/dev/urandom` cannot be read.
fn generate_token() -> String {
    let mut bytes = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !from_os {
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An `http://` URL with a host, or `nats://host:port/subject`. This
/// build's HTTP client has no TLS, so `https://` is refused here rather
/// than failing every delivery later.
fn platform_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" if url.host().is_some() => Ok(text.to_owned()),
        "http" => Err("the URL has no host".into()),
        "nats" => crate::engine::delivery::nats::NatsTarget::parse(text).map(|_| text.to_owned()),
        "https" => Err("https is not supported by this build (no TLS): use http://".into()),
        other => Err(format!("the scheme must be http or nats, not {other}")),
    }
}

pub(crate) fn engine_config(args: &ServeArgs) -> EngineConfig {
    let data_platform = match &args.data_platform_url {
        Some(url) => match crate::engine::delivery::nats::NatsTarget::parse(url) {
            Ok(target) => DataPlatform::Nats(target),
            Err(_) => DataPlatform::Http(url.clone()),
        },
        None => DataPlatform::File(args.data_dir.join("data-platform.jsonl")),
    };
    EngineConfig {
        order_ttl_ms: args.order_ttl_secs.saturating_mul(1_000),
        stats_interval_ms: args.stats_interval_secs.saturating_mul(1_000),
        data_platform,
        data_platform_batch: args.data_platform_batch as usize,
        data_platform_max_refusals: args.data_platform_max_refusals,
        // Connections are served on the engine's threads.
        actor_threads_io: true,
        ..EngineConfig::default()
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received: finishing in-flight requests");
}

/// The data dir's lock: an exclusive `flock` on `<data-dir>/LOCK`, held
/// while the server runs. The kernel lets it go when the process ends,
/// however it ends.
struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    fn take(dir: &Path) -> Result<DataDirLock, crate::CliError> {
        use std::os::fd::AsRawFd;
        let path = dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; it touches no memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(format!(
                    "the data dir {} is in use by another process; stop it first, or give another --data-dir",
                    dir.display()
                )
                .into());
            }
            return Err(format!("cannot lock {}: {e}", path.display()).into());
        }
        Ok(DataDirLock { _file: file })
    }
}

/// The admin token: the flag's, else the one kept in the data dir, else a
/// new one, kept there (created 0600) and printed once.
fn admin_token(flag: Option<&str>, data_dir: &Path) -> Result<String, crate::CliError> {
    if let Some(t) = flag {
        return Ok(t.trim().to_owned());
    }
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(kept) => {
            let kept = kept.trim();
            if kept.is_empty() {
                return Err(format!(
                    "{} is empty: delete it to have a new token made, or give --admin-token",
                    path.display()
                )
                .into());
            }
            return Ok(kept.to_owned());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
    }
    let token = generate_token();
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?
    };
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("admin token: {token}");
    println!(
        "(kept in {}, readable by its owner only; give --admin-token to use another)",
        path.display()
    );
    let _ = std::io::stdout().flush();
    Ok(token)
}

/// The address to listen on, resolved: a typo fails here, before anything
/// is written.
fn listen_addr(addr: &str) -> Result<std::net::SocketAddr, crate::CliError> {
    use std::net::ToSocketAddrs;
    let bad = || {
        format!(
            "--addr {addr:?} is not an address to listen on: give HOST:PORT, e.g. 127.0.0.1:8080"
        )
    };
    addr.to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(|| bad().into())
}

pub fn run(args: ServeArgs) -> Result<ExitCode, crate::CliError> {
    let logs = init_logs(args.log_json);
    let opened = open(&args)?;
    if let Some(settings) = opened.cluster {
        use crate::http::cluster::{rejoin, run, ClusterExit};
        let ended = run(
            &args,
            settings,
            opened.listener,
            opened.store,
            opened.admin_token,
            opened.cors,
        );
        drop(opened.lock);
        return match ended? {
            ClusterExit::Stopped => Ok(ExitCode::SUCCESS),
            ClusterExit::Rejoin => {
                tracing::info!("starting again as a standby");
                drop(logs);
                Err(rejoin())
            }
        };
    }
    serve_alone(&args, opened)
}

/// What `serve` has checked and opened before it starts an engine.
struct Opened {
    listener: std::net::TcpListener,
    cors: Option<CorsOrigins>,
    auth: Option<Arc<crate::http::auth::Verifier>>,
    cluster: Option<crate::engine::cluster_node::ClusterSettings>,
    lock: DataDirLock,
    admin_token: String,
    store: SledStore,
}

/// Checks every flag and binds the address before anything is written;
/// then creates and locks the data dir, finds its admin token and opens
/// its store.
fn open(args: &ServeArgs) -> Result<Opened, crate::CliError> {
    let addr = listen_addr(&args.addr)?;
    let cors = CorsOrigins::parse(&args.cors_origin)?;
    if args
        .admin_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err("--admin-token must not be empty".into());
    }
    let auth = auth_verifier(args)?;
    let cluster = crate::http::cluster::settings(args, addr)?;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    // Before the engine starts, so the journal writer's first flushes count.
    crate::http::metrics::install();
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    let lock = DataDirLock::take(&args.data_dir)?;
    let admin_token = admin_token(args.admin_token.as_deref(), &args.data_dir)?;
    let store = SledStore::open(&args.data_dir)
        .map_err(|e| format!("cannot open the data dir {}: {e}", args.data_dir.display()))?;
    tracing::info!(
        data_dir = %args.data_dir.display(),
        bytes_on_disk = store.size_on_disk(),
        "data dir opened"
    );
    Ok(Opened {
        listener,
        cors,
        auth,
        cluster,
        lock,
        admin_token,
        store,
    })
}

/// A single node: starts the engine on the store, serves (and seeds a new
/// data dir) until the signal, then shuts the engine down.
fn serve_alone(args: &ServeArgs, opened: Opened) -> Result<ExitCode, crate::CliError> {
    let Opened {
        listener,
        cors,
        auth,
        lock,
        admin_token,
        store,
        ..
    } = opened;
    let engine = Engine::start(engine_config(args), Box::new(store), Arc::new(SystemClock))
        .map_err(|e| {
            format!(
                "cannot start the engine on {}: {e}",
                args.data_dir.display()
            )
        })?;
    let seed = !args.empty && demo::is_new(&engine);
    engine.set_starting(seed);
    // This runtime only accepts connections, seeds the demo, waits for the
    // signal and keeps the metrics: connections are served on the engine's
    // own threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let settings = HttpSettings {
        request_timeout_ms: args.request_timeout_secs.saturating_mul(1_000),
        cors,
        auth,
        ..HttpSettings::new(admin_token)
    };
    let served = runtime.block_on(serve_until_stopped(
        &engine,
        listener,
        settings,
        seed,
        &args.data_dir,
    ));
    runtime.shutdown_timeout(Duration::from_secs(1));
    // Connections still open past the grace period live on the engine's
    // threads: they are dropped as it stops.
    engine.shutdown();
    drop(lock);
    served?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serves until SIGINT or SIGTERM, or until seeding the demo catalogue
/// (when `seed`) fails, which stops the server as a signal would.
async fn serve_until_stopped(
    engine: &Engine,
    listener: std::net::TcpListener,
    settings: HttpSettings,
    seed: bool,
    data_dir: &Path,
) -> Result<(), crate::CliError> {
    tracing::info!(addr = %listener.local_addr()?, data_dir = %data_dir.display(), "listening");
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<crate::CliError>();
    let stopping = engine.clone();
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            Ok(_) = failed_rx => {}
        }
        stopping.begin_stopping();
    };
    let serving = serve_on_engine_threads(engine.clone(), listener, settings, stop);
    let seeding = async {
        if !seed {
            return None;
        }
        seed_demo(engine, failed_tx).await
    };
    let (served, seed_failed) = tokio::join!(serving, seeding);
    served?;
    match seed_failed {
        Some(message) => Err(message.into()),
        None => Ok(()),
    }
}

/// Seeds the demo catalogue, then `/ready` answers ready; if it fails,
/// says so on `failed` (stopping the server) and returns the message.
async fn seed_demo(
    engine: &Engine,
    failed: tokio::sync::oneshot::Sender<crate::CliError>,
) -> Option<String> {
    match demo::seed(engine).await {
        Ok(seeded) => {
            tracing::info!(
                products = seeded.products,
                coupons = seeded.coupons,
                users = seeded.users,
                "new data dir seeded with the demo catalogue"
            );
            engine.set_starting(false);
            None
        }
        Err(e) => {
            let message = format!("the demo catalogue could not be seeded: {e}");
            tracing::error!(error = %e, "the demo catalogue could not be seeded; stopping");
            let _ = failed.send(message.clone().into());
            Some(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map(|c| c.serve)
    }

    #[test]
    fn authentication_is_off_by_default_and_one_way_only() {
        // proves no flag leaves it off, a secret turns it on, and both flags (or a bad file) stop the start
        assert!(auth_verifier(&parse(&[]).unwrap()).unwrap().is_none());
        let secret = parse(&["--auth-jwt-secret", "s3cret"]).unwrap();
        assert!(auth_verifier(&secret).unwrap().is_some());
        let both = parse(&["--auth-jwt-secret", "s3cret", "--auth-jwks", "keys.json"]).unwrap();
        let e = auth_verifier(&both).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
        let missing = parse(&["--auth-jwks", "/nonexistent/keys.json"]).unwrap();
        assert!(auth_verifier(&missing).is_err());
        let empty = parse(&["--auth-jwt-secret", ""]).unwrap();
        assert!(auth_verifier(&empty).is_err());
    }

    #[test]
    fn data_platform_flags_are_validated_and_reach_the_engine() {
        // proves the defaults, the ranges of API.md, the env var and the engine config
        let d = parse(&[]).unwrap();
        assert_eq!(
            (d.data_platform_batch, d.data_platform_max_refusals),
            (500, 20)
        );
        for bad in [
            &["--data-platform-url", "localhost:9000/events"][..],
            &["--data-platform-url", "https://platform.example/events"],
            &["--data-platform-url", "ftp://platform.example/events"],
            &["--data-platform-url", "nats://127.0.0.1:4222"],
            &["--data-platform-url", "nats://127.0.0.1:4222/shop.*"],
            &["--data-platform-batch", "0"],
            &["--data-platform-batch", "10001"],
            &["--data-platform-batch", "-1"],
            &["--data-platform-max-refusals", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        let a = parse(&[
            "--data-platform-url",
            "http://127.0.0.1:9000/events",
            "--data-platform-batch",
            "10000",
            "--data-platform-max-refusals",
            "1",
        ])
        .unwrap();
        let c = engine_config(&a);
        assert_eq!(
            (c.data_platform_batch, c.data_platform_max_refusals),
            (10_000, 1)
        );
        assert_eq!(
            c.data_platform,
            DataPlatform::Http("http://127.0.0.1:9000/events".into())
        );
        let n = parse(&["--data-platform-url", "nats://127.0.0.1:4222/shop.events"]).unwrap();
        assert_eq!(
            engine_config(&n).data_platform,
            DataPlatform::Nats(crate::engine::delivery::nats::NatsTarget {
                server: "nats://127.0.0.1:4222".into(),
                subject: "shop.events".into(),
            })
        );
        std::env::set_var("COMMERCE_DATA_PLATFORM_BATCH", "7");
        let from_env = parse(&[]);
        std::env::remove_var("COMMERCE_DATA_PLATFORM_BATCH");
        assert_eq!(from_env.unwrap().data_platform_batch, 7);
    }
}
