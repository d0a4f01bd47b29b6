//! `commerce-engine bench`: load the embedded engine or a running server,
//! report throughput and latency, then check the invariants.
//!
//! A run has three phases. *Setup* makes users, products and a coupon
//! campaign (and charges users that will pay); it is not measured. *Warm-up*
//! runs the workload without recording. *Measurement* records each
//! operation's latency in a per-worker hdrhistogram and counts outcomes by
//! error code. Afterwards the invariants are checked (see [`check`]), and a
//! violation makes the command exit non-zero.
//!
//! Embedded, the workers run on the engine's own threads by default, shared
//! out by index (`--clients-on engine`), as `serve` runs its connections: a
//! message to an actor on the worker's thread, and its answer, wake no other
//! thread. `--clients-on own` gives them a runtime of their own
//! (`--client-threads`), the only choice with `--url`.
//!
//! Load is closed-loop by default: `--concurrency` workers, each sending its
//! next request when the previous one is answered. With `--rate` it is open
//! loop: requests are due at fixed intervals whatever the answers, workers
//! (at most `--concurrency` in flight) send each as soon as it is due, and
//! latency is measured from when it was *due*, so queueing delay behind a
//! slow server is counted instead of hidden (coordinated omission). Timers
//! have about 1 ms of slack, which such latencies include.
//!
//! Embedded, the engine delivers its events to a JSON-lines file as
//! `serve` does by default (`--data-platform file`), to an HTTP sink of the
//! bench's own ([`sink`], `--data-platform http`), or nowhere (`off`); the
//! report says how fast they were delivered and what was left.
//!
//! Layout: [`workload`] (setup and one operation), [`target`] (embedded
//! engine or HTTP client), [`check`] (invariants), [`report`] (table, JSON),
//! [`rng`] (a seeded PRNG shared with `simulate`), [`sink`] (the data
//! platform of `--data-platform http`).

pub mod check;
pub mod http_client;
pub mod ids;
pub mod report;
pub mod rng;
pub mod sink;
pub mod target;
pub mod workload;

use crate::bench::ids::IdLog;
use crate::bench::report::{
    merge, BenchReport, DataPlatformReport, InvariantReport, JournalReport, KindReport,
    ProcessReport, RssDrift, Second,
};
use crate::bench::rng::Rng;
use crate::bench::sink::BenchSink;
use crate::bench::target::{HttpTarget, OpError, Target};
use crate::bench::workload::{pick, setup, Fixture, OpKind, Outcome, Tally, Workload};
use crate::domain::ids::OrderId;
use crate::engine::{DataPlatform, Engine, EngineConfig, EngineMetrics, SystemClock};
use crate::store::recovery::{recover_store, RecoveryError};
use crate::store::writer::Step;
use crate::store::{MemoryStore, SledStore, Store};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Exit code when the server could not be reached (an invariant violated exits 1).
pub const EXIT_UNREACHABLE: u8 = 2;

pub fn run(args: BenchArgs) -> Result<ExitCode, crate::CliError> {
    let report = execute(&args)?;
    let code = crate::emit_report(
        args.json,
        &report,
        || report.table(),
        report.invariants.ok(),
    )?;
    let unreachable = report
        .unreachable
        .as_ref()
        .or(report.invariants.unreachable.first());
    match unreachable {
        Some(why) if report.invariants.violations.is_empty() => {
            eprintln!("bench: stopped: {why}");
            Ok(ExitCode::from(EXIT_UNREACHABLE))
        }
        _ => Ok(code),
    }
}

/// An embedded engine and where its data lives.
struct Embedded {
    engine: Engine,
    dir: PathBuf,
    remove_dir: bool,
    memory: Option<MemoryStore>,
    /// The data platform of `--data-platform http`.
    sink: Option<Arc<BenchSink>>,
}

