//! A shop's lifetime, compressed: three weeks of orders on a moved clock,
//! against a sled store, with a value limit of 64 KiB (instead of the
//! codec's 16 MiB) and snapshots every few thousand records, so that what
//! would take months at full rate (values outgrowing their frame, replay
//! growing with history, memory growing with orders, keys or history)
//! shows within the run. At the end: money, stock and coupons are conserved
//! exactly, the ranking is the one the paid orders make, no snapshot
//! failed, replay after a stop is bounded by the snapshot interval, and
//! everything held in memory is bounded by what is live, not by history.

use crate::durability_support::{config, key, manual_clock, place, runtime};
use crate::engine_support::Rng;
use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use commerce_engine::domain::limits::Limits;
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderStatus};
use commerce_engine::domain::stats::{TOP_COUNT, WINDOW_DAYS};
use commerce_engine::domain::time::MS_PER_DAY;
use commerce_engine::domain::user::{CouponUse, HISTORY_CHUNK};
use commerce_engine::engine::{Clock, DataPlatform, Engine, EngineConfig, ManualClock, NewCoupon};
use commerce_engine::store::recovery::recover_for_serving_under;
use commerce_engine::store::SledStore;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const DAYS: u64 = 21;
const STEP_MS: u64 = 4 * 60 * 60 * 1000;
const STEPS_PER_DAY: u64 = MS_PER_DAY / STEP_MS;
const ORDERS_PER_STEP: u64 = 90;
/// Users who hold a coupon: more than one chunk of the campaign's issued set.
const USERS: u64 = 34_000;
/// Users who buy (and are topped up every day).
const BUYERS: u64 = 1_500;
const PRODUCTS: u64 = 30;
const STOCK: u64 = 1_000_000;
const SNAPSHOT_EVERY_RECORDS: u64 = 4_000;
/// Idempotency keys in memory at most: four snapshot intervals of records.
const KEYS_IN_MEMORY_MAX: u64 = 4 * SNAPSHOT_EVERY_RECORDS;
const VALUE_BYTES_MAX: usize = 64 * 1024;
const TOP_UP: Krw = Krw(300_000);
/// Key tables expire by whole 4-hour generations after 24 hours.
const KEY_GENERATIONS_MAX: usize = 24 / 4 + 2;

fn lifetime_config(sink: &Path) -> EngineConfig {
    let mut c = config();
    c.data_platform = DataPlatform::File(sink.to_path_buf());
    c.journal.snapshot_every_records = SNAPSHOT_EVERY_RECORDS;
    c.journal.snapshot_value_bytes_max = VALUE_BYTES_MAX;
    c
}

fn start(dir: &Path, clock: Arc<ManualClock>) -> Engine {
    let store = SledStore::open(dir).expect("the store opens");
    let config = lifetime_config(&sink(dir));
    crate::engine_support::start(config, Box::new(store), clock)
}

fn sink(dir: &Path) -> std::path::PathBuf {
    dir.with_file_name("data-platform.jsonl")
}

/// What the run acknowledged, to check the end state against.
#[derive(Default)]
struct Ledger {
    charged: u64,
    paid: u64,
    paid_orders: u64,
    sold: BTreeMap<ProductId, u64>,
    /// Units paid per (UTC day, product): the ranking's input.
    sold_by_day: BTreeMap<(u64, ProductId), u64>,
    pending: Vec<(OrderId, Option<(UserId, UserCouponId)>)>,
    /// Each buyer's coupon while it is available.
    coupons: BTreeMap<UserId, UserCouponId>,
    orders: u64,
    cancelled: u64,
    expired: u64,
}

impl Ledger {
    fn paid(&mut self, order: &Order) {
        self.paid += order.pay_amount.0;
        self.paid_orders += 1;
        let day = order.paid_at.expect("a paid order has its time").0 / MS_PER_DAY;
        for line in &order.items {
            *self.sold.entry(line.product_id).or_default() += line.quantity;
            *self.sold_by_day.entry((day, line.product_id)).or_default() += line.quantity;
        }
    }

    /// The top products of the window ending on `day`: most units first, ties by lower id.
    fn top(&self, day: u64) -> Vec<(ProductId, u64)> {
        let mut units: BTreeMap<ProductId, u64> = BTreeMap::new();
        for (&(d, p), &n) in &self.sold_by_day {
            if d + WINDOW_DAYS > day && d <= day {
                *units.entry(p).or_default() += n;
            }
        }
        let mut top: Vec<_> = units.into_iter().filter(|&(_, n)| n > 0).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(TOP_COUNT);
        top
    }
}

/// What one order of the run does after it is placed.
enum Fate {
    Pay,
    Cancel,
    Expire,
}

