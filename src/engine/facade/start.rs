//! Starting the [`Engine`]: recovery, the actor system on its threads, the
//! journal writer and delivery; and shutting it down.

use super::{Engine, Inner, Running, StartError};
use crate::domain::coupon::Campaign;
use crate::domain::limits::Limits;
use crate::domain::order::Order;
use crate::domain::product::Product;
use crate::domain::stats::SalesWindow;
use crate::domain::user::User;
use crate::domain::world::World;
use crate::engine::campaign_actor::CampaignActor;
use crate::engine::clock::Clock;
use crate::engine::config::EngineConfig;
use crate::engine::coordinator::{Coordinator, CoordinatorSetup, OrderBook, Placement};
use crate::engine::delivery::admin::DataPlatformAdmin;
use crate::engine::delivery::{Delivery, DeliverySetup, DeliveryStats};
use crate::engine::directory::Directory;
use crate::engine::error::{Error, Result};
use crate::engine::idempotency::IdempotencyStore;
use crate::engine::product_actor::ProductActor;
use crate::engine::readiness::Lifecycle;
use crate::engine::registry::Registry;
use crate::engine::stats_actor::StatsActor;
use crate::engine::user_actor::UserActor;
use crate::store::outbox::OutboxLive;
use crate::store::outbox::OutboxState;
use crate::store::recent_keys::{RecentKey, RecentKeys};
use crate::store::recovery::{recover_for_serving_under, RecoveryError, RecoveryReport};
use crate::store::replicated::Replica;
use crate::store::writer::{JournalHandle, JournalWriter};
use crate::store::{outbox, outbox_legacy, ArchiveReader, OutboxStore, StorageError, Store};
use actix::prelude::*;
use actix::ArbiterHandle;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// A tokio current-thread runtime with timers, and with the I/O driver only
/// if `io` (sockets): without it, the thread parks on a futex, and a wake-up
/// from another thread costs no system call while it is busy (see
/// [`EngineConfig::actor_threads_io`]).
pub fn current_thread_runtime(io: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time();
    if io {
        builder.enable_io();
    }
    builder.build()
}

/// The runtime of an actor thread, with the I/O driver if `io`.
fn actor_runtime(io: bool) -> tokio::runtime::Runtime {
    // What actix's own default does when it cannot build one.
    current_thread_runtime(io).expect("build an actor thread's tokio runtime")
}

struct Actors {
    registry: Arc<Registry>,
    directory: Addr<Directory>,
    placement: Arc<Placement>,
    stats: Addr<StatsActor>,
}

fn start_actors(
    world: World,
    config: &EngineConfig,
    journal: JournalHandle,
    clock: Arc<dyn Clock>,
    limits: Arc<Limits>,
) -> Actors {
    let arbiters = start_arbiters(config);
    let World {
        users,
        products,
        campaigns,
        orders,
        meta,
        ..
    } = world;
    let user_coupon_ids = Arc::new(AtomicU64::new(meta.user_coupon_count));
    let sales = SalesWindow::of_products(&products);
    let entities = Entities {
        users,
        products,
        campaigns,
    };
    // One handle for every user's actor, those started here and those the
    // directory starts later ([`crate::engine::user_actor::UserActor`]).
    let users_journal = Arc::new(journal.clone());
    let registry = Arc::new(entities.start(
        &arbiters,
        &journal,
        &users_journal,
        &limits,
        &user_coupon_ids,
    ));
    let interval = config.stats_interval_ms;
    let stats_clock = clock.clone();
    let stats = StatsActor::start_in_arbiter(&at(&arbiters, 1), move |_| {
        StatsActor::new(sales, stats_clock, interval)
    });
    let coordinators = start_coordinators(&arbiters, orders.into_values(), || CoordinatorSetup {
        registry: registry.clone(),
        journal: journal.clone(),
        clock: clock.clone(),
        sweep_interval_ms: config.expiry_sweep_interval_ms,
        stats: stats.clone(),
    });
    let placement = Arc::new(Placement {
        registry: registry.clone(),
        journal: journal.clone(),
        clock,
        limits: limits.clone(),
        order_ttl_ms: config.order_ttl_ms,
        order_ids: AtomicU64::new(meta.order_id_max),
        shards: coordinators,
    });
    let dir_registry = registry.clone();
    let directory = Directory::start_in_arbiter(&at(&arbiters, 0), move |_| {
        Directory::new(dir_registry, users_journal, limits, user_coupon_ids)
    });
    Actors {
        registry,
        directory,
        placement,
        stats,
    }
}