/// A fresh directory under the system temp dir (no extra crate needed).
pub fn temp_dir(prefix: &str) -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl Embedded {
    fn start(args: &BenchArgs) -> Result<Embedded, crate::CliError> {
        let (dir, remove_dir) = match &args.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), false)
            }
            None => (temp_dir("commerce-bench")?, true),
        };
        let mut config = EngineConfig::default();
        if let Some(n) = args.arbiters {
            config.arbiter_count = n.max(1);
        }
        if let Some(n) = args.snapshot_every_records {
            config.journal.snapshot_every_records = n.max(1);
        }
        let down_for = args.data_platform_down_secs.map(Duration::from_secs_f64);
        let sink = match args.data_platform {
            SinkChoice::Http => Some(Arc::new(BenchSink::start(down_for)?)),
            _ => None,
        };
        config.data_platform = match (args.data_platform, &sink) {
            (SinkChoice::File, _) => DataPlatform::File(dir.join("data-platform.jsonl")),
            (SinkChoice::Http, Some(sink)) => DataPlatform::Http(sink.url.clone()),
            _ => DataPlatform::Off,
        };
        let (store, memory): (Box<dyn Store>, _) = match args.store {
            StoreChoice::Sled => (Box::new(SledStore::open(&dir)?), None),
            StoreChoice::Memory => {
                let m = MemoryStore::new();
                (Box::new(m.clone()), Some(m))
            }
        };
        let engine = Engine::start(config, store, Arc::new(SystemClock))?;
        Ok(Embedded {
            engine,
            dir,
            remove_dir,
            memory,
            sink,
        })
    }

    /// Shuts the engine down, recovers its store, and checks the result.
    fn finish(self, fixture: &Fixture, tally: &Tally, paid: &[OrderId]) -> InvariantReport {
        self.engine.shutdown();
        drop(self.engine);
        let recovered = match &self.memory {
            Some(m) => recover_store(m),
            None => match SledStore::open(&self.dir) {
                Ok(s) => recover_store(&s),
                Err(e) => Err(RecoveryError::Storage(e)),
            },
        };
        let report = match recovered {
            Ok((world, r)) => InvariantReport {
                checked: true,
                violations: check::check_world(&world, fixture, tally, paid),
                unreachable: Vec::new(),
                summary: format!(
                    "recovered {} records after snapshot {}; every invariant and every acknowledged effect checked ({} paid orders)",
                    r.records_replayed, r.snapshot_seq, paid.len()
                ),
            },
            Err(RecoveryError::Invariants(v)) => InvariantReport {
                checked: true,
                violations: v,
                unreachable: Vec::new(),
                summary: "recovery found the state inconsistent".into(),
            },
            Err(e) => InvariantReport {
                checked: true,
                violations: vec![format!("recovery failed: {e}")],
                unreachable: Vec::new(),
                summary: "the store could not be recovered".into(),
            },
        };
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        report
    }
}

/// One worker's measurements.
struct WorkerOut {
    hists: Vec<Option<Histogram<u64>>>,
    ok: [u64; 4],
    errors: BTreeMap<String, u64>,
    requests: u64,
    paid: IdLog,
    last_done: Option<Instant>,
}

impl WorkerOut {
    fn new() -> WorkerOut {
        WorkerOut {
            hists: (0..OpKind::ALL.len()).map(|_| None).collect(),
            ok: [0; 4],
            errors: BTreeMap::new(),
            requests: 0,
            paid: IdLog::default(),
            last_done: None,
        }
    }

    fn record(&mut self, kind: OpKind, latency: Duration, result: &Result<(), OpError>) {
        let h = self.hists[kind.index()]
            .get_or_insert_with(|| Histogram::new(3).expect("3 significant digits is valid"));
        // Auto-resizing: `record` grows the histogram (`saturating_record` would clamp).
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = h.record(ns);
        match result {
            Ok(()) => {
                self.ok[kind.index()] += 1;
                self.requests += kind.requests();
            }
            Err(e) => {
                *self.errors.entry(e.code.clone()).or_default() += 1;
                // An order_pay whose payment failed still made two requests.
                self.requests += if kind == OpKind::OrderPay && !is_place_error(e) {
                    2
                } else {
                    1
                };
            }
        }
    }
}

