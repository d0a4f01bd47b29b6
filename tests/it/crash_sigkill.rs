//! Crash tests with a real process: this test binary re-executes itself to
//! run `crash_worker`, a concurrent workload on a sled data dir that prints
//! one line per acknowledged operation, kills it with SIGKILL at a random
//! moment, recovers the dir and checks that every acknowledged effect is
//! there and that conservation is exact. Several rounds on one dir: each
//! worker continues from what the previous one left.
//!
//! The workload refunds paid orders (whole and by line, in several steps,
//! some on one order from two tasks at once) and orders products limited
//! per user, whose limits one task changes as it runs: after each kill no
//! refund is lost or doubled, money adds up with refunds, every refund's
//! event is delivered or pending exactly once, and no user holds more of a
//! limited product than its limit allowed ([`crate::crash_limits`]).
//!
//! Reproduce a run with `CRASH_SEED=<seed printed on failure>`.

use crate::crash_limits::{position, LimitTracker};
use crate::durability_support;
use crate::engine_support::Rng;

use commerce_engine::check::{Acknowledged, Expect};
use commerce_engine::domain::event::{Event, Record};
use commerce_engine::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderStatus};
use commerce_engine::domain::platform::{order_paid_id, order_refunded_id, PlatformEvent};
use commerce_engine::domain::product::ProductPatch;
use commerce_engine::domain::refund::{RefundLine, RefundRequest};
use commerce_engine::domain::rejection::Rejection;
use commerce_engine::domain::user::EntryKind;
use commerce_engine::domain::world::World;
use commerce_engine::engine::{
    DataPlatform, Engine, Error, NewCoupon, PageRequest, PlaceOrder, SystemClock,
};
use commerce_engine::store::codec::{decode_all, Kind};
use commerce_engine::store::outbox::inspect;
use commerce_engine::store::recovery::recover_store;
use commerce_engine::store::{SledStore, Store};
use durability_support::{items, key};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const USERS: u64 = 4;
/// Products 1..=PRODUCTS have no limit; the next LIMITED are limited per
/// user: the first from its creation, the second from a PATCH mid-run.
const PRODUCTS: u64 = 3;
const LIMITED: u64 = 2;
/// The first limited product's limit at creation.
const FIRST_LIMIT: u64 = 2;
const INITIAL_STOCK: u64 = 100_000;
const ROUNDS: u32 = 6;
const WORKER_TASKS: u64 = 24;

fn sink_path(dir: &Path) -> PathBuf {
    dir.join("data-platform.jsonl")
}

fn worker_config(dir: &Path) -> commerce_engine::engine::EngineConfig {
    let mut c = durability_support::config();
    // Snapshots (and trimming) happen often, so kills land during them too.
    c.journal.snapshot_every_records = 300;
    c.journal.snapshot_every_ms = 100;
    c.data_platform = DataPlatform::File(sink_path(dir));
    c.delivery_backoff_ms_min = 10;
    c
}

fn ack(line: String) {
    // One write per line: the parent reads whole lines only.
    println!("ACK {line}");
}

