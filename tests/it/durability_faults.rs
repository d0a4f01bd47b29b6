//! Storage faults: when the disk fails, the engine answers a storage error,
//! acknowledges nothing from then on, and what it leaves behind recovers to
//! exactly the acknowledged effects with every invariant holding.

use crate::durability_support;

use commerce_engine::domain::ids::{OrderId, ProductId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::user::EntryKind;
use commerce_engine::engine::{Engine, Error, PlaceOrder};
use commerce_engine::store::{FaultPlan, FaultyStore, MemoryStore, StorageError};
use durability_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

fn is_storage(e: &Error) -> bool {
    matches!(e, Error::Storage(_))
}

/// A failed flush is answered as a storage error; later writes are refused
/// even once the disk works again; nothing of them shows, in memory or
/// after recovery of what the store holds.
#[test]
fn a_failed_flush_is_an_error_and_nothing_later_is_acknowledged() {
    let inner = MemoryStore::new();
    let plan = FaultPlan::new();
    let rt = runtime();
    let clock = manual_clock();
    let engine = start(
        config(),
        FaultyStore::new(inner.clone(), plan.clone()),
        clock.clone(),
    );
    let (before, p) = rt.block_on(async {
        let p = populate(&engine, "f").await;
        (observe(&engine).await, p)
    });
    plan.fail_appends.store(true, Ordering::SeqCst);
    rt.block_on(async {
        let e = engine.charge(UserId(1), Krw(5), key("after-fault")).await;
        assert!(matches!(&e, Err(e) if is_storage(e)), "{e:?}");
        let e = engine.place_order(place(4, &[(1, 1)], None), None).await;
        assert!(matches!(&e, Err(e) if is_storage(e)), "{e:?}");
        assert!(engine.is_degraded());
        // The disk works again: the journal stays stopped until a restart.
        plan.fail_appends.store(false, Ordering::SeqCst);
        let e = engine.pay_order(p.pending[1], None).await;
        assert_eq!(e, Err(Error::Storage(StorageError::Poisoned)));
        let e = engine.create_user("late", None).await;
        assert!(matches!(&e, Err(e) if is_storage(e)), "{e:?}");
        let e = engine.restock(ProductId(1), 5, None).await;
        assert!(matches!(&e, Err(e) if is_storage(e)), "{e:?}");
        // The key of a refused request was not kept.
        let e = engine.charge(UserId(1), Krw(6), key("after-fault")).await;
        assert!(matches!(&e, Err(e) if is_storage(e)), "{e:?}");
        // In memory, nothing of the refused requests shows (holds released).
        assert_eq!(before, observe(&engine).await);
    });
    engine.shutdown();
    drop(engine);

    let world = recovered(&inner);
    assert!(stored_key(&inner, &world, "after-fault").is_none());
    let engine = start(config(), inner, clock);
    assert_eq!(before, rt.block_on(observe(&engine)));
    engine.shutdown();
}

/// Many concurrent charges and orders with the disk failing part way: the
/// recovered store holds exactly the acknowledged ones, no more, no fewer.
#[test]
fn concurrent_writes_across_a_fault_recover_to_exactly_the_acknowledged_ones() {
    let inner = MemoryStore::new();
    let plan = FaultPlan::new();
    let rt = runtime();
    let clock = manual_clock();
    let engine = start(
        config(),
        FaultyStore::new(inner.clone(), plan.clone()),
        clock.clone(),
    );
    rt.block_on(async {
        for i in 0..4 {
            engine.create_user(&format!("u{i}"), None).await.unwrap();
        }
        engine
            .create_product("p", Krw(10), 1_000_000, None)
            .await
            .unwrap();
    });
    // Two waves of writes succeed, then two more batches, then every flush
    // fails. Each wave needs at least one batch of its own, so the fault
    // surely falls inside the run.
    let (charges, orders) = rt.block_on(async {
        let mut results = Vec::new();
        for wave in 0..8u64 {
            if wave == 2 {
                plan.appends_before_failure.store(2, Ordering::SeqCst);
            }
            let mut tasks = Vec::new();
            for n in wave * 50..(wave + 1) * 50 {
                tasks.push(tokio::spawn(write(engine.clone(), n)));
            }
            for t in tasks {
                results.push(t.await.unwrap());
            }
        }
        let mut charges: BTreeMap<UserId, BTreeSet<u64>> = BTreeMap::new();
        let mut orders: BTreeSet<OrderId> = BTreeSet::new();
        let mut refused = 0;
        for (n, user, r) in results {
            match r {
                Ok(v) if n.is_multiple_of(2) => {
                    charges.entry(user).or_default().insert(v);
                }
                Ok(id) => {
                    orders.insert(OrderId(id));
                }
                Err(e) => {
                    assert!(is_storage(&e), "only storage errors: {e:?}");
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "the fault happened");
        assert!(
            !charges.is_empty() && !orders.is_empty(),
            "some writes were acknowledged before it"
        );
        (charges, orders)
    });
    engine.shutdown();
    drop(engine);

    let world = recovered(&inner);
    for u in &world.users {
        let held: BTreeSet<u64> = u
            .history
            .iter()
            .filter(|e| e.kind == EntryKind::Charge)
            .map(|e| e.amount.0)
            .collect();
        let acked = charges.get(&u.id).cloned().unwrap_or_default();
        assert_eq!(
            held, acked,
            "user {}: charges recovered vs acknowledged",
            u.id
        );
        assert_eq!(u.balance.0, acked.iter().sum::<u64>());
    }
    let held: BTreeSet<OrderId> = world.orders.keys().copied().collect();
    assert_eq!(held, orders, "orders recovered vs acknowledged");
    let reserved: u64 = world.orders.values().map(|o| o.items[0].quantity).sum();
    assert_eq!(world.products[0].reserved, reserved);
    assert_eq!(world.products[0].stock, 1_000_000 - reserved);
}

/// One write of the concurrent test: an even `n` charges `1000 + n`, an
/// odd one orders `n` units; answers the amount or the order id.
async fn write(engine: Engine, n: u64) -> (u64, UserId, Result<u64, Error>) {
    let user = UserId(n % 4 + 1);
    if n.is_multiple_of(2) {
        let amount = 1_000 + n;
        let r = engine.charge(user, Krw(amount), None).await;
        (n, user, r.map(|_| amount))
    } else {
        let order = PlaceOrder {
            user_id: user,
            source: items(&[(1, n)]),
            user_coupon_id: None,
        };
        let r = engine.place_order(order, None).await;
        (n, user, r.map(|o| o.id.0))
    }
}

/// Snapshots that fail lose nothing: the journal keeps everything since the
/// last good one, and a restart shows the same state.
#[test]
fn failing_snapshots_lose_nothing() {
    let inner = MemoryStore::new();
    let plan = FaultPlan::new();
    plan.fail_snapshots.store(true, Ordering::SeqCst);
    let rt = runtime();
    let clock = manual_clock();
    let mut cfg = config();
    cfg.journal.snapshot_every_records = 4;
    let engine = start(
        cfg.clone(),
        FaultyStore::new(inner.clone(), plan.clone()),
        clock.clone(),
    );
    let (before, p) = rt.block_on(async {
        let p = populate(&engine, "n").await;
        assert!(engine.snapshot().await.is_err());
        // Writes still work: only snapshots fail.
        engine.charge(UserId(4), Krw(42), None).await.unwrap();
        (observe(&engine).await, p)
    });
    assert!(!engine.is_degraded());
    engine.shutdown();
    drop(engine);
    assert_eq!(inner.load_snapshot_seq(), 0, "no snapshot was written");

    // With snapshots working again, the marks kept since the failures are written.
    let engine = start(
        cfg,
        FaultyStore::new(inner.clone(), FaultPlan::new()),
        clock,
    );
    assert_eq!(before, rt.block_on(observe(&engine)));
    rt.block_on(async {
        engine.charge(UserId(4), Krw(1), None).await.unwrap();
        assert!(engine.snapshot().await.unwrap() > 0);
    });
    let after = rt.block_on(observe(&engine));
    engine.shutdown();
    drop(engine);
    let engine = start(config(), inner, manual_clock());
    assert_eq!(after, rt.block_on(observe(&engine)));
    assert_populated(&after, &p);
    engine.shutdown();
}

/// A passing snapshot failure ends without a restart: it is counted and
/// reported while it lasts, and once storage takes snapshots again the next
/// one is written and trims the journal.
#[test]
fn snapshots_resume_after_a_passing_failure_without_a_restart() {
    let inner = MemoryStore::new();
    let plan = FaultPlan::new();
    let rt = runtime();
    let engine = start(
        config(),
        FaultyStore::new(inner.clone(), plan.clone()),
        manual_clock(),
    );
    rt.block_on(async {
        let p = populate(&engine, "s").await;
        plan.fail_snapshots.store(true, Ordering::SeqCst);
        assert!(engine.snapshot().await.is_err());
        assert!(engine.snapshot().await.is_err());
        let (consecutive, error) = engine.snapshots_failing().expect("reported while failing");
        assert_eq!(consecutive, 2);
        assert!(error.contains("injected"), "{error}");
        assert_eq!(engine.metrics().snapshot_failures, 2);
        assert!(!p.paid.is_empty());
        engine.charge(UserId(1), Krw(5), None).await.unwrap();
        let batches = inner.batch_count();
        plan.fail_snapshots.store(false, Ordering::SeqCst);
        let seq = engine.snapshot().await.expect("written once storage works");
        assert!(seq > 0 && inner.load_snapshot_seq() == seq);
        assert_eq!(engine.snapshots_failing(), None);
        assert!(
            inner.batch_count() < batches,
            "the journal is trimmed again"
        );
        assert_eq!(engine.metrics().snapshot_failures, 2);
    });
    engine.shutdown();
}

trait SnapshotSeq {
    fn load_snapshot_seq(&self) -> u64;
}

impl SnapshotSeq for MemoryStore {
    fn load_snapshot_seq(&self) -> u64 {
        use commerce_engine::store::Store;
        self.load().unwrap().snapshot_seq
    }
}