async fn set_up(engine: &Engine, ledger: &mut Ledger) -> CouponId {
    let users: Vec<_> = (0..USERS)
        .map(|u| {
            let e = engine.clone();
            tokio::spawn(async move { e.create_user(&format!("u{u}"), None).await })
        })
        .collect();
    for t in users {
        t.await.unwrap().expect("user created");
    }
    for p in 0..PRODUCTS {
        let price = Krw(1_000 * (1 + p % 7));
        engine
            .create_product(&format!("product {p}"), price, STOCK, None)
            .await
            .expect("product created");
    }
    let campaign = engine
        .create_coupon(
            NewCoupon {
                name: "welcome".into(),
                discount: Discount::Fixed { amount: Krw(500) },
                quantity: USERS,
                expires_at: None,
                terms: Default::default(),
            },
            None,
        )
        .await
        .expect("campaign created")
        .id;
    let issues: Vec<_> = (1..=USERS)
        .map(|u| {
            let e = engine.clone();
            tokio::spawn(async move { e.issue_coupon(campaign, UserId(u), None).await })
        })
        .collect();
    for (u, t) in (1..=USERS).zip(issues) {
        let coupon = t.await.unwrap().expect("coupon issued");
        if u <= BUYERS {
            ledger.coupons.insert(UserId(u), coupon.id);
        }
    }
    ledger.charged += top_up(engine, 0).await;
    campaign
}

