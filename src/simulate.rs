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

use crate::bench::rng::Rng;
use crate::domain::coupon::Discount;
use crate::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use crate::domain::money::Krw;
use crate::domain::order::{LineRequest, Order, OrderStatus};
use crate::domain::refund::{RefundLine, RefundRequest};
use crate::domain::time::Timestamp;
use crate::domain::world::World;
use crate::engine::{
    DataPlatform, Engine, EngineConfig, Error, ManualClock, NewCoupon, OrderSource, PlaceOrder,
};
use crate::store::recovery::{recover_store, RecoveryError};
use crate::store::SledStore;
use futures_util::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
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

/// The sale starts at this instant on the simulated clock.
const START_RFC3339: &str = "2026-11-24T09:00:00Z";
const ORDER_TTL_MS: u64 = 600_000;
const DISCOUNT_PERCENT: u8 = 10;
/// Share of users (percent) who race for the coupon, ask twice, order, ...
const ASK_COUPON_PCT: u64 = 80;
const ASK_TWICE_PCT: u64 = 10;
const ORDER_PCT: u64 = 90;
const USE_COUPON_PCT: u64 = 70;
const PAY_PCT: u64 = 65;
const CANCEL_PCT: u64 = 15;
const SECOND_WAVE_PCT: u64 = 20;
const POOR_USER_PCT: u64 = 25;
/// Share of paid orders refunded; of those, refunded whole (else one unit),
/// and asked twice at once (the second whole).
const REFUND_PCT: u64 = 15;
const REFUND_WHOLE_PCT: u64 = 50;
const REFUND_TWICE_PCT: u64 = 20;
const PHASES: u64 = 10;
/// Every `LIMITED_EVERY`th product allows `LIMIT_PER_USER` units per user.
const LIMITED_EVERY: usize = 4;
const LIMIT_PER_USER: u64 = 2;

