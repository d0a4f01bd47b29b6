//! The cluster in the engine, with real processes: three nats-servers and
//! two `commerce-engine serve --cluster` nodes on loopback, each with its
//! own data dir. Clients run charges and order-then-pay flows against
//! whichever node leads, each request under an Idempotency-Key and retried
//! with it until its answer is definite, so every effect is counted once:
//! after a kill -9 or a SIGSTOP of the leader, the node that leads must
//! hold exactly what was acknowledged (balances, paid orders, stock).

use crate::cluster_support::NatsCluster;
use commerce_engine::bench::target::{HttpTarget, Target};
use commerce_engine::check::{Acknowledged, Expect};
use commerce_engine::domain::ids::{OrderId, ProductId, UserId};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const TOKEN: &str = "cluster-token";
const USERS: u64 = 6;
const PRODUCTS: u64 = 3;
const PRICE: u64 = 700;
const STOCK: u64 = 100_000;
const CHARGE: u64 = 1_000;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One engine node: its process, address and data dir.
pub(crate) struct Node {
    pub(crate) id: &'static str,
    port: u16,
    pub(crate) data: PathBuf,
    pub(crate) log: PathBuf,
    urls: Vec<String>,
    /// More `serve` flags.
    pub(crate) extra: Vec<String>,
    child: Option<Child>,
}

impl Node {
    pub(crate) fn new(id: &'static str, dir: &Path, urls: Vec<String>) -> Node {
        Node {
            id,
            port: free_port(),
            data: dir.join(id),
            log: dir.join(format!("{id}.log")),
            urls,
            extra: Vec::new(),
            child: None,
        }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let addr = format!("127.0.0.1:{}", self.port);
        let child = Command::new(env!("CARGO_BIN_EXE_commerce-engine"))
            .args(["serve", "--addr", &addr, "--data-dir"])
            .arg(&self.data)
            .args(["--empty", "--admin-token", TOKEN, "--cluster"])
            .arg(self.urls.join(","))
            .args(["--node-id", self.id, "--cluster-name", "shop"])
            .args(["--advertise-url", &self.base()])
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .env_remove("COMMERCE_ADDR")
            .env_remove("COMMERCE_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("binary starts");
        self.child = Some(child);
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.as_ref().expect("runs").id()).expect("pid")
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on a child of ours that has not been reaped.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "signal {signal} to node {}", self.id);
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process still runs (it is the same process after it
    /// starts itself again as a standby).
    pub(crate) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Whether any thread of the node panicked (its whole log, across restarts).
    pub(crate) fn panicked(&self) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|text| text.contains("panicked at"))
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: as in `signal`; a stopped process must go on to die.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
        }
        self.kill9();
    }
}