fn is_place_error(e: &OpError) -> bool {
    matches!(
        e.code.as_str(),
        "OUT_OF_STOCK" | "PRODUCT_NOT_FOUND" | "USER_NOT_FOUND" | "INVALID_REQUEST"
    )
}

/// What every worker shares during a run.
struct Run {
    target: Target,
    fixture: Fixture,
    tally: Tally,
    workload: Workload,
    concurrency: u64,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    /// Nanoseconds between due times (open loop).
    interval_ns: Option<f64>,
    completed: AtomicU64,
    exhausted: AtomicBool,
}

async fn worker(run: Arc<Run>, index: u64, seed: u64) -> WorkerOut {
    let mut rng = Rng::stream(seed, index);
    let mut out = WorkerOut::new();
    let mut sent: u64 = 0;
    // Over HTTP, a server taken for gone ends the run: no more attempts.
    while !run.exhausted.load(Ordering::Relaxed) && !run.target.is_gone() {
        let due = match run.interval_ns {
            Some(ns) => {
                let slot = index + sent * run.concurrency;
                run.start + Duration::from_nanos((slot as f64 * ns) as u64)
            }
            None => Instant::now(),
        };
        sent += 1;
        if due >= run.end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let kind = pick(run.workload, &mut rng);
        let outcome = workload::execute(
            &run.target,
            &run.fixture,
            &run.tally,
            run.workload,
            kind,
            &mut rng,
        )
        .await;
        let Outcome::Done { kind, result, paid } = outcome else {
            run.exhausted.store(true, Ordering::Relaxed);
            break;
        };

        let done = Instant::now();
        if let Some(id) = paid {
            out.paid.push(id);
        }
        if due >= run.measure_from {
            out.record(kind, done - due, &result);
            out.last_done = Some(done);
        }
        run.completed.fetch_add(1, Ordering::Relaxed);
    }
    out
}

fn progress_bar(total: Duration, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total.as_millis() as u64);
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:40}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

/// A run's workers, on the bench's runtime or on the engine's threads.
enum Workers {
    Own(Vec<tokio::task::JoinHandle<WorkerOut>>),
    /// One batch of workers per engine thread, each sending back its
    /// results once; the channel closes when every batch has ended (or
    /// been dropped by a panic).
    Engine {
        results: tokio::sync::mpsc::UnboundedReceiver<Vec<WorkerOut>>,
        batches: usize,
    },
}

impl Workers {
    /// Starts `run.concurrency` workers, worker `i` on engine thread
    /// `i % threads` when they go on the engine's threads.
    fn spawn(run: &Arc<Run>, on: ClientsOn, seed: u64) -> Result<Workers, crate::CliError> {
        let engine = match (&run.target, on) {
            (Target::Embedded(engine), ClientsOn::Engine) => engine,
            _ => {
                return Ok(Workers::Own(
                    (0..run.concurrency)
                        .map(|i| tokio::spawn(worker(run.clone(), i, seed)))
                        .collect(),
                ))
            }
        };
        let threads = engine.engine_threads().max(1);
        let (tx, results) = tokio::sync::mpsc::unbounded_channel();
        engine
            .spawn_on_engine_threads(|t| {
                let (run, tx) = (run.clone(), tx.clone());
                async move {
                    // Polled as each is woken, not all on every wake-up.
                    let batch: FuturesUnordered<_> = (t as u64..run.concurrency)
                        .step_by(threads)
                        .map(|i| worker(run.clone(), i, seed))
                        .collect();
                    let _ = tx.send(batch.collect().await);
                }
            })
            .map_err(|e| format!("starting the workers on the engine's threads: {e}"))?;
        Ok(Workers::Engine {
            results,
            batches: threads,
        })
    }

    fn finished(&self) -> bool {
        match self {
            Workers::Own(handles) => handles.iter().all(|h| h.is_finished()),
            Workers::Engine { results, .. } => results.is_closed(),
        }
    }