/// Charges every buyer; keyed by day, so each key is kept and then expires.
async fn top_up(engine: &Engine, day: u64) -> u64 {
    let tasks: Vec<_> = (1..=BUYERS)
        .map(|u| {
            let e = engine.clone();
            tokio::spawn(async move {
                e.charge(UserId(u), TOP_UP, key(&format!("top-up-{day}-{u}")))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("charged");
    }
    BUYERS * TOP_UP.0
}

/// One step of trade: orders placed at once, each then paid, cancelled or
/// left to expire.
async fn trade(engine: &Engine, rng: &mut Rng, ledger: &mut Ledger, week: u64) {
    let mut tasks = Vec::new();
    for _ in 0..ORDERS_PER_STEP {
        let user = UserId(1 + rng.below(BUYERS));
        // Each week has its own favourites, so the ranking moves.
        let hot = (week * 7 + rng.below(5)) % PRODUCTS;
        let product = if rng.below(2) == 0 {
            hot
        } else {
            rng.below(PRODUCTS)
        };
        let quantity = 1 + rng.below(3);
        let fate = match rng.below(20) {
            0..=14 => Fate::Pay,
            15..=16 => Fate::Cancel,
            _ => Fate::Expire,
        };
        let coupon = if rng.below(4) == 0 {
            ledger.coupons.remove(&user)
        } else {
            None
        };
        let e = engine.clone();
        let pay_key = key(&format!("pay-{}", rng.below(u64::MAX)));
        tasks.push(tokio::spawn(async move {
            let order = e
                .place_order(
                    place(user.0, &[(product + 1, quantity)], coupon.map(|c| c.0)),
                    None,
                )
                .await
                .expect("order placed");
            let outcome = match fate {
                Fate::Pay => e.pay_order(order.id, pay_key).await,
                Fate::Cancel => e.cancel_order(order.id, None).await,
                Fate::Expire => Ok(order),
            };
            (user, coupon, outcome.expect("paid or cancelled"))
        }));
    }
    for t in tasks {
        let (user, coupon, order) = t.await.unwrap();
        ledger.orders += 1;
        match order.status {
            OrderStatus::Paid => ledger.paid(&order),
            OrderStatus::Cancelled => {
                ledger.cancelled += 1;
                if let Some(c) = coupon {
                    ledger.coupons.insert(user, c);
                }
            }
            OrderStatus::Pending => ledger.pending.push((order.id, coupon.map(|c| (user, c)))),
            other => panic!("order {} ended {other:?}", order.id),
        }
    }
}

/// Moves the clock past the orders' expiry and expires them.
async fn expire(engine: &Engine, clock: &ManualClock, ledger: &mut Ledger) {
    clock.advance_ms(STEP_MS);
    let expired = engine.expire_due_orders().await.expect("expiry runs");
    assert_eq!(expired, ledger.pending.len(), "every pending order was due");
    for (id, coupon) in ledger.pending.drain(..) {
        let order = engine.order(id).await.expect("the order is there");
        assert_eq!(order.status, OrderStatus::Expired);
        if let Some((user, c)) = coupon {
            ledger.coupons.insert(user, c);
        }
        ledger.expired += 1;
    }
}

fn key_tables(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(commerce_engine::store::sled::KEYS_DIR))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tbl"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn three_weeks_of_trade_keep_state_exact_memory_bounded_and_replay_short() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clock = manual_clock();
    let rt = runtime();
    let mut ledger = Ledger::default();
    let mut rng = Rng(0x5eed_2026);
    let engine = start(&data, clock.clone());
    let campaign = rt.block_on(set_up(&engine, &mut ledger));
    let mut keys_in_memory_max = 0;
    for day in 0..DAYS {
        rt.block_on(async {
            if day > 0 {
                ledger.charged += top_up(&engine, day).await;
            }
            for _ in 0..STEPS_PER_DAY {
                trade(&engine, &mut rng, &mut ledger, day / 7).await;
                expire(&engine, &clock, &mut ledger).await;
                keys_in_memory_max = keys_in_memory_max.max(engine.metrics().idempotency_keys);
            }
            // The clock is at the start of the next day: rank the day just ended.
            clock.advance_ms(1);
            let today = clock.now().0 / MS_PER_DAY;
            let top = engine.refresh_stats().await.expect("ranking refreshed");
            let got: Vec<_> = top
                .items
                .iter()
                .map(|i| (i.product_id, i.sold_quantity))
                .collect();
            assert_eq!(got, ledger.top(today), "the ranking of day {today}");
        });
        assert!(
            key_tables(&data) <= KEY_GENERATIONS_MAX,
            "day {day}: {} key tables on disk",
            key_tables(&data)
        );
    }
    let metrics = engine.metrics();
    assert_eq!(
        metrics.snapshot_failures, 0,
        "every snapshot fitted the value limit"
    );
    assert!(metrics.snapshots > 0, "{metrics:?}");
    // Keys leave memory once a snapshot covers them: what is held is the
    // records since the last snapshot written, plus those of the one being
    // written, whose writing a loaded machine may stretch over more than
    // one interval. The run makes over 50,000 keys; held for good, they
    // would all show here.
    assert!(
        keys_in_memory_max <= KEYS_IN_MEMORY_MAX,
        "{keys_in_memory_max} keys held in memory: they leave once a snapshot covers them"
    );
    // A key of the first day has expired: the same request is new again.
    let before = rt.block_on(engine.balance(UserId(1))).unwrap().balance;
    let again = rt
        .block_on(engine.charge(UserId(1), TOP_UP, key("top-up-0-1")))
        .expect("charged anew");
    assert_eq!(again.balance, Krw(before.0 + TOP_UP.0));
    ledger.charged += TOP_UP.0;
    engine.shutdown();
    drop(engine);

    // Replay after the stop is bounded by the snapshot interval, whatever the history.
    let limits = Limits::API;
    let (world, report) = {
        let store = SledStore::open(&data).expect("the store reopens");
        recover_for_serving_under(&store, &limits).expect("it recovers with every invariant")
    };
    let batch = lifetime_config(&sink(&data)).journal.batch_records_max as u64;
    assert!(
        report.records_replayed <= SNAPSHOT_EVERY_RECORDS + batch,
        "{} records replayed after {} in all",
        report.records_replayed,
        report.last_seq
    );
    assert!(
        world.violations_under(&limits).is_empty(),
        "{:?}",
        world.violations_under(&limits)
    );
    // Money, stock and coupons conserved exactly.
    let balances: u64 = world.users.iter().map(|u| u.balance.0).sum();
    assert_eq!(
        balances + ledger.paid,
        ledger.charged,
        "balances = charges − payments"
    );
    for p in &world.products {
        let sold = ledger.sold.get(&p.id).copied().unwrap_or(0);
        assert_eq!((p.stock + sold, p.reserved), (STOCK, 0), "product {}", p.id);
        assert!(
            p.recent_sales.0.len() as u64 <= WINDOW_DAYS,
            "product {}: {:?}",
            p.id,
            p.recent_sales
        );
    }
    let c = &world.campaigns[campaign.index()];
    assert_eq!(c.issued.len(), USERS, "every coupon issued once");
    let available: usize = world.users[..BUYERS as usize]
        .iter()
        .map(|u| {
            u.coupons
                .iter()
                .filter(|c| c.state == CouponUse::Available)
                .count()
        })
        .sum();
    assert_eq!(
        available,
        ledger.coupons.len(),
        "coupons used = coupons of paid orders"
    );

    // Restarted, the engine holds what is live, not the history.
    let engine = start(&data, clock.clone());
    rt.block_on(async {
        for _ in 0..3 {
            engine.snapshot().await.expect("a snapshot");
        }
        assert_eq!(
            engine.orders_in_memory().await.unwrap(),
            0,
            "finished orders are archived"
        );
        assert_eq!(engine.user_order_ids_in_memory().await.unwrap(), 0);
        for u in 1..=BUYERS {
            let held = engine.history_in_memory(UserId(u)).await.unwrap();
            assert!(
                held <= 2 * HISTORY_CHUNK,
                "user {u} holds {held} history entries"
            );
        }
        assert!(engine.metrics().idempotency_keys <= KEYS_IN_MEMORY_MAX);
    });
    // Every paid order reached the data platform, once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while engine.outbox_pending() > 0 {
        assert!(std::time::Instant::now() < deadline, "the outbox drains");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    engine.shutdown();
    let delivered = std::fs::read_to_string(sink(&data)).expect("the sink file");
    let lines: std::collections::BTreeSet<&str> = delivered.lines().collect();
    assert_eq!(lines.len(), delivered.lines().count(), "no event twice");
    assert_eq!(
        lines.len() as u64,
        ledger.paid_orders,
        "one event per paid order"
    );
    assert!(ledger.orders == DAYS * STEPS_PER_DAY * ORDERS_PER_STEP);
    assert!(ledger.cancelled > 0 && ledger.expired > 0);
}
