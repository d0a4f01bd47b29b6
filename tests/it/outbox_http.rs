//! The HTTP data platform as `API.md` describes it: JSON arrays of at most
//! `--data-platform-batch` events, at most 8 requests in flight, retries
//! with backoff, refused events split out and dead-lettered, redrive,
//! stop at once, and no posting while storage fails.

use crate::durability_support;
use crate::platform_sink::*;

use commerce_engine::domain::ids::UserId;
use commerce_engine::domain::money::Krw;
use commerce_engine::engine::delivery::REQUESTS_IN_FLIGHT_MAX;
use commerce_engine::engine::{DataPlatform, EngineConfig, PageRequest};
use commerce_engine::store::{FaultPlan, FaultyStore, MemoryStore, SledStore};
use durability_support::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every request is a JSON array of 1 to `data_platform_batch` events;
/// with a backlog, exactly [`REQUESTS_IN_FLIGHT_MAX`] requests are in
/// flight at once (the platform holds each until 8 have arrived), never
/// more; every event is accepted once.
#[test]
fn batches_are_arrays_of_at_most_the_batch_size_with_at_most_eight_in_flight() {
    let rt = runtime();
    let store = MemoryStore::new();
    let clock = manual_clock();
    let engine = start(sink_config(DataPlatform::Off), store.clone(), clock.clone());
    let paid = rt.block_on(pay_orders(&engine, 203));
    engine.shutdown();
    drop(engine);

    let platform = Arc::new(Platform::default());
    platform
        .gather
        .store(REQUESTS_IN_FLIGHT_MAX, Ordering::SeqCst);
    let url = serve(&rt, platform.clone());
    let config = EngineConfig {
        data_platform_batch: 5,
        ..sink_config(DataPlatform::Http(url))
    };
    let engine = start(config, store, clock);
    wait_until("every event is accepted", || engine.outbox_pending() == 0);
    engine.shutdown();
    let log = platform.log();
    assert!(
        log.iter().all(|(ids, _)| (1..=5).contains(&ids.len())),
        "{log:?}"
    );
    assert!(log.len() >= 203 / 5, "{} requests", log.len());
    assert_eq!(
        platform.in_flight_max.load(Ordering::SeqCst),
        REQUESTS_IN_FLIGHT_MAX,
        "eight in flight at most, and eight used"
    );
    let counts = platform.accepted_counts();
    assert_eq!(counts.len(), paid.len());
    assert!(counts.values().all(|n| *n == 1));
}

