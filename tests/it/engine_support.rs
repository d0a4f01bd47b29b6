//! Shared helpers of the engine-level tests.
#![allow(dead_code)] // each test module uses its own subset

use commerce_engine::domain::ids::{ProductId, UserId};
use commerce_engine::domain::order::LineRequest;
use commerce_engine::domain::world::World;
use commerce_engine::engine::{Clock, Engine, EngineConfig, OrderSource, PlaceOrder};
use commerce_engine::store::recovery::recover_store;
use commerce_engine::store::{MemoryStore, Store};
use std::sync::Arc;

/// The tests' one engine starter: an engine on `store`, which must start.
pub fn start(config: EngineConfig, store: Box<dyn Store>, clock: Arc<dyn Clock>) -> Engine {
    Engine::start(config, store, clock).expect("the engine starts on its store")
}

/// An engine on a fresh in-memory store (the same bytes a disk would hold).
pub fn engine_with(config: EngineConfig, clock: Arc<dyn Clock>) -> (Engine, MemoryStore) {
    let store = MemoryStore::new();
    let engine = start(config, Box::new(store.clone()), clock);
    (engine, store)
}

pub fn engine() -> (Engine, MemoryStore) {
    engine_with(
        EngineConfig::default(),
        Arc::new(commerce_engine::engine::SystemClock),
    )
}

/// Stops the engine and recovers what it wrote; asserts the recovered state has no violation.
pub async fn stop_and_recover(engine: Engine, store: &MemoryStore) -> World {
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .expect("shutdown");
    let (world, _) = recover_store(store).expect("the store recovers with every invariant holding");
    assert!(world.violations().is_empty(), "{:?}", world.violations());
    world
}

pub fn items(lines: &[(ProductId, u64)]) -> PlaceOrder {
    PlaceOrder {
        user_id: UserId(0),
        source: OrderSource::Items(
            lines
                .iter()
                .map(|&(product_id, quantity)| LineRequest {
                    product_id,
                    quantity,
                })
                .collect(),
        ),
        user_coupon_id: None,
    }
}

pub fn order_of(user_id: UserId, lines: &[(ProductId, u64)]) -> PlaceOrder {
    PlaceOrder {
        user_id,
        ..items(lines)
    }
}

/// The tests' one seeded generator (SplitMix64): deterministic workloads
/// without a crate; a seed replays a run.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}
