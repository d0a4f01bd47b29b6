//! The codec round-trips any record, and a damaged frame, in memory or on
//! sled, stops recovery with an error instead of being applied.

use crate::durability_support;

use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::event::{Event, IdempotencyEntry, Record};
use commerce_engine::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderLine, OrderStatus};
use commerce_engine::domain::refund::Refunds;
use commerce_engine::domain::rejection::Rejection;
use commerce_engine::domain::stats::{TopItem, TopProducts};
use commerce_engine::domain::time::Timestamp;
use commerce_engine::domain::views::{
    BalanceView, CartItemView, CartView, CouponViewV2, ProductViewV2, Reply, UserCouponStatus,
    UserCouponViewV2, UserView,
};
use commerce_engine::engine::{Engine, StartError};
use commerce_engine::store::codec::{self, Kind};
use commerce_engine::store::recovery::{recover, recover_store, RecoveryError};
use commerce_engine::store::{MemoryStore, SledStore, StorageError, Store};
use durability_support::*;
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn ts() -> impl Strategy<Value = Timestamp> {
    any::<u64>().prop_map(Timestamp)
}

fn krw() -> impl Strategy<Value = Krw> {
    any::<u64>().prop_map(Krw)
}

fn discount() -> impl Strategy<Value = Discount> {
    prop_oneof![
        krw().prop_map(|amount| Discount::Fixed { amount }),
        any::<u8>().prop_map(|percent| Discount::Percent { percent }),
    ]
}

fn status() -> impl Strategy<Value = OrderStatus> {
    prop_oneof![
        Just(OrderStatus::Pending),
        Just(OrderStatus::Paid),
        Just(OrderStatus::Failed),
        Just(OrderStatus::Cancelled),
        Just(OrderStatus::Expired),
    ]
}

fn order() -> impl Strategy<Value = Order> {
    let line =
        (any::<u64>(), text(), krw(), any::<u64>()).prop_map(|(p, name, price, q)| OrderLine {
            product_id: ProductId(p),
            name,
            unit_price: price,
            quantity: q,
        });
    (
        (any::<u64>(), any::<u64>(), status()),
        prop::collection::vec(line, 0..4),
        (krw(), krw(), krw()),
        prop::option::of(any::<u64>()),
        (ts(), ts(), prop::option::of(ts())),
    )
        .prop_map(
            |((id, user, status), items, (t, d, p), coupon, (c, e, paid))| Order {
                id: OrderId(id),
                user_id: UserId(user),
                status,
                items,
                total_amount: t,
                discount_amount: d,
                pay_amount: p,
                user_coupon_id: coupon.map(UserCouponId),
                created_at: c,
                expires_at: e,
                paid_at: paid,
                refunds: Refunds::NONE,
            },
        )
}