    async fn join(self) -> Result<Vec<WorkerOut>, crate::CliError> {
        let mut outs = Vec::new();
        match self {
            Workers::Own(handles) => {
                for h in handles {
                    outs.push(h.await?);
                }
            }
            Workers::Engine {
                mut results,
                batches,
            } => {
                let mut ended = 0;
                while let Some(batch) = results.recv().await {
                    outs.extend(batch);
                    ended += 1;
                }
                if ended < batches {
                    return Err("workers on an engine thread stopped early".into());
                }
            }
        }
        Ok(outs)
    }
}

/// What the measured phase produced.
struct Driven {
    run: Arc<Run>,
    outs: Vec<WorkerOut>,
    timeline: Vec<Second>,
    setup_secs: f64,
    /// This process's resident memory before and after setup (MiB).
    setup_rss_mib: (Option<f64>, Option<f64>),
    measured_secs: f64,
    journal: Option<JournalReport>,
    process: Option<ProcessReport>,
    data_platform: Option<DataPlatformReport>,
}

/// The process at one moment of the run.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    /// Operations finished so far.
    completed: u64,
    usage: Option<crate::process::Usage>,
}

/// What the process used between two samples.
fn process_delta(a: &Sample, b: &Sample, journal: Option<&JournalReport>) -> Option<ProcessReport> {
    let (ua, ub) = (a.usage?, b.usage?);
    let secs = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-9);
    let user = (ub.user_secs - ua.user_secs).max(0.0);
    let system = (ub.system_secs - ua.system_secs).max(0.0);
    let ops = b.completed.saturating_sub(a.completed).max(1);
    let written = match (ua.storage_write_bytes, ub.storage_write_bytes) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64),
        _ => None,
    };
    Some(ProcessReport {
        cpu_percent: (user + system) / secs * 100.0,
        system_percent: system / secs * 100.0,
        cpu_us_per_op: (user + system) * 1e6 / ops as f64,
        storage_write_mib_per_sec: written.map(|w| w / secs / (1024.0 * 1024.0)),
        storage_write_bytes_per_record: written
            .zip(journal)
            .filter(|(_, j)| j.records > 0)
            .map(|(w, j)| w / j.records as f64),
    })
}

/// Resident memory of this process (Linux), in MiB; `None` elsewhere.
fn rss_mib() -> Option<f64> {
    crate::process::resident_bytes().map(|b| b as f64 / (1024.0 * 1024.0))
}

/// The resident memory that setup grows: the server's over HTTP (from its
/// `/metrics`), this process's embedded.
async fn setup_rss(target: &Target) -> Option<f64> {
    match target {
        Target::Embedded(_) => rss_mib(),
        Target::Http(_) => target.server_rss_mib().await,
    }
}

/// What a run over HTTP writes into the server, said before it writes it:
/// the server keeps all of it.
fn writes_warning(args: &BenchArgs, users: usize, products: usize) -> String {
    let url = args.url.as_deref().unwrap_or_default();
    let mut what = vec![format!("{users} users named bench-user-N")];
    if args.workload.needs_balance() {
        what.push(format!("{} KRW charged to each", workload::SETUP_CHARGE.0));
    }
    if products > 0 {
        what.push(format!(
            "{products} products named bench-product-N with {} in stock",
            workload::STOCK
        ));
    }
    if args.workload.needs_coupon() {
        what.push("one coupon campaign named bench-flash".into());
    }
    let load = match args.workload {
        Workload::Charge => "charges balances",
        Workload::OrderPay | Workload::HotProduct => "places and pays orders",
        Workload::CouponFlash => "issues coupons",
        Workload::Mixed => "places and pays orders, charges balances and issues coupons",
    };
    format!(
        "bench: writing into {url}: creates {}, then {load} for {:.0} s. \
         They stay in its data dir: point it at a server whose data can be thrown away.",
        what.join(", "),
        args.warmup_secs + args.duration_secs
    )
}