/// A platform that refuses one event (400) forever: the batches holding it
/// are split until it is alone, every other event is delivered, and after
/// `max_refusals` refusals alone it is a dead letter, listed with its last
/// error and count (across a restart). Redrive sends it again; accepted, it
/// leaves the dead letters.
#[test]
fn an_event_refused_forever_becomes_a_dead_letter_and_redrive_sends_it_again() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let paid = {
        let engine = start(
            sink_config(DataPlatform::Off),
            SledStore::open(dir.path()).unwrap(),
            clock.clone(),
        );
        let paid = rt.block_on(pay_orders(&engine, 40));
        engine.shutdown();
        paid
    };
    let bad = format!("order-paid-{}", paid[17]);
    let platform = Arc::new(Platform::default());
    *platform.refuse.lock().unwrap() = Some(bad.clone());
    let url = serve(&rt, platform.clone());
    let config = EngineConfig {
        data_platform_max_refusals: 3,
        ..sink_config(DataPlatform::Http(url))
    };
    {
        let engine = start(
            config.clone(),
            SledStore::open(dir.path()).unwrap(),
            clock.clone(),
        );
        wait_until("all but one delivered, that one dead", || {
            engine.outbox_pending() == 0
        });
        let status = rt.block_on(engine.data_platform_status()).unwrap();
        assert_eq!(
            (status.pending, status.delivered, status.dead_letters),
            (0, 39, 1)
        );
        assert_eq!(status.oldest_pending_at, None);
        engine.shutdown();
    }
    let mut expected = event_ids(&paid);
    expected.remove(&bad);
    assert_eq!(platform.accepted_set(), expected);
    assert!(platform.accepted_counts().values().all(|n| *n == 1));
    let alone = platform
        .log()
        .iter()
        .filter(|(ids, _)| ids == &vec![bad.clone()])
        .count();
    assert_eq!(alone, 3, "refused alone exactly max_refusals times");
    assert!(platform
        .log()
        .iter()
        .filter(|(ids, _)| ids.contains(&bad))
        .all(|(_, status)| *status == 400));

    // After a restart the dead letter is still there; redrive sends it again.
    *platform.refuse.lock().unwrap() = None;
    let engine = start(config, SledStore::open(dir.path()).unwrap(), clock);
    let letters = rt
        .block_on(engine.dead_letters(PageRequest::first(10)))
        .unwrap();
    assert_eq!(letters.items.len(), 1);
    assert_eq!(letters.next, None);
    let (_, letter) = &letters.items[0];
    assert_eq!(letter.event.event_id(), bad);
    assert_eq!(letter.refusals, 3);
    assert!(letter.last_error.contains("400"), "{}", letter.last_error);
    assert_eq!(rt.block_on(engine.redrive_dead_letters()).unwrap(), 1);
    wait_until("the redriven event is accepted", || {
        platform.accepted_set().contains(&bad) && engine.outbox_pending() == 0
    });
    let status = rt.block_on(engine.data_platform_status()).unwrap();
    assert_eq!(
        (status.pending, status.delivered, status.dead_letters),
        (0, 40, 0)
    );
    assert!(rt
        .block_on(engine.dead_letters(PageRequest::first(10)))
        .unwrap()
        .items
        .is_empty());
    assert_eq!(rt.block_on(engine.redrive_dead_letters()).unwrap(), 0);
    engine.shutdown();
}

/// Dead letters page by id: `limit` items, `next` the cursor, until none
/// is left.
#[test]
fn dead_letters_are_listed_a_page_at_a_time() {
    let rt = runtime();
    let platform = Arc::new(Platform::default());
    let url = serve(&rt, platform.clone());
    let store = MemoryStore::new();
    let clock = manual_clock();
    let engine = start(sink_config(DataPlatform::Off), store.clone(), clock.clone());
    let paid = rt.block_on(pay_orders(&engine, 5));
    engine.shutdown();
    drop(engine);
    // Every event refused: each becomes a dead letter after one refusal alone.
    platform.refuse_all.store(true, Ordering::SeqCst);
    let config = EngineConfig {
        data_platform_max_refusals: 1,
        ..sink_config(DataPlatform::Http(url))
    };
    let engine = start(config, store.clone(), clock.clone());
    wait_until("every event is a dead letter", || {
        engine.outbox_pending() == 0
    });
    assert_eq!(engine.metrics().data_platform_dead_letters, 5);
    engine.shutdown();
    drop(engine);
    let engine = start(sink_config(DataPlatform::Off), store, clock);
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let p = rt.block_on(engine.dead_letters(page)).unwrap();
        assert!(p.items.len() <= 2);
        seen.extend(p.items.iter().map(|(id, l)| (*id, l.event.event_id())));
        match p.next {
            Some(n) => page.after = Some(n),
            None => break,
        }
    }
    engine.shutdown();
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (0..ids.len() as u64).collect::<Vec<_>>(),
        "by id, each once"
    );
    assert_eq!(
        seen.iter()
            .map(|(_, e)| e.clone())
            .collect::<std::collections::BTreeSet<_>>(),
        event_ids(&paid)
    );
}

