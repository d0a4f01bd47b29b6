//! `commerce-engine serve` (also what a bare `commerce-engine` runs): opens
//! the sled data dir, recovers the engine, seeds a new data dir with the
//! demo catalogue unless `--empty`, and serves the API on the engine's own
//! threads until SIGINT or SIGTERM; then stops accepting, finishes what is
//! in flight, shuts the engine down (last flush and snapshot) and exits 0.

use crate::engine::{DataPlatform, Engine, EngineConfig, SystemClock};
use crate::http::demo;
use crate::http::server::{serve_on_engine_threads, HttpSettings};
use crate::store::sled_store::SledStore;
use std::io::{Read, Write};
use std::path::PathBuf;
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
    /// Bearer token of the admin endpoints; generated and printed once if not given.
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
    /// POST the data platform's events here, as JSON arrays; without it,
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
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a subscriber set earlier (a test, an embedding) is kept.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
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

/// An `http://` URL with a host. This build's HTTP client has no TLS, so
/// `https://` is refused here rather than failing every delivery later.
fn platform_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" if url.host().is_some() => Ok(text.to_owned()),
        "http" => Err("the URL has no host".into()),
        "https" => Err("https is not supported by this build (no TLS): use http://".into()),
        other => Err(format!("the scheme must be http, not {other}")),
    }
}

fn engine_config(args: &ServeArgs) -> EngineConfig {
    let data_platform = match &args.data_platform_url {
        Some(url) => DataPlatform::Http(url.clone()),
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

pub fn run(args: ServeArgs) -> Result<ExitCode, crate::CliError> {
    init_logs(args.log_json);
    // Before the engine starts, so the journal writer's first flushes count.
    crate::http::metrics::install();
    let admin_token = match &args.admin_token {
        Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
        Some(_) => return Err("--admin-token must not be empty".into()),
        None => {
            let t = generate_token();
            println!("admin token: {t}");
            let _ = std::io::stdout().flush();
            t
        }
    };
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    let store = SledStore::open(&args.data_dir)
        .map_err(|e| format!("cannot open {}: {e}", args.data_dir.display()))?;
    let engine = Engine::start(engine_config(&args), Box::new(store), Arc::new(SystemClock))?;
    // This runtime only seeds the demo, waits for the signal and keeps the
    // metrics: connections are served on the engine's own threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let settings = HttpSettings::new(admin_token);
    let served = runtime.block_on(async {
        if !args.empty && demo::is_new(&engine) {
            let seeded = demo::seed(&engine).await?;
            tracing::info!(?seeded, "new data dir seeded with the demo catalogue");
        }
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
        tracing::info!(addr = %listener.local_addr()?, data_dir = %args.data_dir.display(), "listening");
        serve_on_engine_threads(
            engine.clone(),
            listener.into_std()?,
            settings,
            shutdown_signal(),
        )
        .await?;
        Ok::<(), crate::CliError>(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    // Connections still open past the grace period live on the engine's
    // threads: they are dropped as it stops.
    engine.shutdown();
    served?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
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
        std::env::set_var("COMMERCE_DATA_PLATFORM_BATCH", "7");
        let from_env = parse(&[]);
        std::env::remove_var("COMMERCE_DATA_PLATFORM_BATCH");
        assert_eq!(from_env.unwrap().data_platform_batch, 7);
    }
}