/// The actor threads: the current one, then one more per extra arbiter.
fn start_arbiters(config: &EngineConfig) -> Vec<ArbiterHandle> {
    let mut arbiters = vec![Arbiter::current()];
    for _ in 1..config.arbiter_count.max(1) {
        let io = config.actor_threads_io;
        arbiters.push(Arbiter::with_tokio_rt(move || actor_runtime(io)).handle());
    }
    arbiters
}

/// The thread an entity (or shard) with id `id` lives on.
fn at(arbiters: &[ArbiterHandle], id: u64) -> ArbiterHandle {
    arbiters[(id as usize) % arbiters.len()].clone()
}

/// The recovered users, products and campaigns, each to become an actor.
struct Entities<U, P, C> {
    users: U,
    products: P,
    campaigns: C,
}

impl<U, P, C> Entities<U, P, C>
where
    U: IntoIterator<Item = User>,
    P: IntoIterator<Item = Product>,
    C: IntoIterator<Item = Campaign>,
{
    /// Starts one actor per entity on its thread; the registry finds them.
    fn start(
        self,
        arbiters: &[ArbiterHandle],
        journal: &JournalHandle,
        users_journal: &Arc<JournalHandle>,
        limits: &Arc<Limits>,
        user_coupon_ids: &Arc<AtomicU64>,
    ) -> Registry {
        let users = self
            .users
            .into_iter()
            .map(|u| {
                let (j, l) = (users_journal.clone(), limits.clone());
                UserActor::start_in_arbiter(&at(arbiters, u.id.0), move |_| UserActor::new(u, j, l))
            })
            .collect();
        let products = self
            .products
            .into_iter()
            .map(|p| {
                let arbiter = at(arbiters, p.id.0);
                ProductActor::launch(p, &arbiter, journal.clone(), limits.clone())
            })
            .collect();
        let campaigns = self
            .campaigns
            .into_iter()
            .map(|c| {
                let (j, ids) = (journal.clone(), user_coupon_ids.clone());
                CampaignActor::start_in_arbiter(&at(arbiters, c.id.0), move |_| {
                    CampaignActor::new(c, j, ids)
                })
            })
            .collect();
        Registry::new(arbiters.to_vec(), users, products, campaigns)
    }
}

/// One coordinator shard per arbiter; an order lives in shard `id % shards`.
fn start_coordinators(
    arbiters: &[ArbiterHandle],
    orders: impl IntoIterator<Item = Order>,
    setup: impl Fn() -> CoordinatorSetup,
) -> Vec<Addr<Coordinator>> {
    let shards = arbiters.len();
    let mut books: Vec<Vec<Order>> = (0..shards).map(|_| Vec::new()).collect();
    for order in orders {
        books[(order.id.0 as usize) % shards].push(order);
    }
    books
        .into_iter()
        .enumerate()
        .map(|(shard, orders)| {
            let setup = setup();
            let book = OrderBook::from_orders(orders);
            Coordinator::start_in_arbiter(&at(arbiters, shard as u64), move |_| {
                Coordinator::new(book, setup)
            })
        })
        .collect()
}

/// The data platform's outbox as recovered, and what delivery reads live.
struct RecoveredOutbox {
    store: Arc<dyn OutboxStore>,
    state: OutboxState,
    live: Arc<OutboxLive>,
}

