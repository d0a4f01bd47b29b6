//! Engine round trips through the embedded [`Engine`] on a [`MemoryStore`]
//! (the journal writer, group commit and snapshots run as in production;
//! only the disk is left out, so these show the actors and their hops).
//!
//! Each iteration is one operation; with `in_flight` > 1 that many run
//! concurrently and the time per operation is the batch time divided out
//! (criterion's `iter_custom`), i.e. the inverse of throughput.
//!
//! `engine_io_driver` compares place + pay with the actor threads and the
//! caller's runtime without tokio's I/O driver (the embedded default) and
//! with it (as `serve` runs them), in one run.
//!
//! `cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3`

use commerce_engine::domain::ids::{ProductId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::LineRequest;
use commerce_engine::engine::{
    current_thread_runtime, Engine, EngineConfig, OrderSource, PlaceOrder, SystemClock,
};
use commerce_engine::store::MemoryStore;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::stream::{self, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator the binary uses, so allocation costs are the binary's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USERS: u64 = 1_000;
const PRODUCTS: u64 = 100;

struct Fixture {
    engine: Engine,
    users: Vec<UserId>,
    products: Vec<ProductId>,
}

/// A current-thread runtime for the callers, with the I/O driver or not.
fn caller_runtime(io: bool) -> tokio::runtime::Runtime {
    current_thread_runtime(io).expect("runtime")
}

async fn fixture(config: EngineConfig) -> Fixture {
    let engine = Engine::start(config, Box::new(MemoryStore::new()), Arc::new(SystemClock))
        .expect("engine starts");
    let mut users = Vec::new();
    for i in 0..USERS {
        let u = engine.create_user(&format!("u{i}"), None).await.unwrap();
        // 1e8 KRW: a million orders at 100 KRW, and room under the limit for charges.
        for _ in 0..10 {
            engine.charge(u.id, Krw(10_000_000), None).await.unwrap();
        }
        users.push(u.id);
    }
    let mut products = Vec::new();
    for i in 0..PRODUCTS {
        let p = engine
            .create_product(&format!("p{i}"), Krw(100), 1_000_000_000, None)
            .await
            .unwrap();
        products.push(p.id);
    }
    Fixture {
        engine,
        users,
        products,
    }
}

#[derive(Clone, Copy)]
enum Op {
    GetProduct,
    Charge,
    PlaceAndPay,
}

async fn one(f: &Fixture, op: Op, n: u64) {
    let user = f.users[(n % USERS) as usize];
    let product = f.products[(n % PRODUCTS) as usize];
    match op {
        Op::GetProduct => {
            f.engine.product(product).await.unwrap();
        }
        Op::Charge => {
            f.engine.charge(user, Krw(1), None).await.unwrap();
        }
        Op::PlaceAndPay => {
            let order = PlaceOrder {
                user_id: user,
                source: OrderSource::Items(vec![LineRequest {
                    product_id: product,
                    quantity: 1,
                }]),
                user_coupon_id: None,
            };
            let o = f.engine.place_order(order, None).await.unwrap();
            f.engine.pay_order(o.id, None).await.unwrap();
        }
    }
}

fn round_trips(c: &mut Criterion) {
    // As the embedded bench runs: no I/O driver anywhere.
    let rt = caller_runtime(false);
    let f = Arc::new(rt.block_on(fixture(EngineConfig::default())));
    let counter = AtomicU64::new(0);
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    for (name, op) in [
        ("get_product", Op::GetProduct),
        ("charge", Op::Charge),
        ("place_and_pay", Op::PlaceAndPay),
    ] {
        for in_flight in [1usize, 64] {
            g.bench_with_input(BenchmarkId::new(name, in_flight), &in_flight, |b, &k| {
                b.to_async(&rt)
                    .iter_custom(|iters| timed(f.clone(), op, k, &counter, iters))
            });
        }
    }
    g.finish();
    let f = Arc::into_inner(f).expect("benches are done with the engine");
    f.engine.shutdown();
}

/// `iters` operations, `in_flight` at a time; their time in all.
async fn timed(
    f: Arc<Fixture>,
    op: Op,
    in_flight: usize,
    counter: &AtomicU64,
    iters: u64,
) -> Duration {
    let first = counter.fetch_add(iters, Ordering::Relaxed);
    let start = Instant::now();
    stream::iter(first..first + iters)
        .for_each_concurrent(in_flight, |n| {
            let f = &f;
            async move { one(f, op, n).await }
        })
        .await;
    start.elapsed()
}

fn io_driver(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_io_driver");
    g.throughput(Throughput::Elements(1));
    for (name, io) in [("without", false), ("with", true)] {
        let rt = caller_runtime(io);
        let config = EngineConfig {
            actor_threads_io: io,
            ..EngineConfig::default()
        };
        let f = Arc::new(rt.block_on(fixture(config)));
        let counter = AtomicU64::new(0);
        g.bench_function(BenchmarkId::new("place_and_pay_64", name), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| timed(f.clone(), Op::PlaceAndPay, 64, &counter, iters))
        });
        let f = Arc::into_inner(f).expect("benches are done with the engine");
        f.engine.shutdown();
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = round_trips, io_driver
}
criterion_main!(benches);
