//! The command line of `bench`: what to run, against what, and how hard,
//! with the checks that refuse a combination that cannot run.

use crate::bench::workload::Workload;
use std::path::PathBuf;

/// Where the embedded engine keeps its data.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// sled on disk, every acknowledgement flushed (the real thing).
    Sled,
    /// The same bytes kept in memory: no disk, to see what sled costs.
    Memory,
}

/// Where the load generator's workers run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientsOn {
    /// On the embedded engine's actor threads, as `serve` runs its connections.
    Engine,
    /// On a tokio runtime of the bench's own (`--client-threads`).
    Own,
}

/// Where the embedded engine delivers paid orders.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkChoice {
    /// JSON lines in `<data-dir>/data-platform.jsonl`, as `serve` does by default.
    File,
    /// POSTs to an HTTP sink the bench starts on 127.0.0.1, which counts
    /// what it accepts.
    Http,
    /// Nowhere: events stay in the outbox.
    Off,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to run.
    #[arg(long, value_enum, default_value = "order_pay")]
    pub workload: Workload,
    /// A running server (`http://127.0.0.1:8080`); without it, the embedded engine.
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token for the admin calls of the setup (with --url).
    #[arg(long, env = "COMMERCE_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// With --url, against a server started with --auth-jwt-secret: the
    /// same secret; each request then carries an HS256 token of the user it
    /// acts as (`sub` = user id), or an admin's (`"role":"admin"`).
    #[arg(long, env = "COMMERCE_AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,
    /// Embedded engine's data dir (default: a temporary dir, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "sled")]
    pub store: StoreChoice,
    #[arg(long, value_enum, default_value = "file")]
    pub data_platform: SinkChoice,
    /// With `--data-platform http`: the sink answers 503 for this long
    /// from the start of the load, then accepts (the backlog builds up on
    /// disk, then drains).
    #[arg(long)]
    pub data_platform_down_secs: Option<f64>,
    /// With --url: an Idempotency-Key on every change request (a new one
    /// each), to measure what keeping keys costs.
    #[arg(long)]
    pub keys: bool,
    /// Actor threads of the embedded engine (default: one per core).
    #[arg(long)]
    pub arbiters: Option<usize>,
    /// Journal records between snapshots (default: the engine's), to see what snapshots cost.
    #[arg(long)]
    pub snapshot_every_records: Option<u64>,
    /// Requests in flight at most (closed loop: workers).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fixed arrival rate in operations per second (open loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Users to create (default: 10,000; 300,000 for coupon_flash, one issue each).
    #[arg(long)]
    pub users: Option<usize>,
    /// Products to create (default: 1,000; 1 for hot_product).
    #[arg(long)]
    pub products: Option<usize>,
    /// Coupons in the campaign (default: one per user).
    #[arg(long)]
    pub coupon_quantity: Option<u64>,
    /// Where the workers run (default: `engine` embedded; `own` with
    /// --url or --client-threads).
    #[arg(long, value_enum)]
    pub clients_on: Option<ClientsOn>,
    /// Threads of the workers' own runtime (default: 1 embedded, 2 over HTTP).
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// Print the report as JSON (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// Defaults for a workload, as the command line would give them.
    pub fn new(workload: Workload) -> BenchArgs {
        BenchArgs {
            workload,
            url: None,
            admin_token: None,
            auth_jwt_secret: None,
            data_dir: None,
            store: StoreChoice::Sled,
            data_platform: SinkChoice::File,
            data_platform_down_secs: None,
            arbiters: None,
            snapshot_every_records: None,
            concurrency: 64,
            duration_secs: 10.0,
            warmup_secs: 2.0,
            seed: 1,
            rate: None,
            users: None,
            products: None,
            coupon_quantity: None,
            clients_on: None,
            client_threads: None,
            keys: false,
            json: false,
        }
    }
}

/// Where a run's workers go: what was asked, or the default for its target.
pub(crate) fn clients_on(args: &BenchArgs) -> Result<ClientsOn, crate::CliError> {
    match (args.clients_on, &args.url, args.client_threads) {
        (Some(ClientsOn::Engine), Some(_), _) => {
            Err("--clients-on engine needs the embedded engine, not --url".into())
        }
        (Some(ClientsOn::Engine), None, Some(_)) => Err(
            "--client-threads sizes the workers' own runtime: not with --clients-on engine".into(),
        ),
        (Some(on), _, _) => Ok(on),
        (None, None, None) => Ok(ClientsOn::Engine),
        (None, _, _) => Ok(ClientsOn::Own),
    }
}

pub(crate) fn validate(args: &BenchArgs, products: usize) -> Result<(), crate::CliError> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if !(args.duration_secs > 0.0 && args.warmup_secs >= 0.0) {
        return Err("--duration-secs must be positive and --warmup-secs not negative".into());
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    let needs_products = matches!(
        args.workload,
        Workload::OrderPay | Workload::HotProduct | Workload::Mixed
    );
    if needs_products && products == 0 {
        return Err("this workload needs at least one product".into());
    }
    if args.users == Some(0) {
        return Err("--users must be at least 1".into());
    }
    if let Some(d) = args.data_platform_down_secs {
        if args.data_platform != SinkChoice::Http || args.url.is_some() {
            return Err("--data-platform-down-secs needs --data-platform http, embedded".into());
        }
        if !(d.is_finite() && d >= 0.0) {
            return Err("--data-platform-down-secs must not be negative".into());
        }
    }
    if args.data_platform == SinkChoice::Http && args.url.is_some() {
        return Err("--data-platform http is the embedded engine's sink: not with --url".into());
    }
    if args.keys && args.url.is_none() {
        return Err(
            "--keys is for a server (--url): the embedded engine is called without keys".into(),
        );
    }
    Ok(())
}