/// Recovers the outbox (events of the journal's tail derived again) and
/// takes over an older store's outbox kept in the snapshot.
fn recover_outbox(
    store: &dyn Store,
    world: &mut World,
    archive: &ArchiveReader,
    snapshot_seq: u64,
) -> Result<RecoveredOutbox, StartError> {
    let storage = |e: StorageError| StartError::Recovery(RecoveryError::Storage(e));
    let outbox_store = store.outbox();
    let outbox = outbox::recover(store, &*outbox_store, world, snapshot_seq).map_err(storage)?;
    let state = outbox_legacy::take_over(&*outbox_store, world, archive).map_err(storage)?;
    tracing::info!(
        pending = state.pending(),
        dead_letters = state.dead_letters(),
        rederived = outbox.rederived,
        "data platform outbox"
    );
    let live = Arc::new(OutboxLive::new(&state));
    Ok(RecoveredOutbox {
        store: outbox_store,
        state,
        live,
    })
}

/// The keys of the journal's tail (and of an older store's snapshot),
/// known in memory until a snapshot moves them.
fn recent_keys_of(world: &World) -> Arc<RecentKeys> {
    let recent_keys = Arc::new(RecentKeys::new());
    for k in &world.dirty.keys {
        let key = RecentKey {
            fingerprint: k.key.fingerprint,
            at: k.key.at,
            seq: k.seq,
        };
        recent_keys.insert(k.hash, key);
    }
    recent_keys
}

/// The actor system, the thread it runs on (`actors-0`), and its actors.
type ActorSystem = (System, std::thread::JoinHandle<()>, Actors);

/// Starts the actor system on a thread of its own and the actors on it;
/// answers once every actor is started.
fn spawn_actor_system(
    world: World,
    config: &EngineConfig,
    journal: JournalHandle,
    clock: Arc<dyn Clock>,
    limits: Arc<Limits>,
) -> Result<ActorSystem, StartError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let cfg = config.clone();
    let thread = std::thread::Builder::new()
        .name("actors-0".into())
        .spawn(move || {
            let io = cfg.actor_threads_io;
            let system = System::with_tokio_rt(move || actor_runtime(io));
            system.block_on(async move {
                let actors = start_actors(world, &cfg, journal, clock, limits);
                let _ = tx.send((System::current(), actors));
            });
            let _ = system.run();
        })
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    let (system, actors) = rx.recv().map_err(|e| StartError::Runtime(e.to_string()))?;
    Ok((system, thread, actors))
}

/// Starts delivery of the outbox to the data platform (none when it is off).
fn start_delivery(
    config: &EngineConfig,
    outbox: &RecoveredOutbox,
    stats: Arc<DeliveryStats>,
    journal: JournalHandle,
    clock: Arc<dyn Clock>,
) -> Result<Option<Delivery>, StartError> {
    Delivery::start(DeliverySetup {
        platform: config.data_platform.clone(),
        store: outbox.store.clone(),
        live: outbox.live.clone(),
        stats,
        journal,
        clock,
        config: config.delivery(),
        file_len: outbox.state.file_len.unwrap_or(0),
    })
    .map_err(|e| StartError::Runtime(format!("data platform delivery: {e}")))
}

fn log_recovered(report: &RecoveryReport, world: &World) {
    tracing::info!(
        snapshot_seq = report.snapshot_seq,
        snapshot_entries = report.snapshot_entries,
        records_replayed = report.records_replayed,
        last_seq = report.last_seq,
        users = world.users.len(),
        products = world.products.len(),
        orders = world.orders.len(),
        "recovered"
    );
}