/// State shared by the worker's tasks: orders that may still be pending,
/// orders that may still be refunded (with their lines), coupons that may
/// still be available.
#[derive(Default)]
struct Shared {
    pending: Vec<OrderId>,
    paid: Vec<(OrderId, Vec<(u64, u64)>)>,
    coupons: Vec<(UserId, UserCouponId)>,
    campaigns: u64,
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(shared: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn lines_of(o: &Order) -> Vec<(u64, u64)> {
    o.items
        .iter()
        .map(|l| (l.product_id.0, l.quantity))
        .collect()
}

fn joined(lines: impl IntoIterator<Item = (u64, u64)>) -> String {
    let parts: Vec<String> = lines.into_iter().map(|(p, q)| format!("{p}:{q}")).collect();
    parts.join(",")
}

fn max_field(max: Option<u64>) -> String {
    max.map_or("-".into(), |m| m.to_string())
}

async fn setup(engine: &Engine, round: u32) {
    let k = |s: String| key(&format!("r{round}-setup-{s}"));
    for i in 1..=USERS {
        let u = engine
            .create_user(&format!("user {i}"), k(format!("user-{i}")))
            .await
            .unwrap();
        ack(format!("user key=r{round}-setup-user-{i} id={}", u.id));
    }
    for i in 1..=PRODUCTS {
        let p = engine
            .create_product(&format!("product {i}"), Krw(100 * i), INITIAL_STOCK, None)
            .await
            .unwrap();
        ack(format!("product id={}", p.id));
    }
    // The first limited product has its limit from the start; the second
    // sells without one until a PATCH sets it (its earlier units count too).
    for i in 1..=LIMITED {
        let max = (i == 1).then_some(FIRST_LIMIT);
        let p = engine
            .create_limited_product(&format!("limited {i}"), Krw(700), INITIAL_STOCK, max, None)
            .await
            .unwrap();
        ack(format!("product id={} max={}", p.id, max_field(max)));
    }
    let c = engine
        .create_coupon(
            NewCoupon {
                name: "first".into(),
                discount: commerce_engine::domain::coupon::Discount::Percent { percent: 10 },
                quantity: 3,
                expires_at: None,
                terms: Default::default(),
            },
            None,
        )
        .await
        .unwrap();
    ack(format!("coupon id={} quantity=3", c.id));
}

fn ack_placed(k: &str, o: &Order) {
    let coupon = o.user_coupon_id.map_or("-".into(), |c| c.to_string());
    ack(format!(
        "place key={k} order={} user={} lines={} coupon={coupon}",
        o.id,
        o.user_id,
        joined(lines_of(o))
    ));
}

/// Places an order of a limited product, saying so before it asks.
async fn place_limited(
    engine: Engine,
    user: UserId,
    product: u64,
    quantity: u64,
    k: String,
    shared: SharedRef,
) {
    println!("TRY place key={k}");
    let order = PlaceOrder {
        user_id: user,
        source: items(&[(product, quantity)]),
        user_coupon_id: None,
    };
    if let Ok(o) = engine.place_order(order, key(&k)).await {
        ack_placed(&k, &o);
        lock(&shared).pending.push(o.id);
    }
}

/// Some units of a paid order: everything left (no items) a third of the
/// time, else one or two of its lines, each in part or whole (asking more
/// than is left is refused, and changes nothing).
fn refund_request(rng: &mut Rng, lines: &[(u64, u64)]) -> RefundRequest {
    if rng.range(0, 2) == 0 {
        return RefundRequest::default();
    }
    let first = rng.range(0, lines.len() as u64 - 1) as usize;
    let take = if lines.len() > 1 && rng.range(0, 2) == 0 {
        2
    } else {
        1
    };
    let items = (0..take)
        .map(|i| {
            let (p, q) = lines[(first + i) % lines.len()];
            RefundLine {
                product_id: ProductId(p),
                quantity: rng.range(1, q),
            }
        })
        .collect();
    RefundRequest {
        items: Some(items),
        reason: (rng.range(0, 1) == 0).then(|| "damaged".to_owned()),
    }
}

async fn refund(engine: Engine, id: OrderId, request: RefundRequest, k: String, shared: SharedRef) {
    let done = match engine.refund_order(id, request, key(&k)).await {
        Ok(o) => {
            let r = o.refunds.last().expect("a refunded order holds its refund");
            ack(format!(
                "refund key={k} order={id} n={} amount={} items={}",
                o.refunds.len(),
                r.amount.0,
                joined(r.items.iter().map(|l| (l.product_id.0, l.quantity)))
            ));
            o.status == OrderStatus::Refunded
        }
        Err(Error::Rejected(Rejection::OrderNotRefundable(_))) => true,
        Err(_) => false,
    };
    if done {
        lock(&shared).paid.retain(|(o, _)| *o != id);
    }
}

async fn worker_task(engine: Engine, round: u32, task: u64, seed: u64, shared: SharedRef) {
    let mut rng = Rng::new(seed ^ (task << 32) ^ u64::from(round));
    let lock = || lock(&shared);
    for n in 0.. {
        let k = format!("r{round}-t{task}-n{n}");
        let user = UserId(rng.range(1, USERS));
        match rng.range(0, 99) {
            0..=24 => {
                let amount = rng.range(1, 50_000);
                if let Ok(b) = engine.charge(user, Krw(amount), key(&k)).await {
                    ack(format!(
                        "charge key={k} user={user} amount={amount} balance={}",
                        b.balance.0
                    ));
                }
            }
            25..=44 => {
                let mut lines = vec![(rng.range(1, PRODUCTS), rng.range(1, 3))];
                let other = rng.range(1, PRODUCTS);
                if other != lines[0].0 && rng.range(0, 1) == 0 {
                    lines.push((other, rng.range(1, 3)));
                }
                let coupon = if rng.range(0, 3) == 0 {
                    let mut s = lock();
                    s.coupons
                        .iter()
                        .position(|(u, _)| *u == user)
                        .map(|i| s.coupons.swap_remove(i).1)
                } else {
                    None
                };
                let order = PlaceOrder {
                    user_id: user,
                    source: items(&lines),
                    user_coupon_id: coupon,
                };
                if let Ok(o) = engine.place_order(order, key(&k)).await {
                    ack_placed(&k, &o);
                    lock().pending.push(o.id);
                }
            }
            45..=51 => {
                // One to three orders of one user and limited product at
                // once, racing each other (and the other tasks) for the limit.
                let product = rng.range(PRODUCTS + 1, PRODUCTS + LIMITED);
                let burst = rng.range(1, 3);
                let runs: Vec<_> = (0..burst)
                    .map(|b| {
                        let quantity = rng.range(1, 2);
                        tokio::spawn(place_limited(
                            engine.clone(),
                            user,
                            product,
                            quantity,
                            format!("{k}-{b}"),
                            shared.clone(),
                        ))
                    })
                    .collect();
                for run in runs {
                    let _ = run.await;
                }
            }
            52..=66 => {
                let Some(id) = take_pending(&mut rng, &mut lock()) else {
                    tokio::task::yield_now().await;
                    continue;
                };
                match engine.pay_order(id, key(&k)).await {
                    Ok(o) => {
                        ack(format!(
                            "pay key={k} order={} amount={}",
                            o.id, o.pay_amount.0
                        ));
                        lock().paid.push((o.id, lines_of(&o)));
                    }
                    Err(Error::Rejected(Rejection::InsufficientBalance { .. })) => {
                        ack(format!("payfail key={k} order={id}"))
                    }
                    Err(_) => {}
                }
            }
            67..=72 => {
                let Some(id) = take_pending(&mut rng, &mut lock()) else {
                    tokio::task::yield_now().await;
                    continue;
                };
                if let Ok(o) = engine.cancel_order(id, key(&k)).await {
                    ack(format!("cancel key={k} order={}", o.id));
                }
            }
            73..=84 => {
                // One refund, or (a quarter of the time) two of the same
                // order at once from two tasks.
                let Some((id, lines)) = pick_paid(&mut rng, &lock()) else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let racing = rng.range(0, 3) == 0;
                let runs: Vec<_> = (0..if racing { 2 } else { 1 })
                    .map(|r| {
                        let request = refund_request(&mut rng, &lines);
                        tokio::spawn(refund(
                            engine.clone(),
                            id,
                            request,
                            format!("{k}-{r}"),
                            shared.clone(),
                        ))
                    })
                    .collect();
                for run in runs {
                    let _ = run.await;
                }
            }
            85..=92 => {
                let campaigns = lock().campaigns.max(1);
                let campaign = CouponId(rng.range(1, campaigns));
                if let Ok(c) = engine.issue_coupon(campaign, user, key(&k)).await {
                    ack(format!(
                        "issue key={k} coupon={campaign} user={user} user_coupon={}",
                        c.id
                    ));
                    lock().coupons.push((user, c.id));
                }
            }
            93..=97 if task == 0 => {
                // One task changes the limits, one PATCH at a time, so each
                // took effect between its asking and its answer.
                let product = rng.range(PRODUCTS + 1, PRODUCTS + LIMITED);
                let max = rng.range(1, 3);
                println!("TRY limit key={k} product={product} max={max}");
                let patch = ProductPatch {
                    max_per_user: Some(Some(max)),
                    ..ProductPatch::default()
                };
                if engine
                    .update_product(ProductId(product), patch, key(&k))
                    .await
                    .is_ok()
                {
                    ack(format!("limit key={k} product={product} max={max}"));
                }
            }
            93..=97 => {
                let product = ProductId(rng.range(1, PRODUCTS + LIMITED));
                let quantity = rng.range(1, 20);
                if engine.restock(product, quantity, key(&k)).await.is_ok() {
                    ack(format!(
                        "restock key={k} product={product} quantity={quantity}"
                    ));
                }
            }
            _ => {
                let quantity = rng.range(1, 3);
                let new = NewCoupon {
                    name: format!("campaign {k}"),
                    discount: commerce_engine::domain::coupon::Discount::Fixed {
                        amount: Krw(rng.range(1, 300)),
                    },
                    quantity,
                    expires_at: None,
                    terms: Default::default(),
                };
                if let Ok(c) = engine.create_coupon(new, key(&k)).await {
                    ack(format!("coupon key={k} id={} quantity={quantity}", c.id));
                    let mut s = lock();
                    s.campaigns = s.campaigns.max(c.id.0);
                }
            }
        }
    }
}

/// A paid order that may still be refunded; it stays for more refunds.
fn pick_paid(rng: &mut Rng, s: &Shared) -> Option<(OrderId, Vec<(u64, u64)>)> {
    if s.paid.is_empty() {
        return None;
    }
    let i = rng.range(0, s.paid.len() as u64 - 1) as usize;
    Some(s.paid[i].clone())
}

fn take_pending(rng: &mut Rng, s: &mut Shared) -> Option<OrderId> {
    if s.pending.is_empty() {
        return None;
    }
    let i = rng.range(0, s.pending.len() as u64 - 1) as usize;
    Some(s.pending.swap_remove(i))
}

/// The child process: runs the workload on `CRASH_DIR` until it is killed.
#[test]
#[ignore = "run in a child process by acknowledged_effects_survive_sigkill"]
fn crash_worker() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let Ok(dir) = std::env::var("CRASH_DIR") else {
        return;
    };
    // The test harness has printed `test crash_worker ... ` without a
    // newline: end that line so the first acknowledgement stands alone.
    println!();
    let dir = PathBuf::from(dir);
    let round: u32 = std::env::var("CRASH_ROUND").unwrap().parse().unwrap();
    let seed: u64 = std::env::var("CRASH_SEED").unwrap().parse().unwrap();
    let store = SledStore::open(&dir).expect("the data dir opens");
    let engine =
        crate::engine_support::start(worker_config(&dir), Box::new(store), Arc::new(SystemClock));
    let rt = durability_support::runtime();
    rt.block_on(async {
        if engine.metrics().users == 0 {
            setup(&engine, round).await;
        }
        let mut shared = Shared {
            campaigns: engine.metrics().campaigns,
            ..Shared::default()
        };
        // Orders of earlier rounds are paid, cancelled or refunded too.
        for u in 1..=USERS {
            let page = engine
                .user_orders(UserId(u), PageRequest::first(100))
                .await
                .unwrap();
            for o in &page.items {
                match o.status {
                    OrderStatus::Pending => shared.pending.push(o.id),
                    OrderStatus::Paid | OrderStatus::PartiallyRefunded => {
                        shared.paid.push((o.id, lines_of(o)))
                    }
                    _ => {}
                }
            }
        }
        println!("READY");
        let shared = Arc::new(Mutex::new(shared));
        for task in 0..WORKER_TASKS {
            tokio::spawn(worker_task(
                engine.clone(),
                round,
                task,
                seed,
                shared.clone(),
            ));
        }
        // The parent kills this process long before; never outlive a lost parent.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    std::process::exit(3);
}

// ---------------------------------------------------------------- parent

/// An acknowledged order: id, user, (product, quantity) lines, user coupon.
type Placed = (OrderId, UserId, Vec<(u64, u64)>, Option<u64>);

/// An acknowledged refund: the order, its number among the order's
/// refunds (from 1), the amount credited and the units.
struct AckedRefund {
    order: OrderId,
    number: usize,
    amount: u64,
    items: Vec<(u64, u64)>,
}

/// Every acknowledged operation, across rounds.
#[derive(Default)]
struct Acks {
    keys: Vec<String>,
    /// Users, products (stock and restocks), campaigns, coupon issues and
    /// order statuses, for the shared check; the rest below is what only
    /// this test checks.
    acked: Acknowledged,
    charges: Vec<(UserId, u64, u64)>,
    placed: Vec<Placed>,
    paid: Vec<(OrderId, u64)>,
    issued: Vec<(CouponId, UserId, UserCouponId)>,
    refunds: Vec<AckedRefund>,
    limit_patches: usize,
    limits: LimitTracker,
    count: usize,
}

fn fields(line: &str) -> HashMap<&str, &str> {
    line.split(' ')
        .skip(1)
        .filter_map(|f| f.split_once('='))
        .collect()
}

fn parse_lines(s: &str) -> Vec<(u64, u64)> {
    s.split(',')
        .map(|l| {
            let (p, q) = l.split_once(':').unwrap();
            (p.parse().unwrap(), q.parse().unwrap())
        })
        .collect()
}

impl Acks {
    /// Takes in one line of a round's output, at position `at`.
    fn read(&mut self, line: &str, at: u64) {
        if let Some(a) = line.strip_prefix("ACK ") {
            self.add(a, at);
        } else if let Some(t) = line.strip_prefix("TRY ") {
            let f = fields(t);
            match t.split(' ').next().unwrap() {
                "place" => self.limits.place_asked(f["key"], at),
                "limit" => self.limits.patch_asked(
                    ProductId(f["product"].parse().unwrap()),
                    f["max"].parse().ok(),
                    at,
                ),
                other => panic!("unknown request {other}: {t}"),
            }
        }
    }

    fn add(&mut self, line: &str, at: u64) {
        let f = fields(line);
        let num = |name: &str| -> u64 {
            f.get(name)
                .unwrap_or_else(|| panic!("{name} in {line}"))
                .parse()
                .unwrap_or_else(|_| panic!("{name} in {line}"))
        };
        if let Some(k) = f.get("key") {
            self.keys.push((*k).to_owned());
        }
        self.count += 1;
        match line.split(' ').next().unwrap() {
            "user" => {
                self.acked.user(UserId(num("id")));
            }
            "product" => {
                self.acked.product(ProductId(num("id"))).stocked += INITIAL_STOCK;
                if let Some(max) = f.get("max") {
                    self.limits
                        .created(ProductId(num("id")), max.parse().ok(), at);
                }
            }
            "coupon" => self.acked.coupon(CouponId(num("id"))).quantity = num("quantity"),
            "charge" => {
                let (user, amount) = (UserId(num("user")), num("amount"));
                self.acked.user(user).charged += amount;
                self.charges.push((user, amount, num("balance")));
            }
            "place" => {
                let coupon = f["coupon"].parse().ok();
                let id = OrderId(num("order"));
                self.limits.place_answered(f["key"], id, at);
                self.placed
                    .push((id, UserId(num("user")), parse_lines(f["lines"]), coupon));
            }
            "pay" => {
                self.acked.order(OrderId(num("order")), Expect::WAS_PAID);
                self.paid.push((OrderId(num("order")), num("amount")));
            }
            "payfail" => self
                .acked
                .order(OrderId(num("order")), Expect::only(OrderStatus::Failed)),
            "cancel" => self
                .acked
                .order(OrderId(num("order")), Expect::only(OrderStatus::Cancelled)),
            "issue" => {
                let coupon = CouponId(num("coupon"));
                // Issues of a campaign whose own answer a kill cut off are left out.
                if let Some(c) = self.acked.coupons.get_mut(&coupon) {
                    c.issued += 1;
                }
                let user_coupon = UserCouponId(num("user_coupon"));
                self.issued.push((coupon, UserId(num("user")), user_coupon));
            }
            "restock" => self.acked.product(ProductId(num("product"))).stocked += num("quantity"),
            "refund" => self.refunds.push(AckedRefund {
                order: OrderId(num("order")),
                number: num("n") as usize,
                amount: num("amount"),
                items: parse_lines(f["items"]),
            }),
            "limit" => {
                self.limit_patches += 1;
                self.limits
                    .patch_answered(ProductId(num("product")), Some(num("max")), at);
            }
            other => panic!("unknown acknowledgement {other}: {line}"),
        }
    }
}

/// Whether the order was paid (refunded since or not).
fn was_paid(status: OrderStatus) -> bool {
    matches!(
        status,
        OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
    )
}

/// Checks that every acknowledged effect is in `w` and that money and
/// stock add up exactly.
fn check(w: &World, store: &SledStore, acks: &Acks) {
    // A kill leaves outcomes unknown: "at least" is demanded.
    let acked = Acknowledged {
        unknown: 1,
        ..acks.acked.clone()
    };
    let found = acked.check_world(w);
    assert!(found.is_empty(), "{found:?}");
    for k in &acks.keys {
        assert!(
            durability_support::stored_key(store, w, k).is_some(),
            "acknowledged key {k} is stored"
        );
    }
    let mut charges_acked: HashMap<UserId, usize> = HashMap::new();
    for (user, amount, balance) in &acks.charges {
        *charges_acked.entry(*user).or_default() += 1;
        let u = &w.users[user.index()];
        assert!(
            u.history.iter().any(|e| e.kind == EntryKind::Charge
                && e.amount.0 == *amount
                && e.balance_after.0 == *balance),
            "charge of {amount} to user {user} (balance after {balance}) is in the history"
        );
    }
    for (user, acked) in charges_acked {
        let held = w.users[user.index()]
            .history
            .iter()
            .filter(|e| e.kind == EntryKind::Charge)
            .count();
        assert!(
            held >= acked,
            "user {user}: {held} charges, {acked} acknowledged"
        );
    }
    for (id, user, lines, coupon) in &acks.placed {
        let o = w
            .orders
            .get(id)
            .unwrap_or_else(|| panic!("order {id} exists"));
        assert_eq!(o.user_id, *user);
        let got: Vec<(u64, u64)> = o.quantities().map(|(p, q)| (p.0, q)).collect();
        assert_eq!(&got, lines, "order {id} lines");
        assert_eq!(o.user_coupon_id.map(|c| c.0), *coupon);
    }
    for (id, amount) in &acks.paid {
        let o = &w.orders[id];
        assert_eq!(o.pay_amount.0, *amount);
        let u = &w.users[o.user_id.index()];
        assert!(
            u.history
                .iter()
                .any(|e| e.kind == EntryKind::Payment && e.order_id == Some(*id)),
            "payment of order {id} is in the history"
        );
    }
    for (coupon, user, uc) in &acks.issued {
        assert!(w.campaigns[coupon.index()].issued.contains(user.0));
        let held = w.users[user.index()].coupons.iter().find(|c| c.id == *uc);
        assert_eq!(held.map(|c| c.coupon_id), Some(*coupon), "user coupon {uc}");
    }
    for r in &acks.refunds {
        let o = &w.orders[&r.order];
        let held = o.refunds.get(r.number - 1).map(|h| {
            let items: Vec<(u64, u64)> = h
                .items
                .iter()
                .map(|l| (l.product_id.0, l.quantity))
                .collect();
            (h.amount.0, items)
        });
        assert_eq!(
            held,
            Some((r.amount, r.items.clone())),
            "acknowledged refund {} of order {} is in the order",
            r.number,
            r.order
        );
    }
    check_refunds(w);
    check_payments(w);
    acks.limits.check(w);
}

/// Every order's refunds: within what it paid and holds, its status
/// following from them, and each one credited to its user's history
/// exactly once, in the same order.
fn check_refunds(w: &World) {
    let mut credited: HashMap<OrderId, Vec<u64>> = HashMap::new();
    for u in &w.users {
        for e in u.history.iter().filter(|e| e.kind == EntryKind::Refund) {
            let id = e.order_id.expect("a refund names its order");
            assert_eq!(
                w.orders.get(&id).map(|o| o.user_id),
                Some(u.id),
                "refund of order {id} credited to user {}",
                u.id
            );
            credited.entry(id).or_default().push(e.amount.0);
        }
    }
    for o in w.orders.values() {
        let amounts: Vec<u64> = o.refunds.iter().map(|r| r.amount.0).collect();
        assert_eq!(
            credited.remove(&o.id).unwrap_or_default(),
            amounts,
            "order {}: each refund credited once",
            o.id
        );
        let sum: u64 = amounts.iter().sum();
        assert_eq!(o.refunded_amount().0, sum, "order {} refunded amount", o.id);
        assert!(
            sum <= o.pay_amount.0,
            "order {} refunded {sum} of {} paid",
            o.id,
            o.pay_amount.0
        );
        for r in &o.refunds {
            for l in &r.items {
                assert!(
                    o.items.iter().any(|i| i.product_id == l.product_id),
                    "order {}: refunded product {} is in it",
                    o.id,
                    l.product_id
                );
            }
        }
        let left: u64 = o
            .items
            .iter()
            .map(|l| {
                let refunded = o.refunded_units(l.product_id);
                assert!(
                    refunded <= l.quantity,
                    "order {}: {refunded} of {} units of product {} refunded",
                    o.id,
                    l.quantity,
                    l.product_id
                );
                l.quantity - refunded
            })
            .sum();
        let expected = match (o.refunds.is_empty(), left) {
            (true, _) => o.status,
            (false, 0) => OrderStatus::Refunded,
            (false, _) => OrderStatus::PartiallyRefunded,
        };
        assert_eq!(o.status, expected, "order {} status", o.id);
        if o.status == OrderStatus::Refunded {
            assert_eq!(sum, o.pay_amount.0, "order {} refunded whole", o.id);
        }
    }
    assert!(credited.is_empty(), "refunds of no order: {credited:?}");
}

/// Every user's payments are exactly what their paid orders cost (the
/// balance against its history, and stock against the orders, are
/// invariants of [`World::violations`]; refunds are [`check_refunds`]'s).
fn check_payments(w: &World) {
    let mut paid_by_user: HashMap<UserId, u64> = HashMap::new();
    for o in w.orders.values().filter(|o| was_paid(o.status)) {
        *paid_by_user.entry(o.user_id).or_default() += o.pay_amount.0;
    }
    for u in &w.users {
        let payments: u64 = u
            .history
            .iter()
            .filter(|e| e.kind == EntryKind::Payment)
            .map(|e| e.amount.0)
            .sum();
        let paid = paid_by_user.get(&u.id).copied().unwrap_or(0);
        assert_eq!(payments, paid, "user {} payments vs paid orders", u.id);
    }
}

/// The id of every event the world's orders give the data platform: each
/// paid order's payment, each refund.
fn events_of(w: &World) -> HashSet<String> {
    let mut ids = HashSet::new();
    for o in w.orders.values().filter(|o| was_paid(o.status)) {
        ids.insert(order_paid_id(o.id));
        for n in 1..=o.refunds.len() {
            ids.insert(order_refunded_id(o.id, n as u32));
        }
    }
    ids
}

/// Checks a sink line against the order it tells of; answers its event id.
fn sink_event(w: &World, line: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(line).expect("a JSON line");
    let id = v["event_id"].as_str().expect("an event id").to_owned();
    match v["type"].as_str() {
        Some("order_paid") => {
            let order = v["order"]["id"].as_u64().unwrap();
            assert_eq!(id, order_paid_id(OrderId(order)));
        }
        Some("order_refunded") => {
            let order = OrderId(v["order_id"].as_u64().unwrap());
            let n = id
                .rsplit('-')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("a refund's number in {id}"));
            assert_eq!(id, order_refunded_id(order, n as u32));
            let r = w
                .orders
                .get(&order)
                .and_then(|o| o.refunds.get(n.wrapping_sub(1)))
                .unwrap_or_else(|| panic!("{id} tells of a refund the order holds"));
            assert_eq!(v["amount"].as_u64(), Some(r.amount.0), "{id} amount");
            let items: Vec<RefundLine> =
                serde_json::from_value(v["items"].clone()).expect("refund items");
            assert_eq!(items, r.items, "{id} items");
        }
        other => panic!("an event of type {other:?}"),
    }
    id
}

/// Event ids of the refunds in the journal records above `from`, where a
/// start derives them again (`inspect` lists only the payments there).
fn rederivable_refunds(store: &SledStore, from: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for (first, frames) in store.journal_after(from).expect("the journal reads") {
        let records: Vec<Record> = decode_all(Kind::Record, &frames).expect("journal records");
        for (i, r) in records.into_iter().enumerate() {
            if first + i as u64 <= from {
                continue;
            }
            if let Event::OrderRefunded { order } = r.event {
                ids.push(order_refunded_id(order.id, order.refunds.len() as u32));
            }
        }
    }
    ids
}

/// The JSON-lines sink, up to the length recorded with the last settled
/// write, holds each delivered event (payment or refund) exactly once;
/// every event of the recovered orders is either there or still pending
/// in the outbox (stored in a block, or in the journal above the outbox's
/// watermark, where a start derives it again), never both, and nothing
/// else is.
fn check_sink(w: &World, store: &SledStore, snapshot_seq: u64, dir: &Path) {
    let bytes = std::fs::read(sink_path(dir)).unwrap_or_default();
    let outbox = inspect(store, snapshot_seq).expect("the outbox reads");
    let recorded = outbox.state.file_len.unwrap_or(0) as usize;
    assert!(bytes.len() >= recorded, "the sink holds what was recorded");
    let mut delivered = HashSet::new();
    for line in bytes[..recorded]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let id = sink_event(w, line);
        assert!(delivered.insert(id.clone()), "{id} delivered twice");
    }
    let mut pending = HashSet::new();
    let from = outbox.state.watermark.max(snapshot_seq);
    let stored = outbox.pending.iter().map(PlatformEvent::event_id);
    let derived = outbox.rederivable.iter().map(|id| order_paid_id(*id));
    for id in stored
        .chain(derived)
        .chain(rederivable_refunds(store, from))
    {
        assert!(pending.insert(id.clone()), "{id} pending twice");
    }
    assert_eq!(
        outbox.state.delivered,
        delivered.len() as u64,
        "settled count"
    );
    let expected = events_of(w);
    for id in &expected {
        let (d, p) = (delivered.contains(id), pending.contains(id));
        assert!(!(d && p), "{id} is delivered and still pending");
        assert!(d || p, "{id} is in the sink or the outbox");
    }
    for id in delivered.iter().chain(&pending) {
        assert!(expected.contains(id), "{id} tells of nothing recovered");
    }
}

/// After the last round: an engine started on the dir delivers what was
/// pending, and the sink then holds every event of the recovered orders,
/// refunds included, each exactly once (lines a kill left unrecorded were
/// cut off and written again).
fn drain_sink(dir: &Path, w: &World) {
    let store = SledStore::open(dir).expect("the data dir opens");
    let engine =
        crate::engine_support::start(worker_config(dir), Box::new(store), Arc::new(SystemClock));
    crate::platform_sink::wait_until("the outbox is delivered", || engine.outbox_pending() == 0);
    engine.shutdown();
    drop(engine);
    let bytes = std::fs::read(sink_path(dir)).unwrap_or_default();
    let mut seen = HashSet::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let id = sink_event(w, line);
        assert!(seen.insert(id.clone()), "{id} is in the sink twice");
    }
    let expected = events_of(w);
    let mut missing: Vec<&String> = expected.difference(&seen).collect();
    missing.sort();
    assert!(missing.is_empty(), "events never delivered: {missing:?}");
    assert_eq!(seen.len(), expected.len(), "the sink tells of nothing else");
}

