//! `commerce-engine bench`: load the embedded engine or a running server,
//! report throughput and latency, then check the invariants.
//!
//! A run has three phases. *Setup* makes users, products and a coupon
//! campaign (and charges users that will pay); it is not measured. *Warm-up*
//! runs the workload without recording. *Measurement* records each
//! operation's latency in a per-worker hdrhistogram and counts outcomes by
//! error code. Afterwards the invariants are checked (see [`crate::check`]), and a
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
//! Layout: [`options`] (the command line), [`workload`] (setup and one
//! operation), [`worker`] (the load's workers), [`runner`] (one run's
//! phases), [`measure`] (CPU, memory, journal and data platform around the
//! measured window), [`target`] (embedded engine or HTTP client),
//! [`embedded`] (the engine a run starts and recovers), [`report`] (table,
//! JSON), [`rng`] (a seeded PRNG shared with `simulate`), [`sink`] (the
//! data platform of `--data-platform http`).

pub mod embedded;
pub mod http_client;
pub mod ids;
pub mod measure;
pub mod options;
pub mod report;
pub mod rng;
pub mod runner;
pub mod sink;
pub mod target;
pub mod worker;
pub mod workload;

pub use options::{BenchArgs, ClientsOn, SinkChoice, StoreChoice};

use crate::bench::embedded::Embedded;
use crate::bench::options::{clients_on, validate};
use crate::bench::report::{merge, BenchReport, InvariantReport, KindReport, RssDrift};
use crate::bench::runner::{drive, Driven};
use crate::bench::target::{HttpTarget, Target};
use crate::bench::worker::{settled_orders, Run};
use crate::bench::workload::OpKind;
use crate::check::Acknowledged;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

/// How many acknowledged orders a check over HTTP reads back at most.
const ORDERS_READ_MAX: usize = 2_000;

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

/// A fresh directory under the system temp dir (no extra crate needed).
pub fn temp_dir(prefix: &str) -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs a benchmark and checks the invariants; the report says how it went.
pub fn execute(args: &BenchArgs) -> Result<BenchReport, crate::CliError> {
    let users = args.users.unwrap_or(args.workload.default_users());
    let products = args.products.unwrap_or(args.workload.default_products());
    validate(args, products)?;
    let on = clients_on(args)?;
    let (target, embedded, target_name) = open_target(args)?;
    let rt = clients_runtime(args, embedded.is_some())?;
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
    let run = &driven.run;
    let mut acked = run.tally.acknowledged(&run.fixture);
    acked.orders = settled_orders(&driven.outs);
    let invariants = match embedded {
        Some(emb) => emb.finish(&acked),
        None => rt.block_on(check_through_api(run, &acked)),
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

/// The server of `--url`, or an embedded engine started for the run; and
/// its name for the report.
fn open_target(args: &BenchArgs) -> Result<(Target, Option<Embedded>, String), crate::CliError> {
    match &args.url {
        Some(url) => {
            let http = HttpTarget::new(
                url,
                args.admin_token.clone(),
                args.keys,
                args.auth_jwt_secret.as_deref(),
            )?;
            Ok((Target::Http(http), None, url.clone()))
        }
        None => {
            let e = Embedded::start(args)?;
            let name = match args.store {
                StoreChoice::Sled => format!("embedded engine (sled at {})", e.dir.display()),
                StoreChoice::Memory => "embedded engine (memory store)".into(),
            };
            Ok((Target::Embedded(e.engine.clone()), Some(e), name))
        }
    }
}

/// The runtime the bench's own side runs on (setup, sampling, and the
/// workers unless they go on the engine's threads).
fn clients_runtime(
    args: &BenchArgs,
    embedded: bool,
) -> Result<tokio::runtime::Runtime, crate::CliError> {
    let threads = args.client_threads.unwrap_or(if embedded { 1 } else { 2 });
    let rt = if threads <= 1 {
        // Embedded, the workers use no sockets: no I/O driver, so an answer
        // from an actor thread wakes them with no system call while busy.
        crate::engine::current_thread_runtime(!embedded)?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    Ok(rt)
}

/// The check of a run over HTTP, unless the server is gone.
async fn check_through_api(run: &Run, acked: &Acknowledged) -> InvariantReport {
    if let Some(gone) = run.target.unreachable() {
        return InvariantReport {
            checked: false,
            violations: Vec::new(),
            unreachable: vec![gone],
            summary: "the server could not be reached, so nothing could be checked".into(),
        };
    }
    let checked = acked.check_api(&run.target, ORDERS_READ_MAX).await;
    InvariantReport {
        checked: checked.unreachable.is_empty(),
        violations: checked.violations,
        unreachable: checked.unreachable,
        summary: "through the API: stock, balances and coupons against acknowledgements; a sample of paid and refunded orders".into(),
    }
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
