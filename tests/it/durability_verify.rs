//! `commerce-engine verify`, run as the binary: a summary of a good data
//! dir, a non-zero exit on a violation or on unreadable data, and not one
//! byte of the data dir changed.

use crate::durability_support;

use commerce_engine::domain::event::{Event, Record};
use commerce_engine::domain::ids::UserId;
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::OrderStatus;
use commerce_engine::domain::refund::RefundRequest;
use commerce_engine::store::codec::{self, Kind};
use commerce_engine::store::recovery::recover_store;
use commerce_engine::store::{SledStore, Store};
use durability_support::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn verify(dir: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_commerce-engine"));
    cmd.arg("verify").arg("--data-dir").arg(dir);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run the binary")
}

/// `verify --json` on `dir`, which must succeed: its summary.
fn summary(dir: &Path) -> serde_json::Value {
    let out = verify(dir, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An engine on the sled store in `dir`, its clock stopped at `T0`.
fn engine_on(dir: &Path) -> commerce_engine::engine::Engine {
    start(config(), SledStore::open(dir).unwrap(), manual_clock())
}

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn populated_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let engine = engine_on(dir.path());
    let p = rt.block_on(populate(&engine, "v"));
    let refunded = rt.block_on(engine.refund_order(p.paid[0], RefundRequest::default(), None));
    assert_eq!(refunded.unwrap().status, OrderStatus::Refunded);
    engine.shutdown();
    dir
}

/// A good data dir: exit 0 and a summary that counts what is there, with
/// the data dir left byte for byte as it was.
#[test]
fn verify_summarises_a_good_data_dir_and_writes_nothing() {
    let dir = populated_dir();
    let before = contents(dir.path());
    let s = summary(dir.path());
    assert_eq!(s["users"], 4);
    assert_eq!(s["products"], 3);
    assert_eq!(s["coupons"], 2);
    assert_eq!(s["coupons_issued"], 3);
    assert_eq!(s["orders"], 6);
    // Every status is named as the API names it, counted or not.
    let names: Vec<&str> = s["orders_by_status"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        [
            "cancelled",
            "expired",
            "failed",
            "paid",
            "partially_refunded",
            "pending",
            "refunded"
        ]
    );
    assert_eq!(s["orders_by_status"]["paid"], 1);
    assert_eq!(s["orders_by_status"]["refunded"], 1);
    assert_eq!(s["orders_by_status"]["partially_refunded"], 0);
    assert_eq!(s["orders_by_status"]["pending"], 2);
    assert_eq!(s["orders_by_status"]["cancelled"], 1);
    assert_eq!(s["orders_by_status"]["failed"], 1);
    // 100,000 + 3,000 + 250,000 + 1,234 charged; 7,200 + 80,500 paid;
    // 7,200 refunded.
    assert_eq!(s["balances_total_krw"], 273_734);
    // Two payments and the refund, for the data platform.
    assert_eq!(s["outbox_pending"], 3);
    assert!(s["violations"].as_array().unwrap().is_empty());
    assert_eq!(
        s["stock"]["available"].as_u64().unwrap()
            + s["stock"]["reserved"].as_u64().unwrap()
            + s["stock"]["sold"].as_u64().unwrap(),
        s["stock"]["stocked_total"].as_u64().unwrap()
    );
    let text = verify(dir.path(), false);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("invariants        ok"), "{text}");
    assert_eq!(before, contents(dir.path()), "verify changed the data dir");
}