/// Why setup failed, in one sentence: an unreachable server said as such.
fn setup_failed(target: &Target, e: &OpError) -> crate::CliError {
    if let Some(gone) = target.unreachable() {
        return format!("setup stopped: {gone}").into();
    }
    if e.is_unreachable() {
        let last = target.last_transport_error().unwrap_or_default();
        return format!("setup failed: the server could not be reached ({e}: {last})").into();
    }
    format!("setup failed: {e}").into()
}

fn journal_delta(a: &EngineMetrics, b: &EngineMetrics, secs: f64) -> JournalReport {
    let records = b.journal_records.saturating_sub(a.journal_records);
    let batches = b.journal_batches.saturating_sub(a.journal_batches);
    let steps = b.journal_steps.since(&a.journal_steps);
    JournalReport {
        records,
        batches,
        records_per_batch: records as f64 / batches.max(1) as f64,
        records_per_sec: records as f64 / secs,
        flushes_per_sec: batches as f64 / secs,
        writer_percent: steps
            .named()
            .map(|(step, us)| (step, us as f64 / 1e4 / secs))
            .collect(),
        write_us_per_batch: steps.get(Step::Writing) as f64 / batches.max(1) as f64,
    }
}

/// The data platform over the measured window, from the engine's counters.
fn data_platform_delta(
    choice: SinkChoice,
    a: &EngineMetrics,
    b: &EngineMetrics,
    secs: f64,
    sink: Option<&BenchSink>,
) -> DataPlatformReport {
    let per_sec = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    DataPlatformReport {
        sink: match choice {
            SinkChoice::File => "file",
            SinkChoice::Http => "http",
            SinkChoice::Off => "off",
        },
        delivered_per_sec: per_sec(a.data_platform_delivered, b.data_platform_delivered),
        added_per_sec: per_sec(a.data_platform_added, b.data_platform_added),
        backlog_at_start: a.outbox_pending,
        backlog_at_end: b.outbox_pending,
        events_in_memory_max: b.data_platform_events_in_memory_max,
        failures: b
            .data_platform_failures
            .saturating_sub(a.data_platform_failures),
        sink_events: sink.map(BenchSink::events),
        sink_refused: sink.map(BenchSink::refused),
    }
}

