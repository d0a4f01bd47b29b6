//! The data-platform outbox: every paid order reaches the sink at least
//! once with a stable `event_id`, through sink failures and restarts; the
//! JSON-lines file sink holds each paid order exactly once.

use crate::durability_support;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use commerce_engine::domain::ids::{OrderId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::engine::{DataPlatform, Engine, EngineConfig};
use commerce_engine::store::{FaultPlan, FaultyStore, MemoryStore, SledStore};
use durability_support::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A data platform on 127.0.0.1:0 that refuses deliveries when told to.
#[derive(Default)]
struct Receiver {
    /// Answer 500 to this many more deliveries.
    fail_next: AtomicUsize,
    /// Answer 500 to every delivery.
    refuse_all: AtomicBool,
    attempts: AtomicUsize,
    /// (event_id, order id, order status) of every accepted delivery.
    accepted: Mutex<Vec<(String, u64, String)>>,
}

impl Receiver {
    fn accepted(&self) -> Vec<(String, u64, String)> {
        self.accepted.lock().unwrap().clone()
    }

    fn accepted_ids(&self) -> BTreeSet<OrderId> {
        self.accepted().iter().map(|a| OrderId(a.1)).collect()
    }
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    Json(event): Json<serde_json::Value>,
) -> StatusCode {
    r.attempts.fetch_add(1, Ordering::SeqCst);
    let fail_one = r
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail_one || r.refuse_all.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.accepted.lock().unwrap().push((
        event["event_id"].as_str().unwrap_or_default().to_owned(),
        event["order"]["id"].as_u64().unwrap_or_default(),
        event["order"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ));
    StatusCode::OK
}

/// Serves a receiver on the runtime; answers its URL.
fn serve(rt: &tokio::runtime::Runtime, r: Arc<Receiver>) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/events", post(receive)).with_state(r);
    rt.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/events")
}

fn sink_config(platform: DataPlatform) -> EngineConfig {
    EngineConfig {
        data_platform: platform,
        delivery_backoff_ms_min: 5,
        delivery_backoff_ms_max: 50,
        ..config()
    }
}

/// Waits (up to a generous bound, not a performance assertion) until `done`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates a buyer and a product (on a fresh engine) and pays `count`
/// orders; answers their ids.
async fn pay_orders(engine: &Engine, count: u64) -> Vec<OrderId> {
    if engine.metrics().users == 0 {
        engine.create_user("buyer", None).await.unwrap();
        engine
            .create_product("mug", Krw(1_000), 1_000, None)
            .await
            .unwrap();
        engine
            .charge(UserId(1), Krw(1_000_000), None)
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for n in 0..count {
        let o = engine
            .place_order(place(1, &[(1, n % 3 + 1)], None), None)
            .await
            .unwrap();
        engine.pay_order(o.id, None).await.unwrap();
        ids.push(o.id);
    }
    ids
}

fn assert_stable_ids(accepted: &[(String, u64, String)]) {
    for (event_id, id, status) in accepted {
        assert_eq!(event_id, &format!("order-paid-{id}"));
        assert_eq!(status, "paid");
    }
}

/// A sink that fails its first deliveries (500s) still gets every paid
/// order, each under the event id `order-paid-<id>`, and the outbox drains.
#[test]
fn paid_orders_reach_a_failing_http_sink_with_stable_ids() {
    let rt = runtime();
    let receiver = Arc::new(Receiver::default());
    receiver.fail_next.store(3, Ordering::SeqCst);
    let url = serve(&rt, receiver.clone());
    let store = MemoryStore::new();
    let engine = start(
        sink_config(DataPlatform::Http(url)),
        store.clone(),
        manual_clock(),
    );
    let paid: BTreeSet<OrderId> = rt.block_on(pay_orders(&engine, 6)).into_iter().collect();
    wait_until("every paid order is accepted and recorded", || {
        receiver.accepted_ids() == paid && engine.outbox_pending() == 0
    });
    assert!(receiver.attempts.load(Ordering::SeqCst) >= 3 + paid.len());
    assert_stable_ids(&receiver.accepted());
    engine.shutdown();
    assert!(
        recovered(&store).meta.outbox.is_empty(),
        "deliveries are recorded"
    );
}

/// Paid orders the sink refused before a shutdown are delivered by the
/// next engine on the same sled dir, under the same event ids.
#[test]
fn paid_orders_reach_the_http_sink_across_a_restart() {
    let rt = runtime();
    let receiver = Arc::new(Receiver::default());
    receiver.refuse_all.store(true, Ordering::SeqCst);
    let url = serve(&rt, receiver.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = sink_config(DataPlatform::Http(url));
    let clock = manual_clock();
    let paid: BTreeSet<OrderId> = {
        let engine = start(
            config.clone(),
            SledStore::open(dir.path()).unwrap(),
            clock.clone(),
        );
        let paid = rt.block_on(pay_orders(&engine, 4)).into_iter().collect();
        wait_until("a delivery was tried and refused", || {
            receiver.attempts.load(Ordering::SeqCst) >= 2
        });
        assert_eq!(engine.outbox_pending(), 4);
        engine.shutdown();
        paid
    };
    let outbox = recovered(&SledStore::open(dir.path()).unwrap()).meta.outbox;
    assert_eq!(outbox, paid, "the outbox is durable");
    assert!(receiver.accepted().is_empty());

    receiver.refuse_all.store(false, Ordering::SeqCst);
    let engine = start(
        config.clone(),
        SledStore::open(dir.path()).unwrap(),
        clock.clone(),
    );
    wait_until("every paid order arrives after the restart", || {
        receiver.accepted_ids() == paid && engine.outbox_pending() == 0
    });
    // Paid after the restart: delivered too, nothing else arrives.
    let more: BTreeSet<OrderId> = rt.block_on(pay_orders(&engine, 2)).into_iter().collect();
    let all: BTreeSet<OrderId> = paid.union(&more).copied().collect();
    wait_until("the later orders arrive", || {
        receiver.accepted_ids() == all && engine.outbox_pending() == 0
    });
    assert_stable_ids(&receiver.accepted());
    engine.shutdown();
    drop(engine);
    let world = recovered(&SledStore::open(dir.path()).unwrap());
    assert!(world.meta.outbox.is_empty());
}

/// The event ids of the JSON-lines file, in order.
fn file_event_ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let id = v["order"]["id"].as_u64().unwrap();
            assert_eq!(v["event_id"], format!("order-paid-{id}"));
            assert_eq!(v["event_type"], "order.paid");
            v["event_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn event_ids(ids: &BTreeSet<OrderId>) -> BTreeSet<String> {
    ids.iter().map(|id| format!("order-paid-{id}")).collect()
}

/// Asserts the file holds each of `paid` exactly once and nothing else.
fn assert_each_once(path: &Path, paid: &BTreeSet<OrderId>) {
    let lines = file_event_ids(path);
    let unique: BTreeSet<String> = lines.iter().cloned().collect();
    assert_eq!(unique.len(), lines.len(), "no order twice: {lines:?}");
    assert_eq!(unique, event_ids(paid));
}

/// The file sink holds each paid order exactly once, across restarts.
#[test]
fn each_paid_order_appears_once_in_the_file_sink_across_restarts() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-platform.jsonl");
    let config = sink_config(DataPlatform::File(path.clone()));
    let clock = manual_clock();
    let mut paid = BTreeSet::new();
    for round in 0..3 {
        let engine = start(
            config.clone(),
            SledStore::open(dir.path()).unwrap(),
            clock.clone(),
        );
        paid.extend(rt.block_on(pay_orders(&engine, 2 + round)));
        wait_until("the outbox drains", || engine.outbox_pending() == 0);
        engine.shutdown();
        drop(engine);
        assert_each_once(&path, &paid);
    }
    let world = recovered(&SledStore::open(dir.path()).unwrap());
    assert_eq!(world.meta.sink_len, std::fs::metadata(&path).unwrap().len());
}

/// Lines written to the file but not recorded before a crash (here: a
/// stale line and a torn one after the recorded length) are cut on start,
/// and every pending order is then written exactly once.
#[test]
fn lines_written_but_not_recorded_before_a_crash_are_written_once() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-platform.jsonl");
    let store = MemoryStore::new();
    let clock = manual_clock();
    // One delivery recorded.
    let engine = start(
        sink_config(DataPlatform::File(path.clone())),
        store.clone(),
        clock.clone(),
    );
    let mut paid: BTreeSet<OrderId> = rt.block_on(pay_orders(&engine, 1)).into_iter().collect();
    wait_until("the first delivery is recorded", || {
        engine.outbox_pending() == 0
    });
    engine.shutdown();
    drop(engine);
    let recorded = std::fs::read(&path).unwrap();
    // Two more paid with the sink off: they wait in the outbox.
    let engine = start(sink_config(DataPlatform::Off), store.clone(), clock.clone());
    let pending: Vec<OrderId> = rt.block_on(pay_orders(&engine, 2));
    paid.extend(pending.iter().copied());
    engine.shutdown();
    drop(engine);
    // As if a delivery had been written but the process died before its record.
    let mut junk = recorded.clone();
    junk.extend_from_slice(
        format!(
            "{{\"event_id\":\"order-paid-{}\",\"event_type\":\"order.paid\"}}\n",
            pending[0]
        )
        .as_bytes(),
    );
    junk.extend_from_slice(b"{\"event_id\":\"order-pa");
    std::fs::write(&path, junk).unwrap();

    let engine = start(
        sink_config(DataPlatform::File(path.clone())),
        store.clone(),
        clock,
    );
    wait_until("the outbox drains", || engine.outbox_pending() == 0);
    engine.shutdown();
    let text = std::fs::read(&path).unwrap();
    assert!(
        text.starts_with(&recorded),
        "recorded lines are kept as they were"
    );
    assert_each_once(&path, &paid);
}

/// Regression: when the `OutboxDelivered` record could not be journaled
/// (here the journal is stopped by a failed flush; a full journal queue did
/// the same), the delivery loop kept the file length it had written to and
/// appended the same orders again on every retry, every few milliseconds:
/// the "each once" file filled with duplicates. Now an unrecorded delivery
/// is cut back on the next try and retried with backoff, so the file holds
/// the order once, and a restart on what was durable writes it once.
#[test]
fn a_delivery_that_cannot_be_recorded_is_not_appended_again() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-platform.jsonl");
    let inner = MemoryStore::new();
    let plan = FaultPlan::new();
    let clock = manual_clock();
    let engine = start(
        sink_config(DataPlatform::File(path.clone())),
        FaultyStore::new(inner.clone(), plan.clone()),
        clock.clone(),
    );
    rt.block_on(pay_orders(&engine, 0));
    // The order's and the payment's batches are flushed; the next one (the
    // delivery record) fails.
    plan.appends_before_failure.store(2, Ordering::SeqCst);
    let paid: BTreeSet<OrderId> = rt.block_on(pay_orders(&engine, 1)).into_iter().collect();
    wait_until("the journal stops", || engine.is_degraded());
    wait_until("the order is written", || !file_event_ids(&path).is_empty());
    // Room for many retries at a 5..50 ms backoff.
    std::thread::sleep(Duration::from_millis(400));
    assert_each_once(&path, &paid);
    assert_eq!(engine.outbox_pending(), 1, "not recorded, so still pending");
    engine.shutdown();
    drop(engine);

    let engine = start(sink_config(DataPlatform::File(path.clone())), inner, clock);
    wait_until("the outbox drains", || engine.outbox_pending() == 0);
    engine.shutdown();
    assert_each_once(&path, &paid);
}