/// A flipped byte in the journal: exit 2, and still nothing written.
#[test]
fn verify_fails_on_corrupt_data() {
    let dir = populated_dir();
    {
        let db = sled::open(dir.path().join("sled-journal")).unwrap();
        let tree = db.open_tree("journal").unwrap();
        let (k, v) = tree.scan_prefix(b"j").next().unwrap().unwrap();
        let mut v = v.to_vec();
        v[20] ^= 0xff;
        tree.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let before = contents(dir.path());
    let out = verify(dir.path(), false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be read"));
    assert_eq!(before, contents(dir.path()));
}

/// Records that decode and replay but break an invariant (a balance above
/// the limit): exit 1, naming the violation.
#[test]
fn verify_fails_on_a_violated_invariant() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        let mut frames = Vec::new();
        for event in [
            Event::UserRegistered {
                user_id: UserId(1),
                name: "rich".into(),
            },
            Event::BalanceCharged {
                user_id: UserId(1),
                amount: Krw(2_000_000_000),
            },
        ] {
            codec::encode_into(Kind::Record, &Record::new(T0, event), &mut frames).unwrap();
        }
        store.append(1, &frames).unwrap();
    }
    let out = verify(dir.path(), false);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("above the limit"), "{err}");
}

/// A journal record of a format version newer than this build's: exit 2,
/// the version named, and nothing written; the store is opened as `serve`
/// opens it, not only handed to the codec.
#[test]
fn verify_refuses_a_format_version_newer_than_the_build_reads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        let event = Event::UserRegistered {
            user_id: UserId(1),
            name: "from a newer build".into(),
        };
        let mut frame = codec::encode(Kind::Record, &Record::new(T0, event)).unwrap();
        // The checksum covers the payload: only the header's version changes.
        frame[2] = codec::FORMAT_VERSION + 1;
        store.append(1, &frame).unwrap();
    }
    let before = contents(dir.path());
    let out = verify(dir.path(), false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let newer = format!(
        "format version {} is newer than this build reads ({})",
        codec::FORMAT_VERSION + 1,
        codec::FORMAT_VERSION
    );
    assert!(err.contains(&newer), "{err}");
    assert_eq!(before, contents(dir.path()));
}

/// No data dir: exit 2, and none is created.
#[test]
fn verify_fails_on_a_missing_data_dir_without_creating_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let out = verify(&missing, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(!missing.exists());
}

/// A refund in the journal above the outbox's watermark (a kill after the
/// journal write, before its event reached the outbox): a start derives
/// its event again, so verify counts it pending, as it counts payments.
#[test]
fn verify_counts_a_refund_a_start_would_deliver_again() {
    let dir = populated_dir();
    let pending = |dir: &Path| summary(dir)["outbox_pending"].as_u64().unwrap();
    let before = pending(dir.path());
    {
        let store = SledStore::open(dir.path()).unwrap();
        let (world, report) = recover_store(&store).unwrap();
        let paid = world
            .orders
            .values()
            .find(|o| o.status == OrderStatus::Paid)
            .expect("a paid order");
        let refund = paid
            .decide_refund(&RefundRequest::default(), T0)
            .expect("a paid order is refundable");
        let mut after = paid.clone();
        after.apply_refund(refund);
        let record = Record::new(
            T0,
            Event::OrderRefunded {
                order: Box::new(after),
            },
        );
        let mut frames = Vec::new();
        codec::encode_into(Kind::Record, &record, &mut frames).unwrap();
        store.append(report.last_seq + 1, &frames).unwrap();
    }
    assert_eq!(pending(dir.path()), before + 1);
    // What a start finds pending, indeed.
    let engine = engine_on(dir.path());
    assert_eq!(engine.outbox_pending() as u64, before + 1);
    engine.shutdown();
}

/// verify loads the archive too: orders a snapshot archived (they left
/// the engine's memory) are counted with the others, by status.
#[test]
fn verify_counts_archived_orders_with_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let engine = engine_on(dir.path());
    rt.block_on(async {
        populate(&engine, "a").await;
        engine.snapshot().await.unwrap();
        // Only the two pending orders stay in memory.
        assert_eq!(engine.orders_in_memory().await.unwrap(), 2);
    });
    engine.shutdown();
    let s = summary(dir.path());
    assert_eq!(s["orders"], 6, "{s}");
    assert_eq!(s["orders_by_status"]["paid"], 2, "{s}");
    assert_eq!(s["orders_by_status"]["pending"], 2, "{s}");
    assert_eq!(s["orders_by_status"]["cancelled"], 1, "{s}");
    assert_eq!(s["orders_by_status"]["failed"], 1, "{s}");
}