/// `/ready`'s status and body's `status`; `None` if nothing answers.
async fn ready(client: &reqwest::Client, base: &str) -> Option<(StatusCode, String)> {
    let resp = client
        .get(format!("{base}/ready"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()?;
    let status = resp.status();
    let body: Value = resp.json().await.ok()?;
    Some((
        status,
        body["status"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Waits until `/ready` on `base` says `want`; how long it took.
pub(crate) async fn wait_ready(
    client: &reqwest::Client,
    node: &Node,
    want: &str,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if let Some((_, status)) = ready(client, &node.base()).await {
            if status == want {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < within,
            "node {} not {want} within {within:?}; log:\n{}",
            node.id,
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gauge's value on `/metrics`.
pub(crate) async fn gauge(client: &reqwest::Client, base: &str, line_start: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A client that sends each request to whichever node leads, and retries
/// it under its Idempotency-Key until the answer is definite.
#[derive(Clone)]
pub(crate) struct Shop {
    pub(crate) client: reqwest::Client,
    pub(crate) bases: Vec<String>,
    /// The node that answered last: where the next request goes first.
    pub(crate) leader: Arc<AtomicUsize>,
}

impl Shop {
    /// The definite answer (2xx or 4xx/409) to `path` with `body` under `key`.
    async fn send(&self, path: &str, body: Value, key: &str, admin: bool) -> (StatusCode, Value) {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut at = self.leader.load(Ordering::Relaxed);
        loop {
            assert!(
                Instant::now() < deadline,
                "no definite answer to {path} ({key})"
            );
            let base = &self.bases[at % self.bases.len()];
            let mut req = self
                .client
                .post(format!("{base}{path}"))
                .timeout(Duration::from_secs(2))
                .header("idempotency-key", key)
                .body(body.to_string());
            if admin {
                req = req.header("authorization", format!("Bearer {TOKEN}"));
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() || status.is_client_error() {
                        self.leader.store(at % self.bases.len(), Ordering::Relaxed);
                        let value = resp.json().await.unwrap_or(Value::Null);
                        return (status, value);
                    }
                    // 503 NOT_LEADER / OVERLOADED, 504 OUTCOME_UNKNOWN:
                    // the same key again, at the leader named if any.
                    let leader = resp
                        .headers()
                        .get("x-leader")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|url| self.bases.iter().position(|b| b == url));
                    at = leader.unwrap_or(at + 1);
                }
                Err(_) => at += 1,
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

/// Users with no balance and products with `STOCK` each, on the leader.
pub(crate) async fn populate(shop: &Shop) {
    for u in 1..=USERS {
        let (st, user) = shop
            .send(
                "/api/v1/users",
                json!({"name": format!("u{u}")}),
                &format!("user-{u}"),
                false,
            )
            .await;
        assert_eq!((st, user["id"].as_u64()), (StatusCode::CREATED, Some(u)));
    }
    for p in 1..=PRODUCTS {
        let body = json!({"name": format!("p{p}"), "price": PRICE, "stock": STOCK});
        let (st, product) = shop
            .send("/api/v1/products", body, &format!("product-{p}"), true)
            .await;
        assert_eq!((st, product["id"].as_u64()), (StatusCode::CREATED, Some(p)));
    }
}

/// One client per user until `stop`: charge, place an order of one unit,
/// pay it; every definite answer recorded.
async fn load(shop: Shop, stop: Arc<AtomicBool>, acked: Arc<Mutex<Acknowledged>>) {
    let mut clients = Vec::new();
    for u in 1..=USERS {
        let (shop, stop, acked) = (shop.clone(), stop.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (st, _) = shop
                    .send(
                        &format!("/api/v1/users/{u}/balance/charge"),
                        json!({"amount": CHARGE}),
                        &format!("charge-{u}-{i}"),
                        false,
                    )
                    .await;
                assert_eq!(st, StatusCode::OK, "charge {u}-{i}");
                acked.lock().unwrap().user(UserId(u)).charged += CHARGE;
                let product = 1 + (u + i) % PRODUCTS;
                let (st, order) = shop
                    .send(
                        "/api/v1/orders",
                        json!({"user_id": u, "items": [{"product_id": product, "quantity": 1}]}),
                        &format!("order-{u}-{i}"),
                        false,
                    )
                    .await;
                assert_eq!(st, StatusCode::CREATED, "order {u}-{i}: {order}");
                let id = order["id"].as_u64().expect("order id");
                acked.lock().unwrap().product(ProductId(product)).placed += 1;
                let (st, paid) = shop
                    .send(
                        &format!("/api/v1/orders/{id}/payment"),
                        json!({}),
                        &format!("pay-{u}-{i}"),
                        false,
                    )
                    .await;
                assert_eq!(st, StatusCode::OK, "payment of {id}: {paid}");
                let amount = paid["pay_amount"].as_u64().expect("pay_amount");
                let mut told = acked.lock().unwrap();
                told.user(UserId(u)).paid += amount;
                told.product(ProductId(product)).sold += 1;
                told.order(OrderId(id), Expect::PAID);
            }
        }));
    }
    for c in clients {
        c.await.expect("client");
    }
}

/// The leader at `base` holds exactly what was acknowledged, read through
/// its API by the shared check: each user's balance is what was charged
/// minus what was paid, each acknowledged order is paid, and each
/// product's stock is what was not sold.
pub(crate) async fn assert_holds(base: &str, acked: &Acknowledged) {
    let node = HttpTarget::new(base, Some(TOKEN.into()), false, None).expect("a client");
    let found = acked.check_api(&Target::Http(node), usize::MAX).await;
    assert!(found.ok(), "{found:?}");
}

pub(crate) struct Setup {
    pub(crate) nats: NatsCluster,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) a: Node,
    pub(crate) b: Node,
    pub(crate) shop: Shop,
}

/// Three nats-servers; node a leads, node b follows.
async fn setup() -> Setup {
    setup_with(&[]).await
}

/// As [`setup`], both nodes started with `extra` flags too.
pub(crate) async fn setup_with(extra: &[&str]) -> Setup {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = Node::new("a", dir.path(), nats.urls());
    let mut b = Node::new("b", dir.path(), nats.urls());
    for node in [&mut a, &mut b] {
        node.extra = extra.iter().map(|s| s.to_string()).collect();
    }
    let client = reqwest::Client::new();
    a.start();
    wait_ready(&client, &a, "ready", Duration::from_secs(30)).await;
    b.start();
    wait_ready(&client, &b, "standby", Duration::from_secs(30)).await;
    let shop = Shop {
        client,
        bases: vec![a.base(), b.base()],
        leader: Arc::new(AtomicUsize::new(0)),
    };
    Setup {
        nats,
        dir,
        a,
        b,
        shop,
    }
}

/// Runs the load until `stop` is set; returns it and its task.
pub(crate) fn start_load(
    shop: &Shop,
) -> (
    Arc<AtomicBool>,
    Arc<Mutex<Acknowledged>>,
    tokio::task::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut acked = Acknowledged::default();
    for u in 1..=USERS {
        acked.user(UserId(u));
    }
    for p in 1..=PRODUCTS {
        acked.product(ProductId(p)).stocked = STOCK;
    }
    let acked = Arc::new(Mutex::new(acked));
    let task = tokio::spawn(load(shop.clone(), stop.clone(), acked.clone()));
    (stop, acked, task)
}

/// Waits until the clients have `n` more paid orders than `from`.
pub(crate) async fn wait_paid(acked: &Mutex<Acknowledged>, n: usize) {
    let from = paid(acked);
    let deadline = Instant::now() + Duration::from_secs(20);
    while paid(acked) < from + n {
        assert!(Instant::now() < deadline, "the load made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_from_a_killed_leader_within_ten_seconds_with_everything_acknowledged()
{
    // proves failover by kill -9 under load: ready within 10 s, every acknowledged effect exactly once, and the old leader rejoining as a standby that catches up and takes over in turn
    let mut s = setup().await;
    assert_eq!(
        gauge(
            &s.shop.client,
            &s.b.base(),
            r#"cluster_role{role="standby"}"#
        )
        .await,
        Some(1.0)
    );
    populate(&s.shop).await;
    let (stop, acked, task) = start_load(&s.shop);
    wait_paid(&acked, 30).await;

    s.a.kill9();
    let took = wait_ready(&s.shop.client, &s.b, "ready", Duration::from_secs(10)).await;
    eprintln!("node b ready {took:?} after the leader's kill -9");
    wait_paid(&acked, 30).await;

    // The old leader comes back as a standby and catches up.
    s.a.start();
    wait_ready(&s.shop.client, &s.a, "standby", Duration::from_secs(30)).await;
    // A standby names the leader once it has read the lease (until then it
    // answers NOT_LEADER without X-Leader: "retry shortly").
    let deadline = Instant::now() + Duration::from_secs(10);
    let resp = loop {
        let resp = s
            .shop
            .client
            .get(format!("{}/api/v1/users/1", s.a.base()))
            .send()
            .await
            .expect("sent");
        if resp.headers().contains_key("x-leader") || Instant::now() > deadline {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.headers().get("x-leader").and_then(|v| v.to_str().ok()),
        Some(s.b.base().as_str()),
        "a standby names the leader"
    );
    assert_eq!(
        resp.json::<Value>().await.expect("json")["code"],
        "NOT_LEADER"
    );
    wait_paid(&acked, 30).await;
    stop.store(true, Ordering::Relaxed);
    task.await.expect("load");
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_holds(&s.b.base(), &acked).await;
    assert_eq!(
        gauge(
            &s.shop.client,
            &s.b.base(),
            r#"cluster_role{role="leader"}"#
        )
        .await,
        Some(1.0)
    );
    wait_caught_up(&s.shop.client, &s.a).await;

    // And the rejoined node takes over with everything in turn.
    s.b.kill9();
    let took = wait_ready(&s.shop.client, &s.a, "ready", Duration::from_secs(10)).await;
    eprintln!("node a ready {took:?} after the second leader's kill -9");
    assert_holds(&s.a.base(), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_loses_nothing_acknowledged_after_the_takeover_and_ends_a_standby() {
    // proves fencing end to end: a leader SIGSTOPped past its lease is replaced; on SIGCONT it acknowledges nothing more, rejoins as a standby, and every effect acknowledged by either node is held once
    let mut s = setup().await;
    populate(&s.shop).await;
    let (stop, acked, task) = start_load(&s.shop);
    wait_paid(&acked, 30).await;

    s.a.signal(libc::SIGSTOP);
    let took = wait_ready(&s.shop.client, &s.b, "ready", Duration::from_secs(10)).await;
    eprintln!("node b ready {took:?} after the leader's SIGSTOP");
    wait_paid(&acked, 30).await;
    s.a.signal(libc::SIGCONT);
    // It answers what it held (NOT_LEADER), starts itself again, and follows.
    wait_ready(&s.shop.client, &s.a, "standby", Duration::from_secs(30)).await;
    wait_paid(&acked, 30).await;
    stop.store(true, Ordering::Relaxed);
    task.await.expect("load");
    assert!(s.a.alive(), "the old leader runs on as a standby");
    assert_eq!(
        ready(&s.shop.client, &s.a.base())
            .await
            .map(|r| r.1)
            .as_deref(),
        Some("standby")
    );
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_holds(&s.b.base(), &acked).await;
    assert!(
        !s.a.panicked(),
        "its step-down panics no thread:\n{}",
        s.a.log_tail()
    );
}

/// Waits until the standby `node` has applied the whole stream.
pub(crate) async fn wait_caught_up(client: &reqwest::Client, node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(client, &node.base(), "cluster_replication_lag").await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "node {} did not catch up; log:\n{}",
            node.id,
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_killed_before_its_stream_position_is_kept_rejoins_as_a_standby_and_catches_up() {
    // proves a node with records and no cluster-position file (killed before it was written) finds its place by searching the stream, follows, and later takes over with every acknowledged effect once
    let mut s = setup().await;
    populate(&s.shop).await;
    let (stop, acked, task) = start_load(&s.shop);
    wait_paid(&acked, 30).await;

    s.a.kill9();
    // As if killed before the position's first write: only the journal
    // and its snapshots say where the store stands.
    let position = s.a.data.join("cluster-position");
    match std::fs::remove_file(&position) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("{}: {e}", position.display()),
    }
    wait_ready(&s.shop.client, &s.b, "ready", Duration::from_secs(10)).await;
    wait_paid(&acked, 30).await;

    s.a.start();
    wait_ready(&s.shop.client, &s.a, "standby", Duration::from_secs(30)).await;
    // Log lines reach the file within 200 ms (a buffered writer).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&s.a.log)
        .expect("log")
        .contains("placed in the journal stream by a search")
    {
        assert!(
            Instant::now() < deadline,
            "node a did not search the stream for its place; log:\n{}",
            s.a.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_paid(&acked, 30).await;
    stop.store(true, Ordering::Relaxed);
    task.await.expect("load");
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_holds(&s.b.base(), &acked).await;
    wait_caught_up(&s.shop.client, &s.a).await;

    s.b.kill9();
    wait_ready(&s.shop.client, &s.a, "ready", Duration::from_secs(10)).await;
    assert_holds(&s.a.base(), &acked).await;
}

/// The server that leads the journal stream's raft group (its index).
async fn stream_leader(nats: &NatsCluster) -> usize {
    let client = async_nats::connect(nats.url(0)).await.expect("connects");
    let info = async_nats::jetstream::new(client)
        .get_stream("shop-journal")
        .await
        .expect("the journal stream")
        .get_info()
        .await
        .expect("its info");
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("a stream leader");
    nats.index_of(&leader).expect("a server of ours")
}

/// Paid orders acknowledged so far.
pub(crate) fn paid(acked: &Mutex<Acknowledged>) -> usize {
    acked.lock().unwrap().orders.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_journal_streams_leader_server_under_the_engine_stops_writes_for_less_than_15_s_and_loses_nothing(
) {
    // proves the engine over a lost NATS server: with the journal stream's leader server killed -9 under load, paid orders are acknowledged again within 15 s and every acknowledged effect is held once
    let mut s = setup().await;
    populate(&s.shop).await;
    let (stop, acked, task) = start_load(&s.shop);
    wait_paid(&acked, 30).await;

    let victim = stream_leader(&s.nats).await;
    s.nats.kill(victim);
    let killed = Instant::now();
    // Requests under way at the kill may still be answered: ten more paid
    // orders (one client pays at most one under way) need new writes.
    let from = paid(&acked);
    while paid(&acked) < from + 10 {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "writes did not resume within 15 s of killing nats-{}; a:\n{}\nb:\n{}",
            victim + 1,
            s.a.log_tail(),
            s.b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "writes resumed {:?} after kill -9 of the journal stream's leader server",
        killed.elapsed()
    );
    wait_paid(&acked, 30).await;
    stop.store(true, Ordering::Relaxed);
    task.await.expect("load");
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let mut leader = None;
    for node in [&s.a, &s.b] {
        if ready(&s.shop.client, &node.base())
            .await
            .map(|r| r.1)
            .as_deref()
            == Some("ready")
        {
            leader = Some(node.base());
        }
    }
    let leader = leader.expect("a node leads");
    assert_holds(&leader, &acked).await;
    for node in [&s.a, &s.b] {
        assert!(
            !node.panicked(),
            "a step-down panics no thread:\n{}",
            node.log_tail()
        );
    }
}

#[test]
fn cluster_flags_are_checked_before_anything_is_written() {
    // proves serve's cluster flags: each bad combination exits non-zero, says which flag, and creates no data dir
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = ["--cluster", "nats://127.0.0.1:1"];
    let cases: [(Vec<&str>, &str); 6] = [
        (
            vec!["--cluster", "http://127.0.0.1:1", "--node-id", "a"],
            "--cluster",
        ),
        (nats.to_vec(), "--node-id"),
        ([&nats[..], &["--node-id", "a.b"]].concat(), "--node-id"),
        (vec!["--node-id", "a"], "need --cluster"),
        (
            [&nats[..], &["--node-id", "a", "--advertise-url", "ftp://a"]].concat(),
            "--advertise-url",
        ),
        (
            [&nats[..], &["--node-id", "a", "--cluster-trim-secs", "0"]].concat(),
            "--cluster-trim-secs",
        ),
    ];
    for (flags, says) in cases {
        let data = dir.path().join("data");
        let out = Command::new(env!("CARGO_BIN_EXE_commerce-engine"))
            .args(["serve", "--addr", "127.0.0.1:0", "--empty", "--data-dir"])
            .arg(&data)
            .args(&flags)
            .env_remove("COMMERCE_CLUSTER")
            .env_remove("COMMERCE_NODE_ID")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert!(!data.exists(), "{flags:?} wrote the data dir");
    }
}
