//! The data-platform outbox: every paid order reaches the sink at least
//! once with a stable `event_id`, through sink failures and restarts; the
//! outbox waits on disk with memory bounded by delivery's window; the
//! JSON-lines file sink holds each event exactly once; events the store
//! had not taken before a crash are derived again from the journal; an
//! older data dir's pending orders are taken over once.

use crate::durability_support;
use crate::platform_sink::*;

use commerce_engine::domain::ids::OrderId;
use commerce_engine::domain::world::Meta;
use commerce_engine::engine::delivery::window::Window;
use commerce_engine::engine::{DataPlatform, EngineConfig};
use commerce_engine::store::codec::{self, Kind};
use commerce_engine::store::outbox::BLOCK_EVENTS_MAX;
use commerce_engine::store::{
    FaultPlan, FaultyStore, MemoryStore, SledStore, SnapshotEntries, SnapshotKey, Store,
};
use durability_support::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A sink that fails its first deliveries (503s) still gets every paid
/// order, each under the event id `order-paid-<id>` as the JSON of API.md,
/// and the outbox drains, in memory and in the store.
#[test]
fn paid_orders_reach_a_failing_http_sink_with_stable_ids() {
    let rt = runtime();
    let platform = Arc::new(Platform::default());
    platform.fail_next.store(3, Ordering::SeqCst);
    let url = serve(&rt, platform.clone());
    let store = MemoryStore::new();
    let engine = start(
        sink_config(DataPlatform::Http(url)),
        store.clone(),
        manual_clock(),
    );
    let paid = rt.block_on(pay_orders(&engine, 6));
    wait_until("every paid order is accepted and settled", || {
        platform.accepted_set() == event_ids(&paid) && engine.outbox_pending() == 0
    });
    assert!(platform.requests() > 3, "the failures were retried");
    for (id, event) in platform.accepted.lock().unwrap().iter() {
        let order = event["order"]["id"].as_u64().unwrap();
        assert_eq!(id, &format!("order-paid-{order}"));
        assert_eq!(event["type"], "order_paid");
        assert_eq!(event["order"]["status"], "paid");
        assert_eq!(
            event["at"], event["order"]["paid_at"],
            "at is the payment's time"
        );
        assert_eq!(event.as_object().unwrap().len(), 4, "{event}");
    }
    engine.shutdown();
    let outbox = outbox_of(&store);
    assert!(outbox.pending.is_empty() && outbox.rederivable.is_empty());
    assert_eq!(outbox.state.delivered, 6);
}

