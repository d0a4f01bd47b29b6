//! Journal benchmarks.
//!
//! - `journal_durable`: records per second acknowledged durable by the
//!   group-commit [`JournalWriter`] on a [`SledStore`] in a temp dir, with
//!   64 or 512 records in flight (each acknowledgement immediately replaced
//!   by a new submission, as many concurrent callers would), at a few batch
//!   limits. Every acknowledged record has been flushed.
//! - `journal_replay`: records per second that [`recover`] replays from a
//!   `Loaded` of about a million records in memory (decode, checksum, apply
//!   to the `World`, invariants at the end), as at start-up.
//! - `flush`: one durable append of a 2.5 KB batch (a group-commit batch of
//!   about 25 records), one after another on one thread: through
//!   [`SledStore`] (a sled insert and flush, what the journal writer does
//!   per batch), and, for the floor under it, the same bytes written to a
//!   plain file with `pwrite` and then `sync_file_range` (what sled itself
//!   calls) or `fdatasync`.
//! - `snapshot`: a snapshot of 100k users (each with a paid order and 18
//!   history entries, so a whole history chunk and the order go to the
//!   archive): encoding its cut (what the journal writer does between
//!   batches), and writing it to a fresh [`SledStore`] (what the snapshot
//!   thread does: the archive, packs, and the merge into a first base);
//!   and encoding the cut of 10,000 users who each count units of 48 of
//!   1,000 products, as order_pay leaves them (it prints the bytes of the
//!   users' values).
//!
//! `cargo bench --bench journal -- --warm-up-time 1 --measurement-time 5`

use commerce_engine::domain::event::{Event, Record};
use commerce_engine::domain::ids::{OrderId, ProductId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderLine, OrderStatus};
use commerce_engine::domain::refund::Refunds;
use commerce_engine::domain::time::Timestamp;
use commerce_engine::domain::world::World;
use commerce_engine::store::codec::{self, Kind};
use commerce_engine::store::outbox::OutboxLive;
use commerce_engine::store::recent_keys::RecentKeys;
use commerce_engine::store::recovery::{cut_step, recover};
use commerce_engine::store::writer::{JournalConfig, JournalHandle, JournalWriter};
use commerce_engine::store::{Loaded, SledStore, SnapshotEntries, SnapshotKey, Store};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator the binary uses, so allocation costs are the binary's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const T: Timestamp = Timestamp(1_795_132_800_000);
const USERS: u64 = 1_000;

fn registered(users: u64) -> Vec<Record> {
    let mut out: Vec<Record> = (1..=users)
        .map(|u| {
            Record::new(
                T,
                Event::UserRegistered {
                    user_id: UserId(u),
                    name: format!("user {u}"),
                },
            )
        })
        .collect();
    out.push(Record::new(
        T,
        Event::ProductCreated {
            product_id: ProductId(1),
            name: "mug".into(),
            price: Krw(100),
            stock: 1_000_000_000,
        },
    ));
    out
}

/// A small record that leaves the durable state bounded however many are
/// written (a cart line set again and again).
fn cart_record(n: u64) -> Record {
    Record::new(
        T,
        Event::CartLineSet {
            user_id: UserId(n % USERS + 1),
            product_id: ProductId(1),
            name: "mug".into(),
            price: Krw(100),
            quantity: n % 100 + 1,
        },
    )
}

/// Submits `count` records keeping `in_flight` unacknowledged; answers the
/// time until the last acknowledgement.
async fn run_durable(
    handle: &JournalHandle,
    count: u64,
    in_flight: usize,
    next: &mut u64,
) -> Duration {
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut submitted = 0;
    while submitted < count || !pending.is_empty() {
        while submitted < count && pending.len() < in_flight {
            let rx = handle
                .submit(cart_record(*next))
                .expect("the queue has room");
            *next += 1;
            submitted += 1;
            pending.push(rx);
        }
        if let Some(ack) = pending.next().await {
            ack.expect("the writer answers")
                .expect("the batch is durable");
        }
    }
    started.elapsed()
}