async fn drive(
    target: Target,
    args: &BenchArgs,
    on: ClientsOn,
    users: usize,
    products: usize,
    sink: Option<Arc<BenchSink>>,
) -> Result<Driven, crate::CliError> {
    if let Target::Http(http) = &target {
        http.probe().await?;
        eprintln!("{}", writes_warning(args, users, products));
    }
    let pb = progress_bar(Duration::from_secs(1), args.json);
    pb.set_message(format!("setting up {users} users, {products} products"));
    pb.enable_steady_tick(Duration::from_millis(200));
    let setup_start = Instant::now();
    let rss_before_setup = setup_rss(&target).await;
    let (fixture, tally) = setup(
        &target,
        args.workload,
        users,
        products,
        args.coupon_quantity,
    )
    .await
    .map_err(|e| setup_failed(&target, &e))?;
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let setup_rss_mib = (rss_before_setup, setup_rss(&target).await);
    pb.finish_and_clear();
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let duration = Duration::from_secs_f64(args.duration_secs);
    let start = Instant::now();
    let run = Arc::new(Run {
        target,
        fixture,
        tally,
        workload: args.workload,
        concurrency: args.concurrency as u64,
        start,
        measure_from: start + warmup,
        end: start + warmup + duration,
        interval_ns: args.rate.map(|r| 1e9 / r),
        completed: AtomicU64::new(0),
        exhausted: AtomicBool::new(false),
    });
    run.target.time_requests_from(run.measure_from);
    let metrics = |run: &Run| {
        let engine = match &run.target {
            Target::Embedded(e) => Some(e.metrics()),
            Target::Http(_) => None,
        };
        let sample = Sample {
            at: Instant::now(),
            completed: run.completed.load(Ordering::Relaxed),
            usage: crate::process::usage(),
        };
        (engine, sample)
    };
    if let Some(sink) = &sink {
        sink.start_outage();
    }
    let workers = Workers::spawn(&run, on, args.seed)?;
    let pb = progress_bar(warmup + duration, args.json);
    let (mut before, mut last) = (None, (Instant::now(), 0u64));
    let mut warm = warmup.is_zero();
    if warm {
        before = Some(metrics(&run));
    }
    let mut timeline = Vec::new();
    let mut second = (start, 0u64);
    while !workers.finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        if now - second.0 >= Duration::from_secs(1) {
            let done = run.completed.load(Ordering::Relaxed);
            timeline.push(Second {
                at_secs: (now - start).as_secs_f64(),
                ops_per_sec: (done - second.1) as f64 / (now - second.0).as_secs_f64(),
                rss_mib: rss_mib(),
                server_rss_mib: run.target.server_rss_mib().await,
                backlog: run.target.backlog(),
            });
            second = (now, done);
        }
        if !warm && now >= run.measure_from {
            warm = true;
            before = Some(metrics(&run));
        }
        let done = run.completed.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, done);
        let phase = if now < run.measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        pb.set_position((now - start).as_millis() as u64);
        pb.set_message(format!("{phase}: {done} ops, {rate:.0} ops/s"));
    }
    pb.finish_and_clear();
    let after = metrics(&run);
    let outs = workers.join().await?;
    // What follows (the invariant check) is not the workload's.
    run.target.stop_timing_requests();
    let stopped_early = run.exhausted.load(Ordering::Relaxed) || run.target.is_gone();
    let measured_secs = if stopped_early {
        let last_done = outs.iter().filter_map(|o| o.last_done).max();
        last_done.map_or(0.0, |t| {
            t.saturating_duration_since(run.measure_from).as_secs_f64()
        })
    } else {
        duration.as_secs_f64()
    };
    let journal = match (before.as_ref().and_then(|b| b.0.as_ref()), &after.0) {
        (Some(a), Some(b)) => Some(journal_delta(a, b, measured_secs.max(1e-9))),
        _ => None,
    };
    let data_platform = match (before.as_ref().and_then(|b| b.0.as_ref()), &after.0) {
        (Some(a), Some(b)) => Some(data_platform_delta(
            args.data_platform,
            a,
            b,
            measured_secs.max(1e-9),
            sink.as_deref(),
        )),
        _ => None,
    };
    let process = before.and_then(|(_, a)| process_delta(&a, &after.1, journal.as_ref()));
    Ok(Driven {
        run,
        outs,
        timeline,
        setup_secs,
        setup_rss_mib,
        measured_secs,
        journal,
        process,
        data_platform,
    })
}