/// Paid orders the sink refused before a shutdown are delivered by the
/// next engine on the same sled dir, under the same event ids.
#[test]
fn paid_orders_reach_the_http_sink_across_a_restart() {
    let rt = runtime();
    let platform = Arc::new(Platform::default());
    platform.down.store(true, Ordering::SeqCst);
    let url = serve(&rt, platform.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = sink_config(DataPlatform::Http(url));
    let clock = manual_clock();
    let paid = {
        let engine = start(
            config.clone(),
            SledStore::open(dir.path()).unwrap(),
            clock.clone(),
        );
        let paid = rt.block_on(pay_orders(&engine, 4));
        wait_until("a delivery was tried and refused", || {
            platform.requests() >= 2
        });
        assert_eq!(engine.outbox_pending(), 4);
        engine.shutdown();
        paid
    };
    assert_eq!(
        pending_ids(&SledStore::open(dir.path()).unwrap()),
        event_ids(&paid),
        "the outbox is durable"
    );
    assert!(platform.accepted_ids().is_empty());

    platform.down.store(false, Ordering::SeqCst);
    let engine = start(
        config.clone(),
        SledStore::open(dir.path()).unwrap(),
        clock.clone(),
    );
    wait_until("every paid order arrives after the restart", || {
        platform.accepted_set() == event_ids(&paid) && engine.outbox_pending() == 0
    });
    // Paid after the restart: delivered too, nothing else arrives.
    let more = rt.block_on(pay_orders(&engine, 2));
    let all: Vec<OrderId> = paid.iter().chain(&more).copied().collect();
    wait_until("the later orders arrive", || {
        platform.accepted_set() == event_ids(&all) && engine.outbox_pending() == 0
    });
    engine.shutdown();
    drop(engine);
    assert!(pending_ids(&SledStore::open(dir.path()).unwrap()).is_empty());
}

/// With the sink down and thousands of orders paid, the backlog waits in
/// the store: delivery holds at most its window (plus one block) in
/// memory while `pending` grows far past it. A restart with the backlog
/// delivers every event, each once.
#[test]
fn a_backlog_waits_on_disk_with_delivery_memory_bounded_by_its_window() {
    let rt = runtime();
    let platform = Arc::new(Platform::default());
    platform.down.store(true, Ordering::SeqCst);
    let url = serve(&rt, platform.clone());
    let dir = tempfile::tempdir().unwrap();
    let window = 100;
    let config = EngineConfig {
        data_platform_window_events: window,
        ..sink_config(DataPlatform::Http(url))
    };
    let clock = manual_clock();
    let count = 4_000;
    let paid = {
        let engine = start(
            config.clone(),
            SledStore::open(dir.path()).unwrap(),
            clock.clone(),
        );
        let paid = rt.block_on(pay_orders_concurrently(&engine, count, 32));
        wait_until("delivery has tried", || platform.requests() >= 1);
        let m = engine.metrics();
        assert_eq!(m.outbox_pending, count);
        assert!(
            m.data_platform_events_in_memory_max <= (window + BLOCK_EVENTS_MAX) as u64,
            "at most the window and one block in memory: {}",
            m.data_platform_events_in_memory_max
        );
        assert!(
            m.data_platform_events_in_memory_max >= window as u64,
            "the window filled"
        );
        engine.shutdown();
        paid
    };
    assert_eq!(paid.len() as u64, count);
    platform.down.store(false, Ordering::SeqCst);
    let engine = start(config, SledStore::open(dir.path()).unwrap(), clock);
    wait_until("the backlog drains after the restart", || {
        engine.outbox_pending() == 0
    });
    let counts = platform.accepted_counts();
    assert_eq!(
        counts.keys().cloned().collect::<BTreeSet<_>>(),
        event_ids(&paid)
    );
    assert!(counts.values().all(|n| *n == 1), "each event accepted once");
    let m = engine.metrics();
    assert!(m.data_platform_events_in_memory_max <= (window + BLOCK_EVENTS_MAX) as u64);
    assert_eq!(m.data_platform_delivered, count);
    engine.shutdown();
}

/// The window itself: events leave memory as they are settled, and a
/// refill reads no more blocks than the room left (plus the one that
/// crosses it).
#[test]
fn the_window_reads_blocks_while_there_is_room_and_settles_them_whole() {
    let rt = runtime();
    let store = MemoryStore::new();
    let engine = start(
        sink_config(DataPlatform::Off),
        store.clone(),
        manual_clock(),
    );
    let mut paid = Vec::new();
    for _ in 0..5 {
        paid.extend(rt.block_on(pay_orders(&engine, 1)));
        // A snapshot begins with the outbox written: one event per block.
        rt.block_on(engine.snapshot()).unwrap();
    }
    engine.shutdown();
    drop(engine);
    let outbox = store.outbox();
    let stats = Arc::new(Default::default());
    let mut window = Window::new(3, stats);
    let read = window.refill(&*outbox).unwrap();
    // One event per block: three fill the room.
    assert_eq!(read.len(), 3);
    assert!(!window.has_room());
    assert!(
        window.refill(&*outbox).unwrap().is_empty(),
        "no room, no read"
    );
    window.accept(read[0]);
    let done = window.done();
    assert_eq!(done, vec![read[0].block]);
    let live = commerce_engine::store::outbox::OutboxLive::new(&outbox.state().unwrap());
    let s = window.settlement(&done, &live, 0).unwrap();
    assert_eq!(s.delivered, 1);
    outbox.settle(&s).unwrap();
    window.remove(&done);
    let more = window.refill(&*outbox).unwrap();
    assert_eq!(more.len(), 1, "room for one more");
    assert_eq!(
        window.event(more[0]).map(|e| e.event_id()),
        Some(format!("order-paid-{}", paid[3]))
    );
    assert_eq!(outbox.state().unwrap().pending(), 4);
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
            assert_eq!(v["type"], "order_paid");
            v["event_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Asserts the file holds each of `paid` exactly once and nothing else.
fn assert_each_once(path: &Path, paid: &[OrderId]) {
    let lines = file_event_ids(path);
    let unique: BTreeSet<String> = lines.iter().cloned().collect();
    assert_eq!(unique.len(), lines.len(), "no order twice: {lines:?}");
    assert_eq!(unique, event_ids(paid));
}

/// The file sink holds each paid order exactly once, across restarts, and
/// the store records the file's length.
#[test]
fn each_paid_order_appears_once_in_the_file_sink_across_restarts() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-platform.jsonl");
    let config = sink_config(DataPlatform::File(path.clone()));
    let clock = manual_clock();
    let mut paid = Vec::new();
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
    let outbox = outbox_of(&SledStore::open(dir.path()).unwrap());
    assert_eq!(
        outbox.state.file_len,
        Some(std::fs::metadata(&path).unwrap().len())
    );
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
    let mut paid = rt.block_on(pay_orders(&engine, 1));
    wait_until("the first delivery is recorded", || {
        engine.outbox_pending() == 0
    });
    engine.shutdown();
    drop(engine);
    let recorded = std::fs::read(&path).unwrap();
    // Two more paid with the sink off: they wait in the outbox.
    let engine = start(sink_config(DataPlatform::Off), store.clone(), clock.clone());
    let pending = rt.block_on(pay_orders(&engine, 2));
    paid.extend(pending.iter().copied());
    engine.shutdown();
    drop(engine);
    // As if a delivery had been written but the process died before its record.
    let mut junk = recorded.clone();
    junk.extend_from_slice(
        format!(
            "{{\"event_id\":\"order-paid-{}\",\"type\":\"order_paid\"}}\n",
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

/// Regression: when a delivery to the file could not be recorded, the
/// delivery loop once kept the length it had written to and appended the
/// same orders again on every retry: the "each once" file filled with
/// duplicates. Now each retry writes at the recorded length, over what the
/// failed one wrote, so the file holds the order once however many times
/// recording fails, and once recording works again the outbox drains.
#[test]
fn a_file_delivery_that_cannot_be_recorded_is_not_appended_again() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-platform.jsonl");
    let inner = MemoryStore::new();
    let clock = manual_clock();
    let engine = start(sink_config(DataPlatform::Off), inner.clone(), clock.clone());
    let paid = rt.block_on(pay_orders(&engine, 1));
    engine.shutdown();
    drop(engine);

    let plan = FaultPlan::new();
    plan.fail_outbox.store(true, Ordering::SeqCst);
    let engine = start(
        sink_config(DataPlatform::File(path.clone())),
        FaultyStore::new(inner.clone(), plan.clone()),
        clock.clone(),
    );
    wait_until("recording failed several times", || {
        engine.delivery_stats().failures() >= 5
    });
    assert_each_once(&path, &paid);
    assert_eq!(engine.outbox_pending(), 1, "not recorded, so still pending");
    plan.fail_outbox.store(false, Ordering::SeqCst);
    wait_until("the outbox drains", || engine.outbox_pending() == 0);
    engine.shutdown();
    drop(engine);
    assert_each_once(&path, &paid);

    let engine = start(sink_config(DataPlatform::File(path.clone())), inner, clock);
    let more = rt.block_on(pay_orders(&engine, 1));
    wait_until("the next order is written", || engine.outbox_pending() == 0);
    engine.shutdown();
    let all: Vec<OrderId> = paid.iter().chain(&more).copied().collect();
    assert_each_once(&path, &all);
}

/// When the store cannot take a durable batch's events, the payment is
/// still acknowledged (its record is durable), the journal stops taking
/// more, and the next start derives the event again from the journal:
/// once, however many times it starts before delivering.
#[test]
fn an_event_the_outbox_did_not_take_is_derived_again_from_the_journal_once() {
    let rt = runtime();
    let inner = MemoryStore::new();
    let plan = FaultPlan::new();
    let clock = manual_clock();
    let engine = start(
        sink_config(DataPlatform::Off),
        FaultyStore::new(inner.clone(), plan.clone()),
        clock.clone(),
    );
    let before = rt.block_on(pay_orders(&engine, 1));
    // The writer hands a batch's events over right after answering: a
    // snapshot, queued behind, waits for that.
    rt.block_on(engine.snapshot()).unwrap();
    plan.fail_outbox.store(true, Ordering::SeqCst);
    let lost = rt.block_on(pay_orders(&engine, 1));
    wait_until("the journal stops", || engine.is_degraded());
    engine.shutdown();
    drop(engine);
    let o = outbox_of(&inner);
    assert_eq!(
        o.state.pending(),
        1,
        "the second event never reached the store"
    );
    assert_eq!(o.rederivable, lost, "its payment is in the journal");

    for _ in 0..2 {
        let engine = start(sink_config(DataPlatform::Off), inner.clone(), clock.clone());
        assert_eq!(engine.outbox_pending(), 2, "derived again, once");
        engine.shutdown();
    }
    let all: Vec<OrderId> = before.iter().chain(&lost).copied().collect();
    assert_eq!(pending_ids(&inner), event_ids(&all));
    assert!(
        outbox_of(&inner).rederivable.is_empty(),
        "the watermark moved"
    );
}

/// A copy of `store` as a data dir written before the outbox had a store
/// of its own: the outbox empty, and the snapshot's meta listing `pending`
/// with the file sink at `sink_len`.
fn legacy_copy(store: &MemoryStore, pending: &[OrderId], sink_len: u64) -> MemoryStore {
    let old = store.without_outbox();
    let loaded = old.load().unwrap();
    let (_, value) = loaded
        .snapshots
        .iter()
        .find(|(k, _)| *k == SnapshotKey::Meta)
        .expect("a snapshot of the meta");
    let mut meta: Meta = codec::decode(Kind::Meta, value).unwrap();
    meta.outbox = pending.iter().copied().collect();
    meta.sink_len = sink_len;
    let mut entries = SnapshotEntries::new();
    let frame = codec::encode(Kind::Meta, &meta).unwrap();
    entries.push(SnapshotKey::Meta, Some(&frame));
    old.snapshot(loaded.snapshot_seq, entries).unwrap();
    old
}

/// An older data dir's pending orders (`Meta.outbox`) and recorded file
/// length (`Meta.sink_len`) are taken over at start: the file is cut back
/// to that length and each pending order written once; the next snapshot
/// holds both fields empty, and a later start takes over nothing again.
#[test]
fn an_older_data_dirs_pending_orders_are_taken_over_once() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-platform.jsonl");
    let store = MemoryStore::new();
    let clock = manual_clock();
    let engine = start(sink_config(DataPlatform::Off), store.clone(), clock.clone());
    let paid = rt.block_on(pay_orders(&engine, 3));
    rt.block_on(engine.snapshot()).unwrap();
    engine.shutdown();
    drop(engine);
    let recorded = b"{\"event_id\":\"order-paid-0\",\"type\":\"order_paid\"}\n".to_vec();
    let mut file = recorded.clone();
    file.extend_from_slice(b"{\"event_id\":\"unrecorded\"}\n");
    std::fs::write(&path, &file).unwrap();
    let old = legacy_copy(&store, &paid, recorded.len() as u64);
    assert_eq!(
        outbox_of(&old).state.pending(),
        0,
        "nothing in the new outbox"
    );

    for _ in 0..2 {
        let engine = start(
            sink_config(DataPlatform::File(path.clone())),
            old.clone(),
            clock.clone(),
        );
        wait_until("the taken-over orders are written", || {
            engine.outbox_pending() == 0
        });
        rt.block_on(engine.snapshot()).unwrap();
        engine.shutdown();
        let text = std::fs::read(&path).unwrap();
        assert!(text.starts_with(&recorded), "the recorded part is kept");
        let lines: Vec<String> = String::from_utf8(text[recorded.len()..].to_vec())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"].to_string())
            .collect();
        let expected: Vec<String> = paid
            .iter()
            .map(|id| format!("\"order-paid-{id}\""))
            .collect();
        assert_eq!(
            lines, expected,
            "each pending order once, the unrecorded line cut"
        );
        let world = recovered(&old);
        assert!(world.meta.outbox.is_empty() && world.meta.sink_len == 0);
    }
}

/// A payment whose block the store had not made durable when the process
/// was killed (a copy of the store taken between the journal's flush and
/// the outbox's write) is delivered after the restart: recovery derives
/// it from the journal.
#[test]
fn paid_orders_survive_a_crash_between_the_journal_and_the_outbox() {
    let rt = runtime();
    let inner = MemoryStore::new();
    let plan = FaultPlan::new();
    let clock = manual_clock();
    let engine = start(
        sink_config(DataPlatform::Off),
        FaultyStore::new(inner.clone(), plan.clone()),
        clock.clone(),
    );
    let first = rt.block_on(pay_orders(&engine, 2));
    rt.block_on(engine.snapshot()).unwrap();
    plan.fail_outbox.store(true, Ordering::SeqCst);
    let second = rt.block_on(pay_orders(&engine, 1));
    // As kill -9 leaves it: the journal has the payment, the outbox not.
    let crashed = inner.copy();
    engine.shutdown();
    drop(engine);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-platform.jsonl");
    let engine = start(
        sink_config(DataPlatform::File(path.clone())),
        crashed,
        clock,
    );
    wait_until("everything is delivered", || engine.outbox_pending() == 0);
    engine.shutdown();
    let all: Vec<OrderId> = first.iter().chain(&second).copied().collect();
    assert_each_once(&path, &all);
}