fn journal_durable(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("journal_durable");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    for batch_records_max in [64, 1_024, 8_192] {
        for in_flight in [64, 512] {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path()).unwrap();
            let mut world = World::default();
            for (i, r) in registered(USERS).iter().enumerate() {
                world.apply(i as u64 + 1, r).unwrap();
            }
            let config = JournalConfig {
                batch_records_max,
                ..JournalConfig::default()
            };
            let writer = JournalWriter::start(
                Box::new(store),
                world,
                config,
                Arc::new(OutboxLive::default()),
                Arc::new(RecentKeys::new()),
            );
            let handle = writer.handle();
            let mut next = 0;
            group.bench_function(
                BenchmarkId::new(
                    format!("batch_{batch_records_max}"),
                    format!("in_flight_{in_flight}"),
                ),
                |b| {
                    b.iter_custom(|iters| {
                        rt.block_on(run_durable(&handle, iters, in_flight, &mut next))
                    })
                },
            );
            let batches = handle
                .stats
                .batches
                .load(std::sync::atomic::Ordering::Relaxed);
            let records = handle
                .stats
                .records
                .load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "  batch_{batch_records_max}/in_flight_{in_flight}: {records} records in {batches} flushes, {:.1} records per flush",
                records as f64 / batches.max(1) as f64
            );
            writer.join();
        }
    }
    group.finish();
}

/// An order of one mug (100 KRW) by `user`, placed and paid.
fn placed_and_paid(id: OrderId, user: UserId) -> [Record; 2] {
    placed_and_paid_of(id, user, ProductId(1))
}

/// [`placed_and_paid`] of one unit of `product`.
fn placed_and_paid_of(id: OrderId, user: UserId, product: ProductId) -> [Record; 2] {
    let order = Order {
        id,
        user_id: user,
        status: OrderStatus::Pending,
        items: vec![OrderLine {
            product_id: product,
            name: "mug".into(),
            unit_price: Krw(100),
            quantity: 1,
        }],
        total_amount: Krw(100),
        discount_amount: Krw(0),
        pay_amount: Krw(100),
        user_coupon_id: None,
        created_at: T,
        expires_at: T.plus_ms(600_000),
        paid_at: None,
        refunds: Refunds::NONE,
    };
    [
        Record::new(
            T,
            Event::OrderPlaced {
                order: Box::new(order),
                from_cart: false,
            },
        ),
        Record::new(
            T,
            Event::OrderPaid {
                order_id: id,
                user_id: user,
                amount: Krw(100),
            },
        ),
    ]
}

/// About a million records in batches of 1,000, replayable from empty:
/// users and a product, then charge, order, pay and a cart line, over and over.
fn replay_input(records: u64) -> Loaded {
    let mut all = registered(USERS);
    let mut order_id = 0;
    let mut n = 0u64;
    while (all.len() as u64) < records {
        let user = UserId(n % USERS + 1);
        order_id += 1;
        all.push(Record::new(
            T,
            Event::BalanceCharged {
                user_id: user,
                amount: Krw(100),
            },
        ));
        all.extend(placed_and_paid(OrderId(order_id), user));
        all.push(cart_record(n));
        n += 1;
    }
    let mut batches = Vec::new();
    for (i, chunk) in all.chunks(1_000).enumerate() {
        let mut frames = Vec::new();
        for r in chunk {
            codec::encode_into(Kind::Record, r, &mut frames).unwrap();
        }
        batches.push((i as u64 * 1_000 + 1, frames));
    }
    Loaded {
        snapshot_seq: 0,
        snapshots: Vec::new(),
        batches,
    }
}