fn spawn_worker(dir: &Path, round: u32, seed: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_sigkill::crash_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CRASH_DIR", dir)
        .env("CRASH_ROUND", round.to_string())
        .env("CRASH_SEED", seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-execute the test binary")
}

/// Reads whole lines of the child's stdout; a line cut by the kill is dropped.
fn read_lines(out: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) if buf.ends_with(b"\n") => {
                    let _ = tx.send(String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned());
                }
                Ok(_) => return,
            }
        }
    });
}

/// Runs one worker round and returns its acknowledgement lines.
fn run_round(dir: &Path, round: u32, seed: u64, rng: &mut Rng) -> Vec<String> {
    let mut child = spawn_worker(dir, round, seed);
    let (tx, rx) = mpsc::channel();
    read_lines(child.stdout.take().unwrap(), tx);
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let spawned = Instant::now();
    // Most rounds are killed during the workload; every third one at any
    // moment from the start, recovery and setup included (never the first:
    // the workload needs its users and products).
    let from_start = round % 3 == 2;
    let delay = Duration::from_millis(if from_start {
        rng.range(0, 2_500)
    } else {
        rng.range(50, 1_500)
    });
    let mut lines = Vec::new();
    let mut ready = None;
    loop {
        let now = Instant::now();
        let deadline = match ready {
            Some(at) => at + delay,
            None if from_start => spawned + delay,
            None => spawned + Duration::from_secs(30),
        };
        if now >= deadline {
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(l) if l == "READY" => ready = Some(Instant::now()),
            Ok(l) => lines.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = child.wait().unwrap();
    let errors = errors.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "round {round} (seed {seed}): the worker ended by itself ({status}):\n{errors}"
    );
    assert!(
        ready.is_some() || from_start,
        "round {round} (seed {seed}) never got ready:\n{errors}"
    );
    // Lines still in the pipe were written before the kill: they count.
    lines.extend(rx.iter());
    lines
}

/// A worker killed with SIGKILL at random moments, several rounds on one
/// sled dir: every acknowledged effect (refunds and limit changes among
/// them) survives, money and stock add up, no purchase limit is exceeded,
/// and every payment and refund reaches the data platform's sink.
#[test]
fn acknowledged_effects_survive_sigkill() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed {seed} (set CRASH_SEED to replay the kill times)");
    let tmp = tempfile::tempdir().unwrap();
    // CRASH_DATA_DIR=<new dir> keeps the data for a look after a failure.
    let dir = std::env::var_os("CRASH_DATA_DIR").map_or(tmp.path().to_path_buf(), PathBuf::from);
    let mut rng = Rng::new(seed);
    let mut acks = Acks::default();
    let mut last = None;
    for round in 0..ROUNDS {
        let lines = run_round(&dir, round, seed, &mut rng);
        let before = acks.count;
        for (i, l) in lines.iter().enumerate() {
            acks.read(l, position(round, i));
        }
        let store = SledStore::open(&dir)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): sled reopens: {e}"));
        let (world, report) = recover_store(&store)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): recovery: {e}"));
        acks.limits.round_ended(round, &world, &store);
        eprintln!(
            "round {round}: {} acknowledged ({} in all), {} orders, {} refunds, recovered {report:?}",
            acks.count - before,
            acks.count,
            world.orders.len(),
            world.orders.values().map(|o| o.refunds.len()).sum::<usize>(),
        );
        check(&world, &store, &acks);
        check_sink(&world, &store, report.snapshot_seq, &dir);
        drop(store);
        last = Some(world);
    }
    drain_sink(&dir, &last.expect("a round ran"));
    let steps = acks.refunds.iter().filter(|r| r.number > 1).count();
    assert!(
        acks.paid.len() >= 10
            && acks.charges.len() >= 10
            && acks.placed.len() >= 10
            && acks.refunds.len() >= 10
            && steps >= 3
            && acks.limits.orders_seen() >= 10
            && acks.limit_patches >= 1,
        "the workload ran (seed {seed}): {} paid, {} charges, {} placed, {} refunds \
         ({steps} after another of the same order), {} orders of limited products, {} limit changes",
        acks.paid.len(),
        acks.charges.len(),
        acks.placed.len(),
        acks.refunds.len(),
        acks.limits.orders_seen(),
        acks.limit_patches,
    );
}