/// 503s (then 200) are retried with backoff: the batch goes again, and
/// each event is accepted exactly once, by the request that was accepted.
#[test]
fn a_503_is_retried_and_each_event_accepted_once() {
    let rt = runtime();
    let platform = Arc::new(Platform::default());
    platform.fail_next.store(4, Ordering::SeqCst);
    let url = serve(&rt, platform.clone());
    let store = MemoryStore::new();
    let engine = start(
        sink_config(DataPlatform::Http(url)),
        store.clone(),
        manual_clock(),
    );
    let paid = rt.block_on(pay_orders_concurrently(&engine, 60, 6));
    wait_until("every event is accepted", || engine.outbox_pending() == 0);
    engine.shutdown();
    let log = platform.log();
    let failed = log.iter().filter(|(_, s)| *s == 503).count();
    assert_eq!(failed, 4);
    let accepted_requests: usize = log.iter().filter(|(_, s)| *s == 200).count();
    assert_eq!(log.len(), accepted_requests + 4);
    let counts = platform.accepted_counts();
    assert_eq!(
        counts
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        event_ids(&paid)
    );
    assert!(counts.values().all(|n| *n == 1), "once per accepted batch");
    // Every failed batch went again: its events are among the accepted.
    for (ids, status) in &log {
        if *status == 503 {
            assert!(ids.iter().all(|id| counts.contains_key(id)));
        }
    }
}

/// Stopping drops a request in flight at once, without waiting for its
/// answer (here, one that never comes, with a 60 s request timeout); its
/// event stays in the outbox and is delivered by the next engine.
#[test]
fn stop_drops_a_request_in_flight_at_once() {
    let rt = runtime();
    let platform = Arc::new(Platform::default());
    platform.hang.store(true, Ordering::SeqCst);
    let url = serve(&rt, platform.clone());
    let store = MemoryStore::new();
    let clock = manual_clock();
    let config = EngineConfig {
        data_platform_request_timeout_ms: 60_000,
        ..sink_config(DataPlatform::Http(url))
    };
    let engine = start(config.clone(), store.clone(), clock.clone());
    let paid = rt.block_on(pay_orders(&engine, 1));
    wait_until("the request is in flight", || platform.requests() >= 1);
    let began = Instant::now();
    engine.shutdown();
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "shutdown waited {took:?} for a request (timeout 60 s)"
    );
    assert_eq!(pending_ids(&store), event_ids(&paid));
    platform.hang.store(false, Ordering::SeqCst);
    let engine = start(config, store, clock);
    wait_until("delivered by the next engine", || {
        engine.outbox_pending() == 0
    });
    engine.shutdown();
    assert_eq!(platform.accepted_set(), event_ids(&paid));
}

/// While the journal is poisoned (storage failed), delivery sends nothing
/// (the platform, accepting again, hears no request), however often it
/// looks; the events stay pending and the next engine delivers them.
#[test]
fn delivery_pauses_while_the_journal_is_poisoned() {
    let rt = runtime();
    let platform = Arc::new(Platform::default());
    platform.down.store(true, Ordering::SeqCst);
    let url = serve(&rt, platform.clone());
    let inner = MemoryStore::new();
    let plan = FaultPlan::new();
    let clock = manual_clock();
    let config = sink_config(DataPlatform::Http(url));
    let engine = start(
        config.clone(),
        FaultyStore::new(inner.clone(), plan.clone()),
        clock.clone(),
    );
    let paid = rt.block_on(pay_orders(&engine, 3));
    wait_until("delivery was refused", || platform.requests() >= 2);
    plan.fail_appends.store(true, Ordering::SeqCst);
    let failed = rt.block_on(engine.charge(UserId(1), Krw(1), None));
    assert!(failed.is_err());
    assert!(engine.is_degraded());
    wait_until("delivery pauses", || engine.delivery_stats().is_paused());
    // What was in flight when it paused has had time to end: several looks.
    let looked = engine.delivery_stats().pause_checks();
    wait_until("delivery looked again", || {
        engine.delivery_stats().pause_checks() >= looked + 3
    });
    let requests = platform.requests();
    platform.down.store(false, Ordering::SeqCst);
    let looked = engine.delivery_stats().pause_checks();
    wait_until("delivery looked several more times", || {
        engine.delivery_stats().pause_checks() >= looked + 5
    });
    assert_eq!(platform.requests(), requests, "no request while paused");
    assert_eq!(engine.outbox_pending(), 3);
    engine.shutdown();
    drop(engine);

    let engine = start(config, inner, clock);
    wait_until("delivered once storage works", || {
        engine.outbox_pending() == 0
    });
    engine.shutdown();
    assert_eq!(platform.accepted_set(), event_ids(&paid));
}