/// Where a run's workers go: what was asked, or the default for its target.
fn clients_on(args: &BenchArgs) -> Result<ClientsOn, crate::CliError> {
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

fn validate(args: &BenchArgs, products: usize) -> Result<(), crate::CliError> {
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

/// Runs a benchmark and checks the invariants; the report says how it went.
pub fn execute(args: &BenchArgs) -> Result<BenchReport, crate::CliError> {
    let users = args.users.unwrap_or(args.workload.default_users());
    let products = args.products.unwrap_or(args.workload.default_products());
    validate(args, products)?;
    let on = clients_on(args)?;
    let (target, embedded, target_name) = match &args.url {
        Some(url) => {
            let http = HttpTarget::new(
                url,
                args.admin_token.clone(),
                args.keys,
                args.auth_jwt_secret.as_deref(),
            )?;
            (Target::Http(http), None, url.clone())
        }
        None => {
            let e = Embedded::start(args)?;
            let name = match args.store {
                StoreChoice::Sled => format!("embedded engine (sled at {})", e.dir.display()),
                StoreChoice::Memory => "embedded engine (memory store)".into(),
            };
            (Target::Embedded(e.engine.clone()), Some(e), name)
        }
    };
    let threads = args
        .client_threads
        .unwrap_or(if embedded.is_some() { 1 } else { 2 });
    let rt = if threads <= 1 {
        // Embedded, the workers use no sockets: no I/O driver, so an answer
        // from an actor thread wakes them with no system call while busy.
        crate::engine::current_thread_runtime(embedded.is_none())?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let sink = embedded.as_ref().and_then(|e| e.sink.clone());
    let driven = rt.block_on(drive(target, args, on, users, products, sink));
    let driven = match driven {
        Ok(d) => d,
        Err(e) => {
            if let Some(emb) = embedded {
                emb.engine.shutdown();
                if emb.remove_dir {
                    let _ = std::fs::remove_dir_all(&emb.dir);
                }
            }
            return Err(e);
        }
    };
    let paid: Vec<OrderId> = driven.outs.iter().flat_map(|o| o.paid.iter()).collect();
    let run = &driven.run;
    let invariants = match embedded {
        Some(emb) => emb.finish(&run.fixture, &run.tally, &paid),
        None => match run.target.unreachable() {
            Some(gone) => InvariantReport {
                checked: false,
                violations: Vec::new(),
                unreachable: vec![gone],
                summary: "the server could not be reached, so nothing could be checked".into(),
            },
            None => {
                let checked = rt.block_on(check::check_remote(
                    &run.target,
                    &run.fixture,
                    &run.tally,
                    &paid,
                ));
                InvariantReport {
                    checked: checked.unreachable.is_empty(),
                    violations: checked.violations,
                    unreachable: checked.unreachable,
                    summary: "through the API: stock, balances and coupons against acknowledgements; a sample of paid orders".into(),
                }
            }
        },
    };
    Ok(build_report(
        args,
        target_name,
        on,
        users,
        products,
        &driven,
        invariants,
    ))
}

fn build_report(
    args: &BenchArgs,
    target: String,
    clients_on: ClientsOn,
    users: usize,
    products: usize,
    d: &Driven,
    invariants: InvariantReport,
) -> BenchReport {
    let secs = d.measured_secs.max(1e-9);
    let mut kinds = Vec::new();
    let mut all: Vec<&Histogram<u64>> = Vec::new();
    let mut ok_total = 0;
    for kind in OpKind::ALL {
        let parts: Vec<&Histogram<u64>> = d
            .outs
            .iter()
            .filter_map(|o| o.hists[kind.index()].as_ref())
            .collect();
        if parts.is_empty() {
            continue;
        }
        all.extend(parts.iter().copied());
        let ok: u64 = d.outs.iter().map(|o| o.ok[kind.index()]).sum();
        ok_total += ok;
        kinds.push(KindReport::new(kind.name(), &merge(&parts), ok, secs));
    }
    let total = KindReport::new("total", &merge(&all), ok_total, secs);
    let mut errors = BTreeMap::new();
    for o in &d.outs {
        for (code, n) in &o.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
    }
    let requests: u64 = d.outs.iter().map(|o| o.requests).sum();
    BenchReport {
        workload: args.workload,
        target,
        clients_on,
        concurrency: args.concurrency,
        rate: args.rate,
        seed: args.seed,
        users,
        products,
        setup_secs: d.setup_secs,
        rss_mib_before_setup: d.setup_rss_mib.0,
        rss_mib_after_setup: d.setup_rss_mib.1,
        warmup_secs: args.warmup_secs,
        measured_secs: d.measured_secs,
        kinds,
        total,
        requests_per_sec: requests as f64 / secs,
        http_requests: d
            .run
            .target
            .request_latencies()
            .map(|(h, ok)| KindReport::new("http request", &h, ok, secs)),
        errors,
        unknown_outcomes: d.run.tally.unknown.load(Ordering::Relaxed),
        journal: d.journal.clone(),
        process: d.process.clone(),
        data_platform: d.data_platform.clone(),
        rss_drift: RssDrift::over(&d.timeline, args.warmup_secs, d.measured_secs),
        timeline: d.timeline.clone(),
        unreachable: d.run.target.unreachable(),
        invariants,
    }
}