fn rejection() -> impl Strategy<Value = Rejection> {
    prop_oneof![
        text().prop_map(Rejection::InvalidRequest),
        (any::<u64>(), any::<u64>())
            .prop_map(|(balance, due)| Rejection::InsufficientBalance { balance, due }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(p, a, r)| Rejection::OutOfStock {
            product_id: ProductId(p),
            available: a,
            requested: r,
        }),
        any::<u64>().prop_map(|c| Rejection::CouponSoldOut(CouponId(c))),
        any::<u64>().prop_map(|o| Rejection::OrderNotPayable(OrderId(o))),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let cart_item = (any::<u64>(), text(), krw(), any::<u64>(), krw()).prop_map(
        |(p, name, price, quantity, subtotal)| CartItemView {
            product_id: ProductId(p),
            name,
            price,
            quantity,
            subtotal,
        },
    );
    let top_item = (any::<u32>(), any::<u64>(), text(), krw(), any::<u64>()).prop_map(
        |(rank, p, name, price, sold_quantity)| TopItem {
            rank,
            product_id: ProductId(p),
            name,
            price,
            sold_quantity,
        },
    );
    prop_oneof![
        (any::<u64>(), text(), krw()).prop_map(|(id, name, balance)| Reply::User(UserView {
            id: UserId(id),
            name,
            balance
        })),
        (any::<u64>(), krw()).prop_map(|(id, balance)| Reply::Balance(BalanceView {
            user_id: UserId(id),
            balance
        })),
        (any::<u64>(), text(), krw(), any::<u64>()).prop_map(|(id, name, price, stock)| {
            Reply::Product(ProductViewV2 {
                id: ProductId(id),
                name,
                price,
                stock,
            })
        }),
        (
            any::<u64>(),
            text(),
            discount(),
            any::<u64>(),
            prop::option::of(ts())
        )
            .prop_map(|(id, name, discount, quantity, expires_at)| Reply::Coupon(
                CouponViewV2 {
                    id: CouponId(id),
                    name,
                    discount,
                    quantity,
                    remaining: quantity / 2,
                    expires_at,
                }
            )),
        (any::<u64>(), any::<u64>(), text(), discount()).prop_map(|(id, user, name, discount)| {
            Reply::UserCoupon(UserCouponViewV2 {
                id: UserCouponId(id),
                coupon_id: CouponId(id / 2),
                user_id: UserId(user),
                name,
                discount,
                status: UserCouponStatus::Available,
                expires_at: None,
            })
        }),
        (any::<u64>(), prop::collection::vec(cart_item, 0..3), krw()).prop_map(
            |(user, items, total)| Reply::Cart(CartView {
                user_id: UserId(user),
                items,
                total,
            })
        ),
        order().prop_map(|o| Reply::Order(Box::new(o))),
        (prop::collection::vec(top_item, 0..5), ts()).prop_map(|(items, at)| {
            Reply::Top(TopProducts {
                items,
                window_days: 3,
                computed_at: at,
            })
        }),
        rejection().prop_map(Reply::Rejected),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let id = any::<u64>;
    prop_oneof![
        (id(), text()).prop_map(|(u, name)| Event::UserRegistered {
            user_id: UserId(u),
            name
        }),
        (id(), krw()).prop_map(|(u, amount)| Event::BalanceCharged {
            user_id: UserId(u),
            amount
        }),
        (id(), text(), krw(), id()).prop_map(|(p, name, price, stock)| {
            Event::ProductCreated {
                product_id: ProductId(p),
                name,
                price,
                stock,
            }
        }),
        (id(), id()).prop_map(|(p, quantity)| Event::ProductRestocked {
            product_id: ProductId(p),
            quantity
        }),
        (id(), text(), discount(), id(), prop::option::of(ts())).prop_map(
            |(c, name, discount, quantity, expires_at)| Event::CampaignCreated {
                coupon_id: CouponId(c),
                name,
                discount,
                quantity,
                expires_at,
            }
        ),
        (id(), id(), id()).prop_map(|(c, u, uc)| Event::CouponIssued {
            coupon_id: CouponId(c),
            user_id: UserId(u),
            user_coupon_id: UserCouponId(uc),
        }),
        (id(), id(), text(), krw(), id()).prop_map(|(u, p, name, price, quantity)| {
            Event::CartLineSet {
                user_id: UserId(u),
                product_id: ProductId(p),
                name,
                price,
                quantity,
            }
        }),
        (id(), id()).prop_map(|(u, p)| Event::CartLineRemoved {
            user_id: UserId(u),
            product_id: ProductId(p),
        }),
        (order(), any::<bool>()).prop_map(|(o, from_cart)| Event::OrderPlaced {
            order: Box::new(o),
            from_cart
        }),
        (id(), id(), krw()).prop_map(|(o, u, amount)| Event::OrderPaid {
            order_id: OrderId(o),
            user_id: UserId(u),
            amount,
        }),
        id().prop_map(|o| Event::OrderPaymentFailed {
            order_id: OrderId(o)
        }),
        id().prop_map(|o| Event::OrderCancelled {
            order_id: OrderId(o)
        }),
        id().prop_map(|o| Event::OrderExpired {
            order_id: OrderId(o)
        }),
        (
            prop::collection::vec(id().prop_map(OrderId), 0..8),
            prop::option::of(id())
        )
            .prop_map(|(order_ids, sink_len)| Event::OutboxDelivered {
                order_ids,
                sink_len
            }),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    let entry = ("[ -~]{1,128}", any::<u64>(), reply()).prop_map(|(key, fingerprint, reply)| {
        IdempotencyEntry {
            key,
            fingerprint,
            reply,
        }
    });
    (ts(), event(), prop::option::of(entry)).prop_map(|(at, event, idempotency)| Record {
        at,
        event,
        idempotency: idempotency.map(Box::new),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any record decodes to itself, alone and inside a journal batch.
    #[test]
    fn any_record_round_trips_through_the_codec(records in prop::collection::vec(record(), 1..6)) {
        let mut batch = Vec::new();
        for r in &records {
            let one = codec::encode(Kind::Record, r).unwrap();
            prop_assert_eq!(&codec::decode::<Record>(Kind::Record, &one).unwrap(), r);
            codec::encode_into(Kind::Record, r, &mut batch).unwrap();
        }
        prop_assert_eq!(codec::decode_all::<Record>(Kind::Record, &batch).unwrap(), records);
    }

    /// Flipping any one bit of a record's frame makes it refuse to decode.
    #[test]
    fn any_flipped_bit_is_refused(r in record(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = codec::encode(Kind::Record, &r).unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(codec::decode::<Record>(Kind::Record, &bytes).is_err());
        prop_assert!(codec::decode_all::<Record>(Kind::Record, &bytes).is_err());
    }
}

/// An engine's store after a populated run, with a snapshot in the middle so
/// that both snapshot entries and journal batches are held.
fn populated_memory_store() -> MemoryStore {
    let store = MemoryStore::new();
    let rt = runtime();
    let engine = start(config(), store.clone(), manual_clock());
    rt.block_on(async {
        populate(&engine, "x").await;
        engine.snapshot().await.unwrap();
        engine
            .charge(commerce_engine::domain::ids::UserId(4), Krw(10), None)
            .await
            .unwrap();
        engine
            .charge(commerce_engine::domain::ids::UserId(4), Krw(20), None)
            .await
            .unwrap();
    });
    // Dropped without shutdown's last snapshot, the journal tail stays.
    let image = store.load().unwrap();
    engine.shutdown();
    let copy = MemoryStore::new();
    let c = copy.clone();
    c.snapshot(
        image.snapshot_seq,
        image
            .snapshots
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect(),
    )
    .unwrap();
    for (first, frames) in image.batches {
        c.append(first, &frames).unwrap();
    }
    copy
}

/// A flipped byte inside a stored journal batch stops recovery with a
/// journal error; nothing of the damaged batch is applied.
#[test]
fn a_corrupted_journal_batch_is_detected_at_recovery() {
    let store = populated_memory_store();
    let loaded = store.load().unwrap();
    assert!(!loaded.batches.is_empty());
    recover(loaded.clone()).expect("the undamaged store recovers");
    for i in [
        0,
        5,
        13,
        loaded.batches[0].1.len() / 2,
        loaded.batches[0].1.len() - 1,
    ] {
        let mut bad = loaded.clone();
        bad.batches[0].1[i] ^= 0x20;
        match recover(bad) {
            Err(RecoveryError::Journal { seq, .. }) => assert_eq!(seq, loaded.batches[0].0),
            other => panic!(
                "byte {i}: expected a journal error, got {:?}",
                other.map(|r| r.1)
            ),
        }
    }
}

/// A flipped byte inside a stored snapshot entry stops recovery too.
#[test]
fn a_corrupted_snapshot_entry_is_detected_at_recovery() {
    let store = populated_memory_store();
    let loaded = store.load().unwrap();
    for n in 0..loaded.snapshots.len() {
        let mut bad = loaded.clone();
        let len = bad.snapshots[n].1.len();
        bad.snapshots[n].1[len - 1] ^= 0x01;
        let key = bad.snapshots[n].0.clone();
        match recover(bad) {
            Err(RecoveryError::Snapshot { key: k, .. }) => assert_eq!(k, key),
            other => panic!(
                "{key:?}: expected a snapshot error, got {:?}",
                other.map(|r| r.1)
            ),
        }
    }
}

/// Flips one byte of the first sled value whose key starts with `prefix`
/// (`j`: in the journal's database).
fn corrupt_sled_value(dir: &Path, prefix: u8) {
    let (db, tree) = if prefix == b'j' {
        ("sled-journal", "journal")
    } else {
        ("sled", "commerce")
    };
    let db = open_when_free(&dir.join(db));
    let tree = db.open_tree(tree).unwrap();
    let (k, v) = tree
        .scan_prefix([prefix])
        .map(Result::unwrap)
        .find(|(_, v)| !v.is_empty())
        .expect("a value with that prefix");
    let mut v = v.to_vec();
    let i = v.len() / 2;
    v[i] ^= 0x10;
    tree.insert(k, v).unwrap();
    db.flush().unwrap();
}

/// Opens the sled database at `path` once the last store that had it open
/// has let go of its file lock: a store's background threads release it
/// just after the store is dropped.
fn open_when_free(path: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

fn populated_sled_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let engine = start(
        config(),
        SledStore::open(dir.path()).unwrap(),
        manual_clock(),
    );
    rt.block_on(populate(&engine, "y"));
    engine.shutdown();
    drop(engine);
    let loaded = SledStore::open(dir.path()).unwrap().load().unwrap();
    assert!(!loaded.batches.is_empty() && !loaded.snapshots.is_empty());
    dir
}

/// On sled: a damaged journal value is refused by recovery, and an engine
/// will not start on it.
#[test]
fn a_corrupted_sled_journal_value_stops_recovery_and_start() {
    let dir = populated_sled_dir();
    corrupt_sled_value(dir.path(), b'j');
    let store = SledStore::open(dir.path()).unwrap();
    assert!(matches!(
        recover_store(&store),
        Err(RecoveryError::Journal { .. })
    ));
    let started = Engine::start(
        config(),
        Box::new(store),
        Arc::new(commerce_engine::engine::SystemClock),
    );
    assert!(matches!(
        started.err(),
        Some(StartError::Recovery(RecoveryError::Journal { .. }))
    ));
}

/// On sled: a damaged snapshot pack is refused by recovery (its checksum).
#[test]
fn a_corrupted_sled_snapshot_pack_stops_recovery() {
    let dir = populated_sled_dir();
    corrupt_sled_value(dir.path(), b'p');
    let store = SledStore::open(dir.path()).unwrap();
    assert!(matches!(
        recover_store(&store),
        Err(RecoveryError::Storage(StorageError::Corrupt(_)))
    ));
}
