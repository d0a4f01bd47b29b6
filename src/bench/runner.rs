//! One run: setup, warm-up and the measured window, sampled once a second,
//! then what the measured phase produced.

use crate::bench::measure::{
    data_platform_delta, journal_delta, process_delta, rss_mib, setup_rss, Sample,
};
use crate::bench::options::{BenchArgs, ClientsOn};
use crate::bench::report::{DataPlatformReport, JournalReport, ProcessReport, Second};
use crate::bench::sink::BenchSink;
use crate::bench::target::{OpError, Target};
use crate::bench::worker::{Run, WorkerOut, Workers};
use crate::bench::workload::{self, setup, Fixture, Tally, Workload};
use crate::engine::EngineMetrics;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) fn progress_bar(total: Duration, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total.as_millis() as u64);
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:40}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

/// What the measured phase produced.
pub(crate) struct Driven {
    pub(crate) run: Arc<Run>,
    pub(crate) outs: Vec<WorkerOut>,
    pub(crate) timeline: Vec<Second>,
    pub(crate) setup_secs: f64,
    /// This process's resident memory before and after setup (MiB).
    pub(crate) setup_rss_mib: (Option<f64>, Option<f64>),
    pub(crate) measured_secs: f64,
    pub(crate) journal: Option<JournalReport>,
    pub(crate) process: Option<ProcessReport>,
    pub(crate) data_platform: Option<DataPlatformReport>,
}

/// What a run over HTTP writes into the server, said before it writes it:
/// the server keeps all of it.
pub(crate) fn writes_warning(args: &BenchArgs, users: usize, products: usize) -> String {
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
        Workload::Mixed => "places, pays and refunds orders, charges balances and issues coupons",
    };
    format!(
        "bench: writing into {url}: creates {}, then {load} for {:.0} s. \
         They stay in its data dir: point it at a server whose data can be thrown away.",
        what.join(", "),
        args.warmup_secs + args.duration_secs
    )
}

/// Why setup failed, in one sentence: an unreachable server said as such.
pub(crate) fn setup_failed(target: &Target, e: &OpError) -> crate::CliError {
    if let Some(gone) = target.unreachable() {
        return format!("setup stopped: {gone}").into();
    }
    if e.is_unreachable() {
        let last = target.last_transport_error().unwrap_or_default();
        return format!("setup failed: the server could not be reached ({e}: {last})").into();
    }
    format!("setup failed: {e}").into()
}

/// What setup made, and what it took.
struct SetUp {
    fixture: Fixture,
    tally: Tally,
    secs: f64,
    /// Resident memory before and after (MiB).
    rss_mib: (Option<f64>, Option<f64>),
}

/// Setup (not measured): users, products, the campaign, balances.
async fn set_up(
    target: &Target,
    args: &BenchArgs,
    users: usize,
    products: usize,
) -> Result<SetUp, crate::CliError> {
    if let Target::Http(http) = target {
        http.probe().await?;
        eprintln!("{}", writes_warning(args, users, products));
    }
    let pb = progress_bar(Duration::from_secs(1), args.json);
    pb.set_message(format!("setting up {users} users, {products} products"));
    pb.enable_steady_tick(Duration::from_millis(200));
    let start = Instant::now();
    let rss_before = setup_rss(target).await;
    let (fixture, tally) = setup(target, args.workload, users, products, args.coupon_quantity)
        .await
        .map_err(|e| setup_failed(target, &e))?;
    let secs = start.elapsed().as_secs_f64();
    let rss_mib = (rss_before, setup_rss(target).await);
    pb.finish_and_clear();
    Ok(SetUp {
        fixture,
        tally,
        secs,
        rss_mib,
    })
}

/// The engine's counters (embedded) and the process, now.
fn sample(run: &Run) -> (Option<EngineMetrics>, Sample) {
    let engine = match &run.target {
        Target::Embedded(e) => Some(e.metrics()),
        Target::Http(_) => None,
    };
    let sample = Sample {
        at: Instant::now(),
        completed: run.completed.load(Ordering::Relaxed),
        usage: crate::process::usage(),
        threads: crate::process::thread_cpu(),
    };
    (engine, sample)
}

