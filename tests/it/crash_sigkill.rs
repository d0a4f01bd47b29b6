//! Crash tests with a real process: this test binary re-executes itself to
//! run `crash_worker`, a concurrent workload on a sled data dir that prints
//! one line per acknowledged operation, kills it with SIGKILL at a random
//! moment, recovers the dir and checks that every acknowledged effect is
//! there and that conservation is exact. Several rounds on one dir: each
//! worker continues from what the previous one left.
//!
//! Reproduce a run with `CRASH_SEED=<seed printed on failure>`.

use crate::durability_support;

use commerce_engine::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::OrderStatus;
use commerce_engine::domain::platform::PlatformEvent;
use commerce_engine::domain::rejection::Rejection;
use commerce_engine::domain::user::EntryKind;
use commerce_engine::domain::world::World;
use commerce_engine::engine::{
    DataPlatform, Engine, Error, NewCoupon, PageRequest, PlaceOrder, SystemClock,
};
use commerce_engine::store::outbox::inspect;
use commerce_engine::store::recovery::recover_store;
use commerce_engine::store::SledStore;
use durability_support::{items, key};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const USERS: u64 = 4;
const PRODUCTS: u64 = 3;
const INITIAL_STOCK: u64 = 100_000;
const ROUNDS: u32 = 6;
const WORKER_TASKS: u64 = 24;

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

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
/// coupons that may still be available.
#[derive(Default)]
struct Shared {
    pending: Vec<OrderId>,
    coupons: Vec<(UserId, UserCouponId)>,
    campaigns: u64,
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

async fn worker_task(engine: Engine, round: u32, task: u64, seed: u64, shared: Arc<Mutex<Shared>>) {
    let mut rng = Rng::new(seed ^ (task << 32) ^ u64::from(round));
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    for n in 0.. {
        let k = format!("r{round}-t{task}-n{n}");
        let user = UserId(rng.range(1, USERS));
        match rng.range(0, 99) {
            0..=29 => {
                let amount = rng.range(1, 50_000);
                if let Ok(b) = engine.charge(user, Krw(amount), key(&k)).await {
                    ack(format!(
                        "charge key={k} user={user} amount={amount} balance={}",
                        b.balance.0
                    ));
                }
            }
            30..=54 => {
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
                    let lines: Vec<String> = o
                        .items
                        .iter()
                        .map(|l| format!("{}:{}", l.product_id, l.quantity))
                        .collect();
                    let coupon = o.user_coupon_id.map_or("-".into(), |c| c.to_string());
                    ack(format!(
                        "place key={k} order={} user={} lines={} coupon={coupon}",
                        o.id,
                        o.user_id,
                        lines.join(",")
                    ));
                    lock().pending.push(o.id);
                }
            }
            55..=74 => {
                let Some(id) = take_pending(&mut rng, &mut lock()) else {
                    tokio::task::yield_now().await;
                    continue;
                };
                match engine.pay_order(id, key(&k)).await {
                    Ok(o) => ack(format!(
                        "pay key={k} order={} amount={}",
                        o.id, o.pay_amount.0
                    )),
                    Err(Error::Rejected(Rejection::InsufficientBalance { .. })) => {
                        ack(format!("payfail key={k} order={id}"))
                    }
                    Err(_) => {}
                }
            }
            75..=84 => {
                let Some(id) = take_pending(&mut rng, &mut lock()) else {
                    tokio::task::yield_now().await;
                    continue;
                };
                if let Ok(o) = engine.cancel_order(id, key(&k)).await {
                    ack(format!("cancel key={k} order={}", o.id));
                }
            }
            85..=94 => {
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
            95..=97 => {
                let product = ProductId(rng.range(1, PRODUCTS));
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
    let engine = Engine::start(worker_config(&dir), Box::new(store), Arc::new(SystemClock))
        .expect("the engine recovers the data dir");
    let rt = durability_support::runtime();
    rt.block_on(async {
        if engine.metrics().users == 0 {
            setup(&engine, round).await;
        }
        let mut shared = Shared {
            campaigns: engine.metrics().campaigns,
            ..Shared::default()
        };
        // Pending orders of earlier rounds are paid or cancelled too.
        for u in 1..=USERS {
            let page = engine
                .user_orders(UserId(u), PageRequest::first(100))
                .await
                .unwrap();
            shared.pending.extend(
                page.items
                    .iter()
                    .filter(|o| o.status == OrderStatus::Pending)
                    .map(|o| o.id),
            );
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

/// Every acknowledged operation, across rounds.
#[derive(Default)]
struct Acks {
    keys: Vec<String>,
    users: u64,
    products: u64,
    campaigns: BTreeMap<u64, u64>,
    charges: Vec<(UserId, u64, u64)>,
    placed: Vec<Placed>,
    paid: Vec<(OrderId, u64)>,
    failed: Vec<OrderId>,
    cancelled: Vec<OrderId>,
    issued: Vec<(CouponId, UserId, UserCouponId)>,
    restocked: HashMap<ProductId, u64>,
    count: usize,
}

fn fields(line: &str) -> HashMap<&str, &str> {
    line.split(' ')
        .skip(1)
        .filter_map(|f| f.split_once('='))
        .collect()
}

impl Acks {
    fn add(&mut self, line: &str) {
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
            "user" => self.users = self.users.max(num("id")),
            "product" => self.products = self.products.max(num("id")),
            "coupon" => {
                self.campaigns.insert(num("id"), num("quantity"));
            }
            "charge" => self
                .charges
                .push((UserId(num("user")), num("amount"), num("balance"))),
            "place" => {
                let lines = f["lines"]
                    .split(',')
                    .map(|l| {
                        let (p, q) = l.split_once(':').unwrap();
                        (p.parse().unwrap(), q.parse().unwrap())
                    })
                    .collect();
                let coupon = f["coupon"].parse().ok();
                self.placed
                    .push((OrderId(num("order")), UserId(num("user")), lines, coupon));
            }
            "pay" => self.paid.push((OrderId(num("order")), num("amount"))),
            "payfail" => self.failed.push(OrderId(num("order"))),
            "cancel" => self.cancelled.push(OrderId(num("order"))),
            "issue" => self.issued.push((
                CouponId(num("coupon")),
                UserId(num("user")),
                UserCouponId(num("user_coupon")),
            )),
            "restock" => {
                *self.restocked.entry(ProductId(num("product"))).or_default() += num("quantity")
            }
            other => panic!("unknown acknowledgement {other}: {line}"),
        }
    }
}

/// Checks that every acknowledged effect is in `w` and that money and
/// stock add up exactly.
fn check(w: &World, store: &SledStore, acks: &Acks) {
    assert!(w.violations().is_empty(), "{:?}", w.violations());
    for k in &acks.keys {
        assert!(
            durability_support::stored_key(store, w, k).is_some(),
            "acknowledged key {k} is stored"
        );
    }
    assert!(w.users.len() as u64 >= acks.users);
    assert!(w.products.len() as u64 >= acks.products);
    for (id, quantity) in &acks.campaigns {
        let c = &w.campaigns[CouponId(*id).index()];
        assert_eq!(c.quantity, *quantity, "coupon {id}");
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
    let status = |id: &OrderId| w.orders.get(id).map(|o| o.status);
    for (id, amount) in &acks.paid {
        assert_eq!(status(id), Some(OrderStatus::Paid), "paid order {id}");
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
    for id in &acks.failed {
        assert_eq!(status(id), Some(OrderStatus::Failed), "failed order {id}");
    }
    for id in &acks.cancelled {
        assert_eq!(
            status(id),
            Some(OrderStatus::Cancelled),
            "cancelled order {id}"
        );
    }
    for (coupon, user, uc) in &acks.issued {
        assert!(w.campaigns[coupon.index()].issued.contains(user.0));
        let held = w.users[user.index()].coupons.iter().find(|c| c.id == *uc);
        assert_eq!(held.map(|c| c.coupon_id), Some(*coupon), "user coupon {uc}");
    }
    for p in &w.products {
        let restocked = acks.restocked.get(&p.id).copied().unwrap_or(0);
        assert!(
            p.stocked_total >= INITIAL_STOCK + restocked,
            "product {}: stocked {} but {restocked} restocked on top of {INITIAL_STOCK}",
            p.id,
            p.stocked_total
        );
    }
    check_conservation(w);
}

/// Money: every user's balance is their charges less their payments, and
/// their payments are exactly what their paid orders cost. Stock: every
/// unit stocked is in stock, reserved by a pending order or sold.
fn check_conservation(w: &World) {
    let mut paid_by_user: HashMap<UserId, u64> = HashMap::new();
    let mut sold: HashMap<ProductId, u64> = HashMap::new();
    let mut reserved: HashMap<ProductId, u64> = HashMap::new();
    for o in w.orders.values() {
        match o.status {
            OrderStatus::Paid => {
                *paid_by_user.entry(o.user_id).or_default() += o.pay_amount.0;
                for (p, q) in o.quantities() {
                    *sold.entry(p).or_default() += q;
                }
            }
            OrderStatus::Pending => {
                for (p, q) in o.quantities() {
                    *reserved.entry(p).or_default() += q;
                }
            }
            _ => {}
        }
    }
    for u in &w.users {
        let sum = |kind| -> u64 {
            u.history
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.amount.0)
                .sum()
        };
        let (charged, payments) = (sum(EntryKind::Charge), sum(EntryKind::Payment));
        assert_eq!(u.balance.0, charged - payments, "user {} balance", u.id);
        let paid = paid_by_user.get(&u.id).copied().unwrap_or(0);
        assert_eq!(payments, paid, "user {} payments vs paid orders", u.id);
    }
    for p in &w.products {
        let (s, r) = (
            sold.get(&p.id).copied().unwrap_or(0),
            reserved.get(&p.id).copied().unwrap_or(0),
        );
        assert_eq!((p.sold, p.reserved), (s, r), "product {}", p.id);
        assert_eq!(p.stock + r + s, p.stocked_total, "product {}", p.id);
    }
}

/// The JSON-lines sink, up to the length recorded with the last settled
/// write, holds each delivered paid order exactly once; every paid order is
/// either there or still pending in the outbox (stored in a block, or in
/// the journal above the outbox's watermark, where a start derives it
/// again), never both.
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
        let v: serde_json::Value = serde_json::from_slice(line).expect("a JSON line");
        let id = v["order"]["id"].as_u64().unwrap();
        assert_eq!(v["event_id"], format!("order-paid-{id}"));
        assert!(delivered.insert(OrderId(id)), "order {id} delivered twice");
    }
    let mut pending = HashSet::new();
    let stored = outbox.pending.iter().filter_map(|e| match e {
        PlatformEvent::OrderPaid { order, .. } => Some(order.id),
        PlatformEvent::OrderRefunded { .. } => None,
    });
    for id in stored.chain(outbox.rederivable.iter().copied()) {
        assert!(pending.insert(id), "order {id} pending twice");
    }
    assert_eq!(
        outbox.state.delivered,
        delivered.len() as u64,
        "settled count"
    );
    for (id, o) in &w.orders {
        let paid = o.status == OrderStatus::Paid;
        let (d, p) = (delivered.contains(id), pending.contains(id));
        assert!(!(d && p), "order {id} is delivered and still pending");
        assert_eq!(
            paid,
            d || p,
            "order {id} ({:?}) in the sink or outbox",
            o.status
        );
    }
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

/// A worker killed with SIGKILL at random moments, five rounds on one sled
/// dir: every acknowledged effect survives and money and stock add up.
#[test]
fn acknowledged_effects_survive_sigkill() {
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
    for round in 0..ROUNDS {
        let lines = run_round(&dir, round, seed, &mut rng);
        let before = acks.count;
        for l in lines.iter().filter_map(|l| l.strip_prefix("ACK ")) {
            acks.add(l);
        }
        let store = SledStore::open(&dir)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): sled reopens: {e}"));
        let (world, report) = recover_store(&store)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): recovery: {e}"));
        eprintln!(
            "round {round}: {} acknowledged ({} in all), {} orders, recovered {report:?}",
            acks.count - before,
            acks.count,
            world.orders.len(),
        );
        check(&world, &store, &acks);
        check_sink(&world, &store, report.snapshot_seq, &dir);
        drop(store);
    }
    assert!(
        acks.paid.len() >= 10 && acks.charges.len() >= 10 && acks.placed.len() >= 10,
        "the workload ran (seed {seed}): {} paid, {} charges, {} placed",
        acks.paid.len(),
        acks.charges.len(),
        acks.placed.len()
    );
}
