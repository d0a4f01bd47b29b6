//! `commerce-engine simulate`: a seeded flash sale on the embedded engine,
//! with a moved clock, a report of what happened, and an invariant check.
//!
//! The scenario, in phases (each one a step of the progress bar):
//! 1. set up: products with scarce stock, one limited coupon campaign, N users;
//! 2. every user charges a seeded amount (some too little to pay later);
//! 3. most users race for the coupon, some ask twice;
//! 4. most users race to place an order (1–3 lines, the coupon if held);
//! 5. each placed order is paid, cancelled, or left pending (seeded);
//! 6. a second wave orders what cancels and failed payments gave back, and pays;
//! 7. an operator refunds some paid orders, whole or one unit, some twice at once;
//! 8. the clock moves past the order TTL and due orders expire;
//! 9. the ranking is refreshed; paid orders and refunds reach the data platform (a JSON-lines file).
//!
//! Races make the exact winners vary between runs; what must hold does not:
//! the simulation tallies every acknowledged effect and, after shutting the
//! engine down and recovering the store from disk, demands the invariants
//! (`World::violations`) and exact expectations: coupons issued =
//! min(quantity, users who asked); units sold ≤ stock, nothing left
//! reserved after expiry; each user's balance = charged − paid + refunded;
//! units sold = paid − refunded; order statuses as answered; the top 5 as
//! computed from the payments less the refunds; every paid order and every
//! refund delivered. Any violation exits non-zero.
//!
//! Layout: [`scenario`] (the phases in order), [`actors`] (what shoppers
//! and the operator do in each phase), [`ledger`] (what was acknowledged),
//! [`check`] (the recovered state against the ledger), [`report`].

pub mod actors;
pub mod check;
pub mod ledger;
pub mod report;
pub mod scenario;

pub use check::check_ranking;
pub use report::{CouponCounts, OrderCounts, RankedProduct, SimulationReport};

use crate::domain::time::Timestamp;
use crate::engine::{DataPlatform, Engine, EngineConfig, ManualClock};
use crate::simulate::check::{await_delivery, check_world};
use crate::simulate::ledger::Ledger;
use crate::simulate::scenario::{scenario, ORDER_TTL_MS, PHASES, START_RFC3339};
use crate::store::recovery::{recover_store, RecoveryError};
use crate::store::SledStore;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 1_000)]
    pub users: usize,
    #[arg(long, default_value_t = 20)]
    pub products: usize,
    /// Units of each product: scarce on purpose.
    #[arg(long, default_value_t = 40)]
    pub stock: u64,
    /// Coupons in the campaign.
    #[arg(long, default_value_t = 100)]
    pub coupon_quantity: u64,
    /// Where the engine keeps its data (default: a temporary dir, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the report as JSON (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

impl Default for SimulateArgs {
    fn default() -> Self {
        SimulateArgs {
            seed: 1,
            users: 1_000,
            products: 20,
            stock: 40,
            coupon_quantity: 100,
            data_dir: None,
            json: false,
        }
    }
}
fn progress(args: &SimulateArgs) -> ProgressBar {
    if args.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(PHASES);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg}") {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

pub fn run(args: SimulateArgs) -> Result<ExitCode, crate::CliError> {
    let report = execute(&args)?;
    crate::emit_report(
        args.json,
        &report,
        || report.table(),
        report.violations.is_empty(),
    )
}

/// Runs the scenario and the check; the report lists any violation.
pub fn execute(args: &SimulateArgs) -> Result<SimulationReport, crate::CliError> {
    if args.users == 0 || args.products == 0 {
        return Err("--users and --products must be at least 1".into());
    }
    let (dir, remove) = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.clone(), false)
        }
        None => (crate::bench::temp_dir("commerce-simulate")?, true),
    };
    let result = simulate_in(args, &dir);
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn simulate_in(args: &SimulateArgs, dir: &Path) -> Result<SimulationReport, crate::CliError> {
    let start = Timestamp::parse_rfc3339(START_RFC3339).ok_or("bad start time")?;
    let clock = Arc::new(ManualClock::new(start));
    let sink = dir.join("data-platform.jsonl");
    let config = EngineConfig {
        order_ttl_ms: ORDER_TTL_MS,
        stats_interval_ms: 3_600_000,
        data_platform: DataPlatform::File(sink.clone()),
        delivery_backoff_ms_min: 10,
        delivery_backoff_ms_max: 100,
        ..EngineConfig::default()
    };
    let engine = Engine::start(config, Box::new(SledStore::open(dir)?), clock.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pb = progress(args);
    let mut report = SimulationReport {
        seed: args.seed,
        users: args.users,
        products: args.products,
        stock_per_product: args.stock,
        ..SimulationReport::default()
    };
    let mut ledger = Ledger::default();
    let scenario = rt.block_on(scenario(
        &engine,
        &clock,
        args,
        &pb,
        &mut report,
        &mut ledger,
    ));
    let delivered = match &scenario {
        Ok(_) => rt.block_on(await_delivery(&engine, &sink, &ledger, &mut report)),
        Err(_) => Vec::new(),
    };
    pb.set_position(PHASES);
    pb.set_message("shutting down, recovering, checking");
    engine.shutdown();
    drop(engine);
    pb.finish_and_clear();
    let (coupon, top_violations) = scenario?;
    report.violations.extend(top_violations);
    report.violations.extend(delivered);
    match crate::store::SledStore::open(dir)
        .map_err(RecoveryError::Storage)
        .and_then(|s| recover_store(&s))
    {
        Ok((world, r)) => {
            report.recovered_records = r.records_replayed;
            let found = check_world(&world, args, coupon, &ledger, &report);
            report.violations.extend(found);
        }
        Err(RecoveryError::Invariants(v)) => report.violations.extend(v),
        Err(e) => report.violations.push(format!("recovery failed: {e}")),
    }
    Ok(report)
}