/// Watches the workers until they end: a timeline sample each second, the
/// progress bar, and the sample taken when the measured window opens.
async fn watch(
    run: &Run,
    workers: &Workers,
    json: bool,
) -> (Option<(Option<EngineMetrics>, Sample)>, Vec<Second>) {
    let pb = progress_bar(run.end - run.start, json);
    let (mut before, mut last) = (None, (Instant::now(), 0u64));
    let mut warm = run.measure_from <= run.start;
    if warm {
        before = Some(sample(run));
    }
    let mut timeline = Vec::new();
    let mut second = (run.start, 0u64);
    while !workers.finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        if now - second.0 >= Duration::from_secs(1) {
            let done = run.completed.load(Ordering::Relaxed);
            timeline.push(Second {
                at_secs: (now - run.start).as_secs_f64(),
                ops_per_sec: (done - second.1) as f64 / (now - second.0).as_secs_f64(),
                rss_mib: rss_mib(),
                server_rss_mib: run.target.server_rss_mib().await,
                backlog: run.target.backlog(),
            });
            second = (now, done);
        }
        if !warm && now >= run.measure_from {
            warm = true;
            before = Some(sample(run));
        }
        let done = run.completed.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, done);
        let phase = if now < run.measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        pb.set_position((now - run.start).as_millis() as u64);
        pb.set_message(format!("{phase}: {done} ops, {rate:.0} ops/s"));
    }
    pb.finish_and_clear();
    (before, timeline)
}

/// The measured window's length: to the last answer when the run stopped
/// early (work exhausted, server gone), else as asked.
fn measured_secs(run: &Run, outs: &[WorkerOut], duration: Duration) -> f64 {
    let stopped_early = run.exhausted.load(Ordering::Relaxed) || run.target.is_gone();
    if !stopped_early {
        return duration.as_secs_f64();
    }
    let last_done = outs.iter().filter_map(|o| o.last_done).max();
    last_done.map_or(0.0, |t| {
        t.saturating_duration_since(run.measure_from).as_secs_f64()
    })
}

pub(crate) async fn drive(
    target: Target,
    args: &BenchArgs,
    on: ClientsOn,
    users: usize,
    products: usize,
    sink: Option<Arc<BenchSink>>,
) -> Result<Driven, crate::CliError> {
    let set = set_up(&target, args, users, products).await?;
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let duration = Duration::from_secs_f64(args.duration_secs);
    let start = Instant::now();
    let run = Arc::new(Run {
        target,
        fixture: set.fixture,
        tally: set.tally,
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
    if let Some(sink) = &sink {
        sink.start_outage();
    }
    let workers = Workers::spawn(&run, on, args.seed)?;
    let (before, timeline) = watch(&run, &workers, args.json).await;
    let after = sample(&run);
    let outs = workers.join().await?;
    // What follows (the invariant check) is not the workload's.
    run.target.stop_timing_requests();
    let measured_secs = measured_secs(&run, &outs, duration);
    let secs = measured_secs.max(1e-9);
    let engine_before = before.as_ref().and_then(|b| b.0.as_ref());
    let journal = match (engine_before, &after.0) {
        (Some(a), Some(b)) => Some(journal_delta(a, b, secs)),
        _ => None,
    };
    let data_platform = match (engine_before, &after.0) {
        (Some(a), Some(b)) => Some(data_platform_delta(
            args.data_platform,
            a,
            b,
            secs,
            sink.as_deref(),
        )),
        _ => None,
    };
    let process = before.and_then(|(_, a)| process_delta(&a, &after.1, journal.as_ref()));
    Ok(Driven {
        run,
        outs,
        timeline,
        setup_secs: set.secs,
        setup_rss_mib: set.rss_mib,
        measured_secs,
        journal,
        process,
        data_platform,
    })
}