fn journal_replay(c: &mut Criterion) {
    let loaded = replay_input(1_000_000);
    let records: usize = loaded
        .batches
        .iter()
        .map(|(_, f)| codec::decode_all::<Record>(Kind::Record, f).unwrap().len())
        .sum();
    let bytes: usize = loaded.batches.iter().map(|(_, f)| f.len()).sum();
    eprintln!("  replay input: {records} records, {bytes} bytes");
    let mut group = c.benchmark_group("journal_replay");
    group.throughput(Throughput::Elements(records as u64));
    group.sample_size(10);
    group.bench_function("recover_1m", |b| {
        b.iter_batched(
            || loaded.clone(),
            |l| {
                let (world, report) = recover(l).unwrap();
                assert_eq!(report.records_replayed, records as u64);
                world
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// What one flushed append costs through sled, against a plain file.
fn flush(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let batch = vec![0x5a_u8; 2_500];
    let mut group = c.benchmark_group("flush");
    group.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let mut seq = 1;
    group.bench_function("sled_insert_and_flush", |b| {
        b.iter(|| {
            store.append(seq, &batch).unwrap();
            seq += 1;
        })
    });
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("plain"))
        .unwrap();
    let mut at = 0u64;
    group.bench_function("file_pwrite_and_sync_file_range", |b| {
        b.iter(|| {
            file.write_all_at(&batch, at).unwrap();
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: a valid open descriptor and a range inside the file.
            let r = unsafe {
                libc::sync_file_range(file.as_raw_fd(), at as i64, batch.len() as i64, flags)
            };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            at += batch.len() as u64;
        })
    });
    group.bench_function("file_pwrite_and_fdatasync", |b| {
        b.iter(|| {
            file.write_all_at(&batch, at).unwrap();
            file.sync_data().unwrap();
            at += batch.len() as u64;
        })
    });
    group.finish();
}

/// A world of `users` users, each charged 18 times and with one paid
/// order, every one of them changed since the last snapshot.
fn snapshot_world(users: u64) -> World {
    let mut all = registered(users);
    for u in 1..=users {
        let user = UserId(u);
        for _ in 0..18 {
            all.push(Record::new(
                T,
                Event::BalanceCharged {
                    user_id: user,
                    amount: Krw(100),
                },
            ));
        }
        all.extend(placed_and_paid(OrderId(u), user));
    }
    let mut world = World::default();
    for (i, r) in all.iter().enumerate() {
        world.apply(i as u64 + 1, r).unwrap();
    }
    world
}

/// A world as a run of `order_pay` leaves it: 1,000 products and `users`
/// users, each of whom paid for `per_user` of them (so each user counts
/// units of `per_user` products), every user changed since the last
/// snapshot.
fn counted_world(users: u64, per_user: u64) -> World {
    assert!(per_user <= 50, "distinct products per user");
    let mut all = registered(users);
    all.extend((2..=1_000).map(|p| {
        Record::new(
            T,
            Event::ProductCreated {
                product_id: ProductId(p),
                name: "mug".into(),
                price: Krw(100),
                stock: 1_000_000_000,
            },
        )
    }));
    let mut order = 0;
    for u in 1..=users {
        all.push(Record::new(
            T,
            Event::BalanceCharged {
                user_id: UserId(u),
                amount: Krw(100 * per_user),
            },
        ));
        for k in 0..per_user {
            order += 1;
            let product = ProductId((u * 7 + k * 20) % 1_000 + 1);
            all.extend(placed_and_paid_of(OrderId(order), UserId(u), product));
        }
    }
    let mut world = World::default();
    for (i, r) in all.iter().enumerate() {
        world.apply(i as u64 + 1, r).unwrap();
    }
    world
}

/// Encodes a whole cut of `world`.
fn encoded_cut(world: &mut World) -> SnapshotEntries {
    world.begin_cut();
    let mut out = SnapshotEntries::default();
    while cut_step(world, &mut out, usize::MAX).unwrap().is_none() {}
    out
}

/// Times encoding a whole cut of a fresh copy of `world` (what the
/// journal writer does between batches).
fn bench_cut(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, world: &World) {
    group.bench_function(name, |b| {
        b.iter_batched(
            || world.clone(),
            |mut w| encoded_cut(&mut w),
            BatchSize::PerIteration,
        )
    });
}

fn snapshot(c: &mut Criterion) {
    const USERS: u64 = 100_000;
    let world = snapshot_world(USERS);
    let entries = encoded_cut(&mut world.clone()).len();
    eprintln!("  snapshot: {USERS} users, {entries} entries");
    assert!(entries as u64 > 3 * USERS);
    let mut group = c.benchmark_group("snapshot");
    group.throughput(Throughput::Elements(entries as u64));
    group.sample_size(10);
    bench_cut(&mut group, "encode_cut_100k_users", &world);
    group.bench_function("write_100k_users", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = SledStore::open(dir.path()).unwrap();
                (dir, store, encoded_cut(&mut world.clone()))
            },
            |(dir, store, entries)| {
                store.snapshot(1, entries).unwrap();
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// A cut of 10,000 users who each count units of 48 products (and the
/// 480,000 paid orders they placed, which the cut moves to the archive).
fn snapshot_counted(c: &mut Criterion) {
    let world = counted_world(10_000, 48);
    let entries = encoded_cut(&mut world.clone());
    let users: usize = entries
        .iter()
        .filter(|(k, _)| matches!(k, SnapshotKey::User(_)))
        .map(|(_, v)| v.map_or(0, <[u8]>::len))
        .sum();
    eprintln!(
        "  snapshot_counted: {} entries, users' values {users} bytes",
        entries.len()
    );
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    bench_cut(&mut group, "encode_cut_10k_users_48_products", &world);
    group.finish();
}

criterion_group!(
    benches,
    journal_durable,
    journal_replay,
    flush,
    snapshot,
    snapshot_counted
);
criterion_main!(benches);