#[derive(Clone, Debug, Default, Serialize)]
pub struct OrderCounts {
    pub placed: u64,
    pub rejected_out_of_stock: u64,
    /// Refused for a product's per-user limit (each checked against the ledger).
    pub rejected_over_limit: u64,
    pub rejected_other: u64,
    pub paid: u64,
    pub failed_insufficient_balance: u64,
    pub cancelled: u64,
    pub expired: u64,
    /// Refunds answered 200, and refused (a concurrent one took what was left).
    pub refunds: u64,
    pub refunds_refused: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CouponCounts {
    pub quantity: u64,
    pub users_who_asked: u64,
    pub issued: u64,
    pub sold_out: u64,
    pub already_issued: u64,
    pub used_in_paid_orders: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RankedProduct {
    pub rank: u32,
    pub product_id: ProductId,
    pub sold_quantity: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SimulationReport {
    pub seed: u64,
    pub users: usize,
    pub products: usize,
    pub stock_per_product: u64,
    pub orders: OrderCounts,
    pub coupons: CouponCounts,
    pub units_stocked: u64,
    pub units_sold: u64,
    pub revenue_krw: u64,
    pub discounts_krw: u64,
    pub refunded_krw: u64,
    pub top5: Vec<RankedProduct>,
    pub outbox_pending: u64,
    pub delivered_events: u64,
    pub delivered_duplicates: u64,
    pub recovered_records: u64,
    pub violations: Vec<String>,
}

/// What the simulation saw acknowledged; the recovered state must match it.
#[derive(Default)]
struct Ledger {
    charged: HashMap<UserId, u64>,
    paid: HashMap<UserId, u64>,
    sold: BTreeMap<ProductId, u64>,
    status: BTreeMap<OrderId, OrderStatus>,
    orders: HashMap<OrderId, Order>,
    coupon_of: HashMap<UserId, UserCouponId>,
    refunded: HashMap<UserId, u64>,
    /// Event ids of the refunds answered.
    refund_events: Vec<String>,
    /// The per-user limit of each limited product.
    limits: BTreeMap<ProductId, u64>,
}

impl Ledger {
    /// Units of `product` that `user` holds in orders answered pending or paid.
    fn held(&self, user: UserId, product: ProductId) -> u64 {
        self.orders
            .values()
            .filter(|o| o.user_id == user)
            .filter(|o| {
                matches!(
                    self.status.get(&o.id),
                    Some(OrderStatus::Pending | OrderStatus::Paid)
                )
            })
            .flat_map(|o| o.quantities())
            .filter(|(p, _)| *p == product)
            .map(|(_, q)| q)
            .sum()
    }

    /// Whether `lines` of `user` pass a limit, by what the ledger holds.
    fn over_limit(&self, user: UserId, lines: &[LineRequest]) -> bool {
        lines.iter().any(|l| {
            self.limits
                .get(&l.product_id)
                .is_some_and(|max| self.held(user, l.product_id) + l.quantity > *max)
        })
    }
}

fn code(e: &Error) -> &'static str {
    e.code()
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

type Step<T> = Result<T, crate::CliError>;

/// Phases 1–8; answers the campaign and the ranking's violations.
async fn scenario(
    engine: &Engine,
    clock: &ManualClock,
    args: &SimulateArgs,
    pb: &ProgressBar,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) -> Step<(CouponId, Vec<String>)> {
    let mut rng = Rng::new(args.seed);
    pb.set_message("setting up products, the campaign and users");
    let products = create_products(engine, args, &mut rng, ledger).await?;
    let coupon = engine
        .create_coupon(
            NewCoupon {
                name: "flash-sale".into(),
                discount: Discount::Percent {
                    percent: DISCOUNT_PERCENT,
                },
                quantity: args.coupon_quantity,
                expires_at: Some(engine.now().plus_ms(86_400_000)),
                terms: Default::default(),
            },
            None,
        )
        .await?
        .id;
    let names: Vec<String> = (0..args.users).map(|i| format!("shopper-{i}")).collect();
    let users = join_all(names.iter().map(|n| engine.create_user(n, None)))
        .await
        .into_iter()
        .map(|r| r.map(|u| u.id))
        .collect::<Result<Vec<UserId>, Error>>()?;
    report.units_stocked = args.stock * products.len() as u64;
    pb.inc(1);

    pb.set_message("users charge their balance");
    charge_all(engine, &users, &mut rng, ledger).await?;
    pb.inc(1);

    pb.set_message("users race for the coupon");
    race_for_coupon(engine, coupon, args, &users, &mut rng, report, ledger).await;
    pb.inc(1);

    pb.set_message("users race to order scarce products");
    let wave: Vec<UserId> = users
        .iter()
        .copied()
        .filter(|_| rng.percent(ORDER_PCT))
        .collect();
    let placed = place_wave(engine, &wave, &products, &mut rng, true, report, ledger).await;
    pb.inc(1);

    pb.set_message("orders are paid, cancelled or left pending");
    let mut pays = Vec::new();
    let mut cancels = Vec::new();
    for id in placed {
        match rng.below(100) {
            n if n < PAY_PCT => pays.push(id),
            n if n < PAY_PCT + CANCEL_PCT => cancels.push(id),
            _ => {} // left to expire
        }
    }
    let cancel = join_all(cancels.iter().map(|id| engine.cancel_order(*id, None)));
    let (cancelled, ()) = tokio::join!(cancel, pay_all(engine, &pays, report, ledger));
    for (id, r) in cancels.iter().zip(cancelled) {
        match r {
            Ok(o) => {
                ledger.status.insert(o.id, o.status);
                report.orders.cancelled += 1;
            }
            Err(e) => report
                .violations
                .push(format!("cancel of pending order {id} refused: {e}")),
        }
    }
    pb.inc(1);

    pb.set_message("a second wave buys what came back");
    let second: Vec<UserId> = users
        .iter()
        .copied()
        .filter(|_| rng.percent(SECOND_WAVE_PCT))
        .collect();
    let placed = place_wave(engine, &second, &products, &mut rng, false, report, ledger).await;
    pay_all(engine, &placed, report, ledger).await;
    pb.inc(1);

    pb.set_message("an operator refunds some paid orders");
    refund_some(engine, &mut rng, report, ledger).await?;
    pb.inc(1);

    pb.set_message("the clock moves past the order TTL");
    clock.advance_ms(ORDER_TTL_MS + 1_000);
    engine.expire_due_orders().await?;
    let pending: Vec<OrderId> = ledger
        .status
        .iter()
        .filter(|(_, s)| **s == OrderStatus::Pending)
        .map(|(id, _)| *id)
        .collect();
    for id in pending {
        // The periodic sweep may have expired some first: read what happened.
        let o = engine.order(id).await?;
        ledger.status.insert(id, o.status);
        if o.status == OrderStatus::Expired {
            report.orders.expired += 1;
        }
    }
    pb.inc(1);

    pb.set_message("the ranking is refreshed");
    let top = engine.refresh_stats().await?;
    report.top5 = top
        .items
        .iter()
        .map(|i| RankedProduct {
            rank: i.rank,
            product_id: i.product_id,
            sold_quantity: i.sold_quantity,
        })
        .collect();
    let ranking = check_ranking(&report.top5, &ledger.sold);
    report.units_sold = ledger.sold.values().sum();
    pb.inc(1);
    Ok((coupon, ranking))
}

async fn create_products(
    engine: &Engine,
    args: &SimulateArgs,
    rng: &mut Rng,
    ledger: &mut Ledger,
) -> Step<Vec<ProductId>> {
    let prices: Vec<Krw> = (0..args.products)
        .map(|_| Krw(rng.between(50, 500) * 100))
        .collect();
    let mut ids = Vec::with_capacity(args.products);
    for (i, price) in prices.iter().enumerate() {
        let limit = (i % LIMITED_EVERY == 0).then_some(LIMIT_PER_USER);
        let p = engine
            .create_limited_product(&format!("flash-item-{i}"), *price, args.stock, limit, None)
            .await?;
        if let Some(max) = limit {
            ledger.limits.insert(p.id, max);
        }
        ids.push(p.id);
    }
    Ok(ids)
}

async fn charge_all(
    engine: &Engine,
    users: &[UserId],
    rng: &mut Rng,
    ledger: &mut Ledger,
) -> Step<()> {
    let amounts: Vec<u64> = users
        .iter()
        .map(|_| {
            if rng.percent(POOR_USER_PCT) {
                rng.between(10, 100) * 100
            } else {
                rng.between(500, 2_000) * 100
            }
        })
        .collect();
    let results = join_all(
        users
            .iter()
            .zip(&amounts)
            .map(|(u, a)| engine.charge(*u, Krw(*a), None)),
    )
    .await;
    for ((u, a), r) in users.iter().zip(&amounts).zip(results) {
        r?;
        *ledger.charged.entry(*u).or_default() += a;
    }
    Ok(())
}

async fn race_for_coupon(
    engine: &Engine,
    coupon: CouponId,
    args: &SimulateArgs,
    users: &[UserId],
    rng: &mut Rng,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) {
    let mut askers: Vec<(UserId, bool)> = Vec::new();
    for u in users {
        if rng.percent(ASK_COUPON_PCT) {
            askers.push((*u, rng.percent(ASK_TWICE_PCT)));
        }
    }
    let results = join_all(askers.iter().map(|(u, twice)| async move {
        let first = engine.issue_coupon(coupon, *u, None).await;
        let second = if *twice {
            Some(engine.issue_coupon(coupon, *u, None).await)
        } else {
            None
        };
        (first, second)
    }))
    .await;
    let c = &mut report.coupons;
    c.quantity = args.coupon_quantity;
    c.users_who_asked = askers.len() as u64;
    for ((u, _), (first, second)) in askers.iter().zip(results) {
        for r in std::iter::once(first).chain(second) {
            match r {
                Ok(view) => {
                    c.issued += 1;
                    ledger.coupon_of.insert(*u, view.id);
                }
                Err(e) if code(&e) == "COUPON_SOLD_OUT" => c.sold_out += 1,
                Err(e) if code(&e) == "COUPON_ALREADY_ISSUED" => c.already_issued += 1,
                Err(e) => report
                    .violations
                    .push(format!("coupon issue to user {u} failed unexpectedly: {e}")),
            }
        }
    }
}

/// Places one order per user of `wave`; answers the ids placed.
async fn place_wave(
    engine: &Engine,
    wave: &[UserId],
    products: &[ProductId],
    rng: &mut Rng,
    with_coupons: bool,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) -> Vec<OrderId> {
    let requests: Vec<PlaceOrder> = wave
        .iter()
        .map(|u| {
            let lines_count = rng.between(1, 3) as usize;
            let mut lines: Vec<LineRequest> = Vec::with_capacity(lines_count);
            while lines.len() < lines_count.min(products.len()) {
                let product_id = products[rng.below(products.len() as u64) as usize];
                if lines.iter().all(|l| l.product_id != product_id) {
                    let quantity = rng.between(1, 2);
                    lines.push(LineRequest {
                        product_id,
                        quantity,
                    });
                }
            }
            let coupon = ledger.coupon_of.get(u).copied();
            let use_coupon = with_coupons && coupon.is_some() && rng.percent(USE_COUPON_PCT);
            PlaceOrder {
                user_id: *u,
                source: OrderSource::Items(lines),
                user_coupon_id: coupon.filter(|_| use_coupon),
            }
        })
        .collect();
    // One order per user in a wave: what the ledger holds decides each limit exactly.
    let over: Vec<bool> = requests
        .iter()
        .map(|r| match &r.source {
            OrderSource::Items(lines) => ledger.over_limit(r.user_id, lines),
            OrderSource::Cart => false,
        })
        .collect();
    let results = join_all(requests.into_iter().map(|r| engine.place_order(r, None))).await;
    let mut placed = Vec::new();
    for ((u, r), over) in wave.iter().zip(results).zip(over) {
        match (&r, over) {
            (Ok(order), true) => report.violations.push(format!(
                "order {} of user {u} passed a per-user limit",
                order.id
            )),
            (Err(e), false) if code(e) == "PURCHASE_LIMIT_EXCEEDED" => report
                .violations
                .push(format!("order of user {u} refused under its limit: {e}")),
            _ => {}
        }
        match r {
            Err(e) if code(&e) == "PURCHASE_LIMIT_EXCEEDED" => {
                report.orders.rejected_over_limit += 1
            }
            Ok(order) => {
                report.orders.placed += 1;
                placed.push(order.id);
                ledger.status.insert(order.id, order.status);
                ledger.orders.insert(order.id, order);
            }
            Err(e) if code(&e) == "OUT_OF_STOCK" => report.orders.rejected_out_of_stock += 1,
            Err(e) => {
                report.orders.rejected_other += 1;
                report
                    .violations
                    .push(format!("order of user {u} refused unexpectedly: {e}"));
            }
        }
    }
    placed
}

async fn pay_all(
    engine: &Engine,
    orders: &[OrderId],
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) {
    let results = join_all(orders.iter().map(|id| engine.pay_order(*id, None))).await;
    for (id, r) in orders.iter().zip(results) {
        match r {
            Ok(o) => {
                report.orders.paid += 1;
                report.revenue_krw += o.pay_amount.0;
                report.discounts_krw += o.discount_amount.0;
                if o.user_coupon_id.is_some() {
                    report.coupons.used_in_paid_orders += 1;
                }
                *ledger.paid.entry(o.user_id).or_default() += o.pay_amount.0;
                for l in &o.items {
                    *ledger.sold.entry(l.product_id).or_default() += l.quantity;
                }
                ledger.status.insert(o.id, o.status);
            }
            Err(e) if code(&e) == "INSUFFICIENT_BALANCE" => {
                report.orders.failed_insufficient_balance += 1;
                ledger.status.insert(*id, OrderStatus::Failed);
            }
            Err(e) => report
                .violations
                .push(format!("payment of order {id} failed unexpectedly: {e}")),
        }
    }
}

/// Refunds a seeded share of the paid orders, whole or one unit of their
/// first line; some are asked a second (whole) refund at the same time.
async fn refund_some(
    engine: &Engine,
    rng: &mut Rng,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) -> Step<()> {
    let mut asks: Vec<(OrderId, RefundRequest)> = Vec::new();
    for (id, status) in &ledger.status {
        if *status != OrderStatus::Paid || !rng.percent(REFUND_PCT) {
            continue;
        }
        let Some(placed) = ledger.orders.get(id) else {
            continue;
        };
        let request = if rng.percent(REFUND_WHOLE_PCT) {
            RefundRequest::default()
        } else {
            RefundRequest {
                items: Some(vec![RefundLine {
                    product_id: placed.items[0].product_id,
                    quantity: 1,
                }]),
                reason: Some("one unit damaged".into()),
            }
        };
        asks.push((*id, request));
        if rng.percent(REFUND_TWICE_PCT) {
            asks.push((*id, RefundRequest::default()));
        }
    }
    let answers = join_all(
        asks.iter()
            .map(|(id, r)| engine.refund_order(*id, r.clone(), None)),
    )
    .await;
    let mut refunded = Vec::new();
    for ((id, _), answer) in asks.iter().zip(answers) {
        match answer {
            Ok(o) => {
                let Some(refund) = o.refunds.last() else {
                    report
                        .violations
                        .push(format!("refund of {id} answered without one"));
                    continue;
                };
                report.orders.refunds += 1;
                report.refunded_krw += refund.amount.0;
                *ledger.refunded.entry(o.user_id).or_default() += refund.amount.0;
                for l in &refund.items {
                    if let Some(sold) = ledger.sold.get_mut(&l.product_id) {
                        *sold = sold.saturating_sub(l.quantity);
                    }
                }
                let number = o.refunds.len() as u32;
                ledger
                    .refund_events
                    .push(crate::domain::platform::order_refunded_id(o.id, number));
                refunded.push(*id);
            }
            Err(e) if matches!(code(&e), "ORDER_NOT_REFUNDABLE" | "REFUND_EXCEEDS_ORDER") => {
                report.orders.refunds_refused += 1;
            }
            Err(e) => report
                .violations
                .push(format!("refund of order {id} failed unexpectedly: {e}")),
        }
    }
    for id in refunded {
        // Answers of refunds racing on one order come in any order: read the last state.
        let o = engine.order(id).await?;
        ledger.status.insert(id, o.status);
    }
    Ok(())
}

/// The ranking must be the top 5 of what was paid: most units, ties by lower id.
pub fn check_ranking(top5: &[RankedProduct], sold: &BTreeMap<ProductId, u64>) -> Vec<String> {
    let mut expected: Vec<(ProductId, u64)> = sold
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| (*p, *n))
        .collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    expected.truncate(5);
    let got: Vec<(ProductId, u64)> = top5
        .iter()
        .map(|r| (r.product_id, r.sold_quantity))
        .collect();
    if got == expected {
        Vec::new()
    } else {
        vec![format!("ranking is {got:?} but payments say {expected:?}")]
    }
}

/// Waits (10 s at most) for the outbox to drain, then reads the sink back.
async fn await_delivery(
    engine: &Engine,
    sink: &Path,
    ledger: &Ledger,
    report: &mut SimulationReport,
) -> Vec<String> {
    for _ in 0..200 {
        if engine.outbox_pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.outbox_pending = engine.outbox_pending() as u64;
    let text = std::fs::read_to_string(sink).unwrap_or_default();
    let mut seen: HashSet<String> = HashSet::new();
    for line in text.lines() {
        let id = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| {
                v.get("event_id")
                    .and_then(|e| e.as_str())
                    .map(str::to_owned)
            });
        match id {
            Some(id) if !seen.insert(id.clone()) => report.delivered_duplicates += 1,
            Some(_) => report.delivered_events += 1,
            None => return vec![format!("data platform line is not an event: {line}")],
        }
    }
    let mut out = Vec::new();
    if report.outbox_pending > 0 {
        out.push(format!(
            "{} paid orders still in the outbox after 10 s",
            report.outbox_pending
        ));
    }
    let paid = ledger.status.iter().filter(|(_, s)| {
        matches!(
            s,
            OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
        )
    });
    for (id, _) in paid {
        if !seen.contains(&crate::engine::delivery::event_id(*id)) {
            out.push(format!("paid order {id} never reached the data platform"));
        }
    }
    for id in &ledger.refund_events {
        if !seen.contains(id) {
            out.push(format!("refund {id} never reached the data platform"));
        }
    }
    out
}

/// The recovered world against the ledger and the expectations of the scenario.
fn check_world(
    world: &World,
    args: &SimulateArgs,
    coupon: CouponId,
    ledger: &Ledger,
    report: &SimulationReport,
) -> Vec<String> {
    let mut out = world.violations();
    let c = &report.coupons;
    let expected_issued = c.quantity.min(c.users_who_asked);
    let issued = world
        .campaigns
        .get(coupon.index())
        .map_or(0, |k| k.issued.len());
    if issued != expected_issued || c.issued != expected_issued {
        out.push(format!(
            "coupons: {issued} recovered and {} answered, but min(quantity {}, askers {}) = {expected_issued}",
            c.issued, c.quantity, c.users_who_asked
        ));
    }
    for p in &world.products {
        let sold = ledger.sold.get(&p.id).copied().unwrap_or(0);
        if p.sold != sold
            || p.reserved != 0
            || p.sold > args.stock
            || p.stock + p.sold != args.stock
        {
            out.push(format!(
                "product {}: stock {} reserved {} sold {} (stocked {}), payments say {sold} sold",
                p.id, p.stock, p.reserved, p.sold, args.stock
            ));
        }
    }
    for u in &world.users {
        for (&p, &max) in &ledger.limits {
            // Every order has ended: paid ones hold their units, others freed them.
            let paid: u64 = ledger
                .orders
                .values()
                .filter(|o| {
                    o.user_id == u.id && ledger.status.get(&o.id) == Some(&OrderStatus::Paid)
                })
                .flat_map(|o| o.quantities())
                .filter(|(q, _)| *q == p)
                .map(|(_, n)| n)
                .sum();
            let held = u.limited.of(p);
            if held != paid || held > max {
                out.push(format!(
                    "user {} holds {held} units of limited product {p} (limit {max}), paid orders say {paid}",
                    u.id
                ));
            }
        }
        let expected = ledger
            .charged
            .get(&u.id)
            .copied()
            .unwrap_or(0)
            .checked_sub(ledger.paid.get(&u.id).copied().unwrap_or(0))
            .and_then(|b| b.checked_add(ledger.refunded.get(&u.id).copied().unwrap_or(0)));
        if Some(u.balance.0) != expected {
            out.push(format!(
                "user {}: balance {} but charged - paid + refunded = {expected:?}",
                u.id, u.balance.0
            ));
        }
    }
    if world.orders.len() != ledger.status.len() {
        out.push(format!(
            "{} orders recovered, {} placed",
            world.orders.len(),
            ledger.status.len()
        ));
    }
    for (id, status) in &ledger.status {
        let found = world.orders.get(id).map(|o| o.status);
        let fine = match status {
            // Left pending: the clock moved past its TTL, so it expired.
            OrderStatus::Pending => found == Some(OrderStatus::Expired),
            s => found == Some(*s),
        };
        if !fine {
            out.push(format!(
                "order {id}: answered {status:?}, recovered {found:?}"
            ));
        }
        if let (Some(o), Some(placed)) = (world.orders.get(id), ledger.orders.get(id)) {
            if o.items != placed.items || o.pay_amount != placed.pay_amount {
                out.push(format!("order {id}: recovered lines or amounts differ"));
            }
        }
    }
    out
}

impl SimulationReport {
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let o = &self.orders;
        let c = &self.coupons;
        let _ = writeln!(
            s,
            "flash sale, seed {}: {} users, {} products x {} units",
            self.seed, self.users, self.products, self.stock_per_product
        );
        let _ = writeln!(
            s,
            "orders: {} placed ({} out of stock, {} over a per-user limit, {} other refusals); {} paid, {} failed (balance), {} cancelled, {} expired",
            o.placed, o.rejected_out_of_stock, o.rejected_over_limit, o.rejected_other, o.paid,
            o.failed_insufficient_balance, o.cancelled, o.expired
        );
        let _ = writeln!(
            s,
            "refunds: {} made ({} KRW), {} refused (a concurrent refund took what was left)",
            o.refunds, self.refunded_krw, o.refunds_refused
        );
        let _ = writeln!(
            s,
            "coupons: {} issued of {} to {} users who asked ({} sold out, {} already issued); {} used in paid orders",
            c.issued, c.quantity, c.users_who_asked, c.sold_out, c.already_issued, c.used_in_paid_orders
        );
        let _ = writeln!(
            s,
            "stock: {} of {} units sold; revenue {} KRW after {} KRW of discounts",
            self.units_sold, self.units_stocked, self.revenue_krw, self.discounts_krw
        );
        let top: Vec<String> = self
            .top5
            .iter()
            .map(|r| {
                format!(
                    "#{} product {} ({} sold)",
                    r.rank, r.product_id, r.sold_quantity
                )
            })
            .collect();
        let _ = writeln!(s, "top 5: {}", top.join(", "));
        let _ = writeln!(
            s,
            "data platform: {} events delivered ({} duplicates), {} left in the outbox",
            self.delivered_events, self.delivered_duplicates, self.outbox_pending
        );
        if self.violations.is_empty() {
            let _ = writeln!(
                s,
                "invariants: ok (recovered from disk, {} records replayed; every expectation holds)",
                self.recovered_records
            );
        } else {
            let _ = writeln!(s, "invariants: {} VIOLATION(S)", self.violations.len());
            for v in self.violations.iter().take(20) {
                let _ = writeln!(s, "  - {v}");
            }
        }
        s
    }
}