impl Engine {
    /// Runs a future made by `make(i)` on each of the engine's threads (one
    /// per actor thread, `i` from 0), for work that talks to the actors a
    /// lot, such as serving HTTP: a message to an actor on the same thread,
    /// and its answer, need no wake-up of another thread. The futures must
    /// never block (a blocked thread stalls its actors). Sockets and other
    /// tokio I/O need [`EngineConfig::actor_threads_io`]. Refused once the
    /// engine is shutting down.
    pub fn spawn_on_engine_threads<F, Fut>(&self, make: F) -> Result<()>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        for (i, arbiter) in self.inner.registry.arbiters().iter().enumerate() {
            if !arbiter.spawn(make(i)) {
                return Err(Error::ShuttingDown);
            }
        }
        Ok(())
    }

    /// Whether futures spawned on the engine's threads can use sockets (see
    /// [`EngineConfig::actor_threads_io`]).
    pub fn engine_threads_have_io(&self) -> bool {
        self.inner.actor_threads_io
    }

    /// How many threads [`spawn_on_engine_threads`](Engine::spawn_on_engine_threads) runs on.
    pub fn engine_threads(&self) -> usize {
        self.inner.registry.arbiters().len()
    }

    /// Recovers `store` (snapshots, journal, invariants) and starts the engine on it.
    pub fn start(
        config: EngineConfig,
        store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, StartError> {
        let (world, report) = recover_for_serving_under(&*store, &config.limits)?;
        Self::start_recovered(config, store, clock, world, report, None)
    }

    /// Starts the engine on `store`, whose durable state `world` is already
    /// recovered (a cluster's standby that takes over), with every batch
    /// published to `replica` before it is written locally. The invariants
    /// are checked again first.
    pub fn start_replicated(
        config: EngineConfig,
        store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
        world: World,
        replica: Box<dyn Replica>,
    ) -> Result<Engine, StartError> {
        let violations = world.violations_under(&config.limits);
        if !violations.is_empty() {
            return Err(StartError::Recovery(RecoveryError::Invariants(violations)));
        }
        let report = RecoveryReport {
            last_seq: world.seq,
            ..RecoveryReport::default()
        };
        Self::start_recovered(config, store, clock, world, report, Some(replica))
    }

    fn start_recovered(
        config: EngineConfig,
        store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
        world: World,
        report: RecoveryReport,
        replica: Option<Box<dyn Replica>>,
    ) -> Result<Engine, StartError> {
        log_recovered(&report, &world);
        let mut world = world;
        let archive = ArchiveReader(store.archive());
        let outbox = recover_outbox(&*store, &mut world, &archive, report.snapshot_seq)?;
        let recent_keys = recent_keys_of(&world);
        let keys = IdempotencyStore::new(recent_keys.clone());
        let writer = JournalWriter::start_replicated(
            store,
            world.clone(),
            config.journal.clone(),
            outbox.live.clone(),
            recent_keys,
            replica,
        );
        let journal = writer.handle();
        let limits = Arc::new(config.limits.clone());
        let (system, thread, actors) = spawn_actor_system(
            world,
            &config,
            journal.clone(),
            clock.clone(),
            limits.clone(),
        )?;
        let delivery_stats = Arc::new(DeliveryStats::default());
        let delivery = start_delivery(
            &config,
            &outbox,
            delivery_stats.clone(),
            journal.clone(),
            clock.clone(),
        )?;
        let journal_stats = journal.stats.clone();
        Ok(Engine {
            inner: Arc::new(Inner {
                registry: actors.registry,
                directory: actors.directory,
                placement: actors.placement,
                stats: actors.stats,
                journal,
                journal_stats,
                clock,
                limits,
                keys,
                data_platform: DataPlatformAdmin::new(outbox.store, outbox.live, delivery_stats),
                archive: std::sync::RwLock::new(Some(archive)),
                running: Mutex::new(Some(Running {
                    system,
                    thread,
                    writer,
                    delivery,
                })),
                actor_threads_io: config.actor_threads_io,
                lifecycle: Lifecycle::default(),
            }),
        })
    }

    /// Stops delivery and the actors, then lets the journal writer finish
    /// (it writes a last snapshot). Safe to call more than once. Blocking:
    /// from async code, call it in `spawn_blocking`.
    pub fn shutdown(&self) {
        self.inner.lifecycle.set_stopping();
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = running {
            if let Some(d) = r.delivery {
                d.stop();
            }
            r.system.stop();
            let _ = r.thread.join();
            r.writer.join();
        }
        self.inner
            .archive
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.inner.data_platform.release();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(r) = self
            .running
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            if let Some(d) = r.delivery {
                d.stop();
            }
            r.system.stop();
            let _ = r.thread.join();
            r.writer.join();
        }
    }
}
