//! Shared helpers of the data platform tests: a real HTTP data platform on
//! 127.0.0.1:0 that takes batches (JSON arrays), records every request,
//! and answers as each test tells it; and ways to pay orders and read the
//! outbox back.
#![allow(dead_code)] // each test module uses its own subset

use crate::durability_support::{config, place};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use commerce_engine::domain::ids::{OrderId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::engine::{DataPlatform, Engine, EngineConfig};
use commerce_engine::store::outbox::{inspect, Inspection};
use commerce_engine::store::recovery::recover_store;
use commerce_engine::store::Store;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A data platform that records what it is sent and answers as told.
#[derive(Default)]
pub struct Platform {
    /// Answer 503 to this many more requests.
    pub fail_next: AtomicUsize,
    /// Answer 503 to every request (down).
    pub down: AtomicBool,
    /// Answer 400 to any batch holding this event id.
    pub refuse: Mutex<Option<String>>,
    /// Answer 400 to every request.
    pub refuse_all: AtomicBool,
    /// Never answer (until the connection is dropped).
    pub hang: AtomicBool,
    /// Hold the first requests until this many are in flight, so that the
    /// delivery's concurrency shows; then hold none (set back to 0).
    pub gather: AtomicUsize,
    pub requests: AtomicUsize,
    in_flight: AtomicUsize,
    pub in_flight_max: AtomicUsize,
    gathered: tokio::sync::Notify,
    /// Every request's event ids, in arrival order, with the status answered.
    pub log: Mutex<Vec<(Vec<String>, u16)>>,
    /// Every accepted event: (event_id, the whole event).
    pub accepted: Mutex<Vec<(String, Value)>>,
}

impl Platform {
    pub fn accepted_ids(&self) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Accepted event ids and how many times each was accepted.
    pub fn accepted_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for id in self.accepted_ids() {
            *counts.entry(id).or_default() += 1;
        }
        counts
    }

    pub fn accepted_set(&self) -> BTreeSet<String> {
        self.accepted_ids().into_iter().collect()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn log(&self) -> Vec<(Vec<String>, u16)> {
        self.log.lock().unwrap().clone()
    }
}

struct InFlight<'a>(&'a Platform);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn receive(State(p): State<Arc<Platform>>, Json(batch): Json<Vec<Value>>) -> StatusCode {
    // Listening before being counted, so the request that completes the
    // gathering cannot notify before this one waits.
    let gathered = p.gathered.notified();
    tokio::pin!(gathered);
    gathered.as_mut().enable();
    p.requests.fetch_add(1, Ordering::SeqCst);
    let now = p.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&p);
    p.in_flight_max.fetch_max(now, Ordering::SeqCst);
    let gather = p.gather.load(Ordering::SeqCst);
    if gather > 0 {
        if now >= gather {
            // Gathered once: the requests held go on, and later ones are not held.
            p.gather.store(0, Ordering::SeqCst);
            p.gathered.notify_waiters();
        } else {
            // Bounded only so that a delivery that never sends them all
            // fails the test instead of hanging it.
            let _ = tokio::time::timeout(Duration::from_secs(60), gathered).await;
        }
    }
    if p.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let ids: Vec<String> = batch
        .iter()
        .map(|e| e["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let refused = p.refuse.lock().unwrap().clone();
    let failing = p
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing || p.down.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else if p.refuse_all.load(Ordering::SeqCst) || refused.is_some_and(|r| ids.contains(&r)) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    if status == StatusCode::OK {
        let mut accepted = p.accepted.lock().unwrap();
        for (id, event) in ids.iter().zip(batch) {
            accepted.push((id.clone(), event));
        }
    }
    p.log.lock().unwrap().push((ids, status.as_u16()));
    status
}

/// Serves a platform on the runtime; answers its URL.
pub fn serve(rt: &tokio::runtime::Runtime, p: Arc<Platform>) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/events", post(receive)).with_state(p);
    rt.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/events")
}

/// An engine configuration delivering to `platform`, retrying quickly.
pub fn sink_config(platform: DataPlatform) -> EngineConfig {
    EngineConfig {
        data_platform: platform,
        delivery_backoff_ms_min: 5,
        delivery_backoff_ms_max: 50,
        ..config()
    }
}

/// Waits (up to a generous bound, not a performance assertion) until `done`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates a buyer and a product (on a fresh engine) and pays `count`
/// orders one after another; answers their ids.
pub async fn pay_orders(engine: &Engine, count: u64) -> Vec<OrderId> {
    if engine.metrics().users == 0 {
        engine.create_user("buyer", None).await.unwrap();
        engine
            .create_product("mug", Krw(1_000), 1_000_000, None)
            .await
            .unwrap();
        for _ in 0..50 {
            engine
                .charge(UserId(1), Krw(10_000_000), None)
                .await
                .unwrap();
        }
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

/// Pays `count` orders, `tasks` at a time (so batches hold many events).
pub async fn pay_orders_concurrently(engine: &Engine, count: u64, tasks: u64) -> Vec<OrderId> {
    pay_orders(engine, 0).await;
    let per = count / tasks;
    let runs = (0..tasks).map(|t| {
        let engine = engine.clone();
        let n = if t == tasks - 1 {
            count - per * (tasks - 1)
        } else {
            per
        };
        tokio::spawn(async move { pay_orders(&engine, n).await })
    });
    let mut ids = Vec::new();
    for run in futures_util::future::join_all(runs).await {
        ids.extend(run.unwrap());
    }
    ids
}

pub fn event_ids(ids: &[OrderId]) -> BTreeSet<String> {
    ids.iter().map(|id| format!("order-paid-{id}")).collect()
}

/// The outbox of a stopped engine's store, read whole.
pub fn outbox_of(store: &dyn Store) -> Inspection {
    let (_, report) = recover_store(store).expect("the store recovers");
    inspect(store, report.snapshot_seq).expect("the outbox reads")
}

/// Event ids a start would find pending in the outbox (stored or derived again).
pub fn pending_ids(store: &dyn Store) -> BTreeSet<String> {
    let o = outbox_of(store);
    let mut ids: BTreeSet<String> = o.pending.iter().map(|e| e.event_id()).collect();
    ids.extend(o.rederivable.iter().map(|id| format!("order-paid-{id}")));
    ids
}
