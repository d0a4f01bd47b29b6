//! [`Engine`]: the async facade, one method per use case of `API.md`.
//!
//! It runs its own actix `System` on its own threads (one Arbiter per
//! core), so it can be called from any tokio runtime, or from several.
//! Methods validate what the domain does not own (names, shapes), resolve
//! actor addresses, send one message, and map the reply; product reads need
//! no message, they read what the product's actor publishes (see
//! `product_actor`). Idempotency keys are handled here so HTTP and embedded
//! callers share them.

use crate::domain::coupon::Campaign;
use crate::domain::coupon::Discount;
use crate::domain::event::{Event, Record};
use crate::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use crate::domain::key_hash::{key_hash, KeyHash};
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::order::Order;
use crate::domain::product::Product;
use crate::domain::rejection::Rejection;
use crate::domain::stats::{SalesWindow, TopProducts};
use crate::domain::time::Timestamp;
use crate::domain::user::HISTORY_CHUNK;
use crate::domain::user::{BalanceEntry, CartLine, User};
use crate::domain::views::{
    BalanceView, CartView, CouponView, Page, ProductView, Replied, Reply, UserCouponView, UserView,
};
use crate::domain::world::{StoredKey, World};
use crate::engine::actor::Read;
use crate::engine::campaign_actor::{CampaignActor, Issue};
use crate::engine::clock::Clock;
use crate::engine::config::EngineConfig;
use crate::engine::coordinator::{
    Cancel, Coordinator, CoordinatorSetup, ExpireDue, OrderBook, OrderSource, Pay, Placement,
};
use crate::engine::delivery::admin::{DataPlatformAdmin, DataPlatformStatus, DeadLetters};
use crate::engine::delivery::{Delivery, DeliverySetup, DeliveryStats};
use crate::engine::directory::{CreateCampaign, CreateProduct, CreateUser, Directory};
use crate::engine::error::{Error, Result};
use crate::engine::idempotency::{Begin, IdempotencyKey, IdempotencyStore, KeyGuard, Tag};
use crate::engine::keyed_request::KeyedRequest;
use crate::engine::product_actor::{ProductActor, ProductRef, Restock};
use crate::engine::readiness::Lifecycle;
use crate::engine::registry::Registry;
use crate::engine::stats_actor::{Refresh, StatsActor, Top};
use crate::engine::user_actor::{CartChange, ChangeCart, Charge, UserActor};
use crate::store::outbox::OutboxLive;
use crate::store::recent_keys::{RecentKey, RecentKeys};
use crate::store::recovery::{recover_for_serving_under, RecoveryError, RecoveryReport};
use crate::store::replicated::Replica;
use crate::store::writer::{
    BusinessTotals, JournalHandle, JournalStats, JournalWriter, WriterSteps,
};
use crate::store::{outbox, outbox_legacy, ArchiveReader, StorageError, Store};
use actix::prelude::*;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A page request: `limit` in 1..=100, `after` the cursor of the previous page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub after: Option<u64>,
}

impl PageRequest {
    pub fn first(limit: usize) -> PageRequest {
        PageRequest { limit, after: None }
    }

    /// Validates `?limit=` and `?after=` as given by a client.
    pub fn parse(limit: Option<&str>, after: Option<&str>, limits: &Limits) -> Result<PageRequest> {
        let limit = match limit {
            None => limits.page_size_default,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=limits.page_size_max).contains(&n) => n,
                _ => {
                    return Err(Error::invalid(format!(
                        "limit must be between 1 and {}",
                        limits.page_size_max
                    )))
                }
            },
        };
        let after = match after {
            None => None,
            Some(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| Error::invalid("after must be a cursor from a previous page"))?,
            ),
        };
        Ok(PageRequest { limit, after })
    }
}

/// A new coupon campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCoupon {
    pub name: String,
    pub discount: Discount,
    pub quantity: u64,
    pub expires_at: Option<Timestamp>,
}

/// A new order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaceOrder {
    pub user_id: UserId,
    pub source: OrderSource,
    pub user_coupon_id: Option<UserCouponId>,
}

/// Gauges for `/metrics` and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineMetrics {
    pub users: u64,
    pub products: u64,
    pub campaigns: u64,
    pub actors: u64,
    pub journal_records: u64,
    pub journal_batches: u64,
    pub journal_last_batch_records: u64,
    pub journal_last_flush_us: u64,
    pub journal_queued: u64,
    /// Where the journal writer's time went since start, by step.
    pub journal_steps: WriterSteps,
    pub snapshots: u64,
    /// Snapshots that could not be cut or written, since start.
    pub snapshot_failures: u64,
    /// Events for the data platform not yet accepted nor dead letters.
    pub outbox_pending: u64,
    pub idempotency_keys: u64,
    /// Events added to the outbox from the journal, ever.
    pub data_platform_added: u64,
    /// Events the data platform accepted, ever.
    pub data_platform_delivered: u64,
    pub data_platform_dead_letters: u64,
    /// Failed delivery attempts since start.
    pub data_platform_failures: u64,
    /// Events delivery holds in memory now, and at most since start.
    pub data_platform_events_in_memory: u64,
    pub data_platform_events_in_memory_max: u64,
    /// Orders by outcome, KRW paid and coupons issued, durable since start.
    pub business: BusinessTotals,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("actor system did not start: {0}")]
    Runtime(String),
}

struct Running {
    system: System,
    thread: std::thread::JoinHandle<()>,
    writer: JournalWriter,
    delivery: Option<Delivery>,
}

struct Inner {
    registry: Arc<Registry>,
    directory: Addr<Directory>,
    placement: Arc<Placement>,
    stats: Addr<StatsActor>,
    journal: JournalHandle,
    journal_stats: Arc<JournalStats>,
    clock: Arc<dyn Clock>,
    limits: Arc<Limits>,
    keys: IdempotencyStore,
    /// The data platform's outbox and delivery, for status and metrics.
    data_platform: DataPlatformAdmin,
    /// Finished orders and old history, read from the store; let go at
    /// shutdown, so the store closes with the writer.
    archive: std::sync::RwLock<Option<ArchiveReader>>,
    running: Mutex<Option<Running>>,
    /// See [`EngineConfig::actor_threads_io`].
    actor_threads_io: bool,
    /// Starting and stopping, for [`Engine::readiness`].
    lifecycle: Lifecycle,
}

/// The commerce engine. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

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
    let mut arbiters = vec![Arbiter::current()];
    for _ in 1..config.arbiter_count.max(1) {
        let io = config.actor_threads_io;
        arbiters.push(Arbiter::with_tokio_rt(move || actor_runtime(io)).handle());
    }
    let at = |id: u64| arbiters[(id as usize) % arbiters.len()].clone();
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
    let users = users
        .into_iter()
        .map(|u: User| {
            let (j, l) = (journal.clone(), limits.clone());
            UserActor::start_in_arbiter(&at(u.id.0), move |_| UserActor::new(u, j, l))
        })
        .collect();
    let products = products
        .into_iter()
        .map(|p: Product| {
            let arbiter = at(p.id.0);
            ProductActor::launch(p, &arbiter, journal.clone(), limits.clone())
        })
        .collect();
    let campaigns = campaigns
        .into_iter()
        .map(|c: Campaign| {
            let (j, ids) = (journal.clone(), user_coupon_ids.clone());
            CampaignActor::start_in_arbiter(&at(c.id.0), move |_| CampaignActor::new(c, j, ids))
        })
        .collect();
    let registry = Arc::new(Registry::new(arbiters.clone(), users, products, campaigns));
    let interval = config.stats_interval_ms;
    let stats_clock = clock.clone();
    let stats = StatsActor::start_in_arbiter(&at(1), move |_| {
        StatsActor::new(sales, stats_clock, interval)
    });
    // One coordinator shard per Arbiter; an order lives in shard `id % shards`.
    let shards = arbiters.len();
    let mut books: Vec<Vec<Order>> = (0..shards).map(|_| Vec::new()).collect();
    for order in orders.into_values() {
        books[(order.id.0 as usize) % shards].push(order);
    }
    let coordinators: Vec<Addr<Coordinator>> = books
        .into_iter()
        .enumerate()
        .map(|(shard, orders)| {
            let setup = CoordinatorSetup {
                registry: registry.clone(),
                journal: journal.clone(),
                clock: clock.clone(),
                sweep_interval_ms: config.expiry_sweep_interval_ms,
                stats: stats.clone(),
            };
            let book = OrderBook::from_orders(orders);
            Coordinator::start_in_arbiter(&at(shard as u64), move |_| Coordinator::new(book, setup))
        })
        .collect();
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
    let directory = Directory::start_in_arbiter(&at(0), move |_| {
        Directory::new(dir_registry, journal, limits, user_coupon_ids)
    });
    Actors {
        registry,
        directory,
        placement,
        stats,
    }
}

/// Runs `work` to its end even if the caller stops waiting for it: a saga
/// that stopped half-way would leave holds taken, a keyed request its key
/// running. Outside a tokio runtime it simply runs inline.
///
/// `work` goes to the heap as soon as this is called, so the future returned
/// (and every future that awaits it) holds a pointer, not the saga: placing
/// an order is a future of about 5 KiB, which was otherwise copied whole
/// into each enclosing future and again into the spawned task.
fn to_the_end<T: Send + 'static>(
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> impl Future<Output = Result<T>> + Send {
    let work = Box::pin(work);
    async move {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.spawn(work).await.unwrap_or(Err(Error::ShuttingDown)),
            Err(_) => work.await,
        }
    }
}

fn check_name(field: &str, name: &str, limits: &Limits) -> Result<String> {
    let chars = name.chars().count();
    if chars == 0 || chars > limits.name_chars_max || name.trim().is_empty() {
        return Err(Error::invalid(format!(
            "{field} must be 1 to {} characters",
            limits.name_chars_max
        )));
    }
    Ok(name.to_owned())
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
        let mut world = world;
        let archive = ArchiveReader(store.archive());
        let storage = |e: StorageError| StartError::Recovery(RecoveryError::Storage(e));
        let outbox_store = store.outbox();
        let outbox = outbox::recover(&*store, &*outbox_store, &world, report.snapshot_seq)
            .map_err(storage)?;
        let state =
            outbox_legacy::take_over(&*outbox_store, &mut world, &archive).map_err(storage)?;
        tracing::info!(
            pending = state.pending(),
            dead_letters = state.dead_letters(),
            rederived = outbox.rederived,
            "data platform outbox"
        );
        let live = Arc::new(OutboxLive::new(&state));
        let delivery_stats = Arc::new(DeliveryStats::default());
        // The keys of the journal's tail (and of an older store's
        // snapshot) are known in memory until a snapshot moves them.
        let recent_keys = Arc::new(RecentKeys::new());
        for k in &world.dirty.keys {
            let key = RecentKey {
                fingerprint: k.key.fingerprint,
                at: k.key.at,
                seq: k.seq,
            };
            recent_keys.insert(k.hash, key);
        }
        let keys = IdempotencyStore::new(recent_keys.clone());
        let writer = JournalWriter::start_replicated(
            store,
            world.clone(),
            config.journal.clone(),
            live.clone(),
            recent_keys,
            replica,
        );
        let journal = writer.handle();
        let limits = Arc::new(config.limits.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let (j, c, l, cfg) = (
            journal.clone(),
            clock.clone(),
            limits.clone(),
            config.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("actors-0".into())
            .spawn(move || {
                let io = cfg.actor_threads_io;
                let system = System::with_tokio_rt(move || actor_runtime(io));
                system.block_on(async move {
                    let actors = start_actors(world, &cfg, j, c, l);
                    let _ = tx.send((System::current(), actors));
                });
                let _ = system.run();
            })
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        let (system, actors) = rx.recv().map_err(|e| StartError::Runtime(e.to_string()))?;
        let delivery = Delivery::start(DeliverySetup {
            platform: config.data_platform.clone(),
            store: outbox_store.clone(),
            live: live.clone(),
            stats: delivery_stats.clone(),
            journal: journal.clone(),
            clock: clock.clone(),
            config: config.delivery(),
            file_len: state.file_len.unwrap_or(0),
        })
        .map_err(|e| StartError::Runtime(format!("data platform delivery: {e}")))?;
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
                data_platform: DataPlatformAdmin::new(outbox_store, live, delivery_stats),
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

    /// The archive, until shutdown.
    fn archive(&self) -> Result<ArchiveReader> {
        self.inner
            .archive
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::ShuttingDown)
    }

    /// The coordinator shard that owns order `id`.
    pub(super) fn order_shard(&self, id: OrderId) -> &Addr<Coordinator> {
        self.inner.placement.shard(id)
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Runs `op` under an idempotency key: the first answer is stored with
    /// its record (a refusal in a record of its own); a retry with the same
    /// request gets it back; another request with the same key is refused.
    pub(super) async fn keyed<T, F, Fut>(
        &self,
        key: Option<IdempotencyKey>,
        fp: u64,
        op: F,
    ) -> Result<T>
    where
        T: Replied + Send + 'static,
        F: FnOnce(Engine, Option<Tag>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let Some(key) = key else {
            return op(self.clone(), None).await;
        };
        let tag = loop {
            match self.inner.keys.begin(&key, fp)? {
                Begin::Check(tag) => {
                    let guard = KeyGuard::new(&self.inner.keys, tag);
                    let archive = self.archive()?;
                    let hash = guard.tag().hash;
                    match blocking(move || archive.key(hash)).await? {
                        // Runs from here on its own task, whose guard ends the key.
                        None => break guard.hand_over(),
                        Some(stored) => {
                            let tag = guard.hand_over();
                            self.inner.keys.found(&tag, stored.fingerprint, stored.at);
                            return replayed(stored, fp);
                        }
                    }
                }
                Begin::Replay { hash, seq } => {
                    let archive = self.archive()?;
                    let stored = blocking(move || stored_answer(&archive, hash, seq)).await?;
                    return replayed(stored, fp);
                }
                Begin::Wait(rx) => {
                    let _ = rx.await;
                }
            }
        };
        // From here the key is running: the request runs to its end on its own
        // task, so a caller that gives up cannot leave the key running forever
        // (nor release it while its record may still become durable); the
        // guard ends it even if the request panics.
        let engine = self.clone();
        let run = async move {
            let guard = KeyGuard::new(&engine.inner.keys, tag);
            let result = op(engine.clone(), Some(guard.tag().clone())).await;
            match result {
                Err(Error::Rejected(r)) if !engine.inner.keys.recorded(guard.tag()) => {
                    engine.record_refusal(guard.tag(), &r).await;
                    Err(Error::Rejected(r))
                }
                other => other,
            }
        };
        to_the_end(run).await
    }

    /// Keeps a refusal under its key, in a record of its own, so a retry
    /// gets the same answer. If that record cannot be written the refusal
    /// still stands (nothing changed); a retry then runs the request again.
    async fn record_refusal(&self, tag: &Tag, refusal: &Rejection) {
        let record = Record {
            at: self.now(),
            event: Event::RequestRefused,
            idempotency: Some(tag.clone().entry(Reply::Rejected(refusal.clone()))),
        };
        if let Ok(rx) = self.inner.journal.submit(record) {
            let _ = rx.await;
        }
    }

    fn user_addr(&self, id: UserId) -> Result<Addr<UserActor>> {
        self.inner
            .registry
            .users
            .get(id.0)
            .ok_or_else(|| Rejection::UserNotFound(id).into())
    }

    fn product_ref(&self, id: ProductId) -> Result<ProductRef> {
        self.inner
            .registry
            .products
            .get(id.0)
            .ok_or_else(|| Rejection::ProductNotFound(id).into())
    }

    fn campaign_addr(&self, id: CouponId) -> Result<Addr<CampaignActor>> {
        self.inner
            .registry
            .campaigns
            .get(id.0)
            .ok_or_else(|| Rejection::CouponNotFound(id).into())
    }

    async fn read_user<R: Send + 'static>(
        &self,
        id: UserId,
        f: impl FnOnce(&User) -> R + Send + 'static,
    ) -> Result<R> {
        Ok(self.user_addr(id)?.send(Read::new(f)).await?)
    }

    // ---- users and balance ----

    pub async fn create_user(&self, name: &str, key: Option<IdempotencyKey>) -> Result<UserView> {
        let name = check_name("name", name, &self.inner.limits)?;
        let request = KeyedRequest::CreateUser { name: &name };
        self.keyed(key, request.fingerprint(), move |engine, tag| async move {
            engine
                .inner
                .directory
                .send(CreateUser {
                    name,
                    at: engine.now(),
                    tag,
                })
                .await?
        })
        .await
    }

    pub async fn user(&self, id: UserId) -> Result<UserView> {
        self.read_user(id, |u| UserView::from(u)).await
    }

    pub async fn balance(&self, id: UserId) -> Result<BalanceView> {
        self.read_user(id, |u| BalanceView {
            user_id: u.id,
            balance: u.balance,
        })
        .await
    }

    pub async fn charge(
        &self,
        id: UserId,
        amount: Krw,
        key: Option<IdempotencyKey>,
    ) -> Result<BalanceView> {
        let addr = self.user_addr(id)?;
        let request = KeyedRequest::Charge { user: id, amount };
        self.keyed(key, request.fingerprint(), move |engine, tag| async move {
            addr.send(Charge {
                amount,
                at: engine.now(),
                tag,
            })
            .await?
        })
        .await
    }

    /// Balance history, newest first; the cursor is an entry's `seq`.
    /// The newest entries are in the user actor, older ones in the archive.
    pub async fn history(&self, id: UserId, page: PageRequest) -> Result<Page<BalanceEntry>> {
        let (upto, mut items) = self
            .read_user(id, move |u| {
                let len = u.history_len();
                // Entries with seq <= upto, newest first.
                let upto = page.after.map_or(len, |a| a.saturating_sub(1).min(len));
                let kept = upto.saturating_sub(u.history_base) as usize;
                let items: Vec<BalanceEntry> = u.history[..kept]
                    .iter()
                    .rev()
                    .take(page.limit)
                    .cloned()
                    .collect();
                (upto, items)
            })
            .await?;
        let mut older = upto - items.len() as u64;
        while items.len() < page.limit && older > 0 {
            let chunk = (older - 1) / HISTORY_CHUNK as u64;
            let archive = self.archive()?;
            let entries = blocking(move || archive.history_chunk(id, chunk))
                .await?
                .ok_or_else(|| {
                    Error::Storage(StorageError::Corrupt(format!(
                        "history chunk {chunk} of user {id} is not in the archive"
                    )))
                })?;
            items.extend(
                entries
                    .into_iter()
                    .rev()
                    .filter(|e| e.seq <= older)
                    .take(page.limit - items.len()),
            );
            older = chunk * HISTORY_CHUNK as u64;
        }
        let next = match items.last() {
            Some(last) if last.seq > 1 && items.len() == page.limit => Some(last.seq.to_string()),
            _ => None,
        };
        Ok(Page { items, next })
    }

    // ---- products ----

    pub async fn create_product(
        &self,
        name: &str,
        price: Krw,
        stock: u64,
        key: Option<IdempotencyKey>,
    ) -> Result<ProductView> {
        let limits = &self.inner.limits;
        let name = check_name("name", name, limits)?;
        if price < limits.price_krw_min || price > limits.price_krw_max {
            return Err(Error::invalid(format!(
                "price must be between {} and {}",
                limits.price_krw_min.0, limits.price_krw_max.0
            )));
        }
        if stock > limits.stock_count_max {
            return Err(Error::invalid(format!(
                "stock must be between 0 and {}",
                limits.stock_count_max
            )));
        }
        let request = KeyedRequest::CreateProduct {
            name: &name,
            price,
            stock,
        };
        self.keyed(key, request.fingerprint(), move |engine, tag| async move {
            engine
                .inner
                .directory
                .send(CreateProduct {
                    name,
                    price,
                    stock,
                    at: engine.now(),
                    tag,
                })
                .await?
        })
        .await
    }

    pub async fn product(&self, id: ProductId) -> Result<ProductView> {
        let products = &self.inner.registry.products;
        match products.with(id.0, ProductRef::published) {
            None => Err(Rejection::ProductNotFound(id).into()),
            Some(Some(view)) => Ok(view),
            // News in flight: ask the actor, behind it.
            Some(None) => Ok(self.product_ref(id)?.view().await?),
        }
    }

    /// Products by id; the cursor is the last id of the page.
    pub async fn products(&self, page: PageRequest) -> Result<Page<ProductView>> {
        let first = page.after.map_or(1, |a| a.saturating_add(1));
        let products = self.inner.registry.products.range(first, page.limit + 1);
        let more = products.len() > page.limit;
        let reads = products
            .iter()
            .take(page.limit)
            .map(|(_, product)| product.view());
        let items = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let next = if more {
            items.last().map(|p| p.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub async fn restock(
        &self,
        id: ProductId,
        quantity: u64,
        key: Option<IdempotencyKey>,
    ) -> Result<ProductView> {
        let addr = self.product_ref(id)?.addr;
        let request = KeyedRequest::Restock {
            product: id,
            quantity,
        };
        self.keyed(key, request.fingerprint(), move |engine, tag| async move {
            addr.send(Restock {
                quantity,
                at: engine.now(),
                tag,
            })
            .await?
        })
        .await
    }

    /// The ranking as of the last refresh.
    pub async fn top_products(&self) -> Result<TopProducts> {
        Ok(self.inner.stats.send(Top).await?)
    }

    /// Recomputes the ranking now.
    pub async fn refresh_stats(&self) -> Result<TopProducts> {
        Ok(self.inner.stats.send(Refresh).await?)
    }

    // ---- coupons ----

    pub async fn create_coupon(
        &self,
        new: NewCoupon,
        key: Option<IdempotencyKey>,
    ) -> Result<CouponView> {
        let limits = &self.inner.limits;
        let name = check_name("name", &new.name, limits)?;
        let discount = new.discount.validate(limits)?;
        if new.quantity == 0 || new.quantity > limits.coupon_quantity_max {
            return Err(Error::invalid(format!(
                "quantity must be between 1 and {}",
                limits.coupon_quantity_max
            )));
        }
        let request = KeyedRequest::CreateCoupon {
            name: &name,
            discount: &discount,
            quantity: new.quantity,
            expires_at: new.expires_at,
        };
        self.keyed(key, request.fingerprint(), move |engine, tag| async move {
            let msg = CreateCampaign {
                name,
                discount,
                quantity: new.quantity,
                expires_at: new.expires_at,
                at: engine.now(),
                tag,
            };
            engine.inner.directory.send(msg).await?
        })
        .await
    }

    pub async fn coupon(&self, id: CouponId) -> Result<CouponView> {
        Ok(self
            .campaign_addr(id)?
            .send(Read::new(|c: &Campaign| CouponView::from(c)))
            .await?)
    }

    pub async fn issue_coupon(
        &self,
        coupon_id: CouponId,
        user_id: UserId,
        key: Option<IdempotencyKey>,
    ) -> Result<UserCouponView> {
        let campaign = self.campaign_addr(coupon_id)?;
        let user = self.user_addr(user_id)?;
        let request = KeyedRequest::IssueCoupon {
            coupon: coupon_id,
            user: user_id,
        };
        self.keyed(key, request.fingerprint(), move |engine, tag| async move {
            campaign
                .send(Issue {
                    user_id,
                    user,
                    at: engine.now(),
                    tag,
                })
                .await?
        })
        .await
    }

    /// A user's coupons by id; the cursor is the last id of the page.
    pub async fn user_coupons(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<UserCouponView>> {
        let now = self.now();
        self.read_user(user_id, move |u| {
            let mut coupons: Vec<&crate::domain::user::UserCoupon> = u
                .coupons
                .iter()
                .filter(|c| page.after.is_none_or(|a| c.id.0 > a))
                .collect();
            coupons.sort_unstable_by_key(|c| c.id);
            let more = coupons.len() > page.limit;
            let items: Vec<UserCouponView> = coupons
                .into_iter()
                .take(page.limit)
                .map(|c| UserCouponView::new(u.id, c, now))
                .collect();
            let next = if more {
                items.last().map(|c| c.id.to_string())
            } else {
                None
            };
            Page { items, next }
        })
        .await
    }

    // ---- cart ----

    pub async fn cart(&self, user_id: UserId) -> Result<CartView> {
        self.read_user(user_id, |u| CartView::from(u)).await
    }

    /// Adds a line, or sets the quantity of a product already in the cart.
    /// Refused when the product's stock is below `quantity`; reserves nothing.
    pub async fn set_cart_item(
        &self,
        user_id: UserId,
        product_id: ProductId,
        quantity: u64,
        key: Option<IdempotencyKey>,
    ) -> Result<CartView> {
        let user = self.user_addr(user_id)?;
        let product = self.product_ref(product_id)?;
        let limits = &self.inner.limits;
        if quantity == 0 || quantity > limits.line_quantity_max {
            return Err(Error::invalid(format!(
                "quantity must be between 1 and {}",
                limits.line_quantity_max
            )));
        }
        let request = KeyedRequest::SetCartItem {
            user: user_id,
            product: product_id,
            quantity,
        };
        self.keyed(key, request.fingerprint(), move |engine, tag| async move {
            let ProductView {
                name,
                price,
                stock: available,
                ..
            } = product.view().await?;
            if available < quantity {
                return Err(Rejection::OutOfStock {
                    product_id,
                    available,
                    requested: quantity,
                }
                .into());
            }
            let line = CartLine {
                product_id,
                name,
                price,
                quantity,
            };
            user.send(ChangeCart {
                change: CartChange::Set(line),
                at: engine.now(),
                tag,
            })
            .await?
        })
        .await
    }

    pub async fn remove_cart_item(
        &self,
        user_id: UserId,
        product_id: ProductId,
    ) -> Result<CartView> {
        let user = self.user_addr(user_id)?;
        let in_cart = user
            .send(Read::new(move |u: &User| {
                u.cart.iter().any(|l| l.product_id == product_id)
            }))
            .await?;
        if !in_cart {
            // Nothing to remove: answer the cart as it is (DELETE is idempotent).
            self.product_ref(product_id)?;
            return self.cart(user_id).await;
        }
        user.send(ChangeCart {
            change: CartChange::Remove(product_id),
            at: self.now(),
            tag: None,
        })
        .await?
    }

    // ---- orders ----

    pub async fn place_order(
        &self,
        order: PlaceOrder,
        key: Option<IdempotencyKey>,
    ) -> Result<Order> {
        let fp = KeyedRequest::PlaceOrder(&order).fingerprint();
        // The placing saga runs on the caller's task: it must not stop half-way.
        let engine = self.clone();
        to_the_end(async move {
            engine
                .keyed(key, fp, move |engine, tag| async move {
                    let placement = &engine.inner.placement;
                    placement
                        .place(order.user_id, order.source, order.user_coupon_id, tag)
                        .await
                })
                .await
        })
        .await
    }

    pub async fn order(&self, id: OrderId) -> Result<Order> {
        let found = self
            .inner
            .placement
            .shard(id)
            .send(Read::new(move |b: &OrderBook| b.orders.get(&id).cloned()))
            .await?;
        match found {
            Some(order) => Ok(order),
            None => self
                .archived_order(id)
                .await?
                .ok_or_else(|| Rejection::OrderNotFound(id).into()),
        }
    }

    /// A finished order from the archive.
    pub(super) async fn archived_order(&self, id: OrderId) -> Result<Option<Order>> {
        let archive = self.archive()?;
        blocking(move || archive.order(id)).await
    }

    /// A pay or cancel of an order the shard does not hold: an archived
    /// order is finished, so it is refused as `finished`, not as not found.
    async fn unless_archived(&self, result: Result<Order>, finished: Rejection) -> Result<Order> {
        match result {
            Err(Error::Rejected(Rejection::OrderNotFound(id))) => {
                match self.archived_order(id).await? {
                    Some(_) => Err(finished.into()),
                    None => Err(Rejection::OrderNotFound(id).into()),
                }
            }
            other => other,
        }
    }

    /// A user's orders, newest first; the cursor is the last id of the page.
    pub async fn user_orders(&self, user_id: UserId, page: PageRequest) -> Result<Page<Order>> {
        self.user_addr(user_id)?;
        // Each shard answers its newest `limit + 1` below the cursor, then
        // the archive its newest `limit + 1` ids: the page is the newest of
        // all. In this order, an order archived meanwhile is in one or the
        // other (a shard lets go of one only once the archive holds it).
        let limit = page.limit;
        let reads = self.inner.placement.shards.iter().map(|shard| {
            shard.send(Read::new(move |b: &OrderBook| {
                let ids = b.by_user.get(&user_id).map(Vec::as_slice).unwrap_or(&[]);
                let upto = page
                    .after
                    .map_or(ids.len(), |a| ids.partition_point(|id| id.0 < a));
                ids[..upto]
                    .iter()
                    .rev()
                    .take(limit + 1)
                    .filter_map(|id| b.orders.get(id).cloned())
                    .collect::<Vec<Order>>()
            }))
        });
        let mut found: Vec<(OrderId, Option<Order>)> = Vec::new();
        for shard in futures_util::future::join_all(reads).await {
            found.extend(shard?.into_iter().map(|o| (o.id, Some(o))));
        }
        let archive = self.archive()?;
        let (items, more) = blocking(move || {
            let before = page.after.map(OrderId);
            for id in archive.user_orders(user_id, before, limit + 1)? {
                found.push((id, None));
            }
            // Newest first; of an id in both, the one from memory.
            found.sort_unstable_by_key(|(id, order)| (std::cmp::Reverse(*id), order.is_none()));
            found.dedup_by_key(|(id, _)| *id);
            let more = found.len() > limit;
            found.truncate(limit);
            let wanted: Vec<OrderId> = found
                .iter()
                .filter(|(_, order)| order.is_none())
                .map(|(id, _)| *id)
                .collect();
            let mut archived = archive.orders(&wanted)?.into_iter();
            let items = found
                .into_iter()
                .map(|(id, order)| match order {
                    Some(o) => Ok(o),
                    None => archived.next().flatten().ok_or_else(|| {
                        StorageError::Corrupt(format!("order {id} is not in the archive"))
                    }),
                })
                .collect::<Result<Vec<Order>, StorageError>>()?;
            Ok((items, more))
        })
        .await?;
        let next = if more {
            items.last().map(|o| o.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub async fn cancel_order(&self, id: OrderId, key: Option<IdempotencyKey>) -> Result<Order> {
        let request = KeyedRequest::CancelOrder(id);
        self.keyed(key, request.fingerprint(), move |engine, tag| async move {
            let result = engine
                .inner
                .placement
                .shard(id)
                .send(Cancel { order_id: id, tag })
                .await?;
            engine
                .unless_archived(result, Rejection::OrderNotCancellable(id))
                .await
        })
        .await
    }

    pub async fn pay_order(&self, id: OrderId, key: Option<IdempotencyKey>) -> Result<Order> {
        let request = KeyedRequest::PayOrder(id);
        self.keyed(key, request.fingerprint(), move |engine, tag| async move {
            let result = engine
                .inner
                .placement
                .shard(id)
                .send(Pay { order_id: id, tag })
                .await?;
            engine
                .unless_archived(result, Rejection::OrderNotPayable(id))
                .await
        })
        .await
    }

    /// Expires every pending order whose time is up now (also runs on a timer).
    pub async fn expire_due_orders(&self) -> Result<usize> {
        let sweeps = self
            .inner
            .placement
            .shards
            .iter()
            .map(|shard| shard.send(ExpireDue));
        let mut expired = 0;
        for swept in futures_util::future::join_all(sweeps).await {
            expired += swept?;
        }
        Ok(expired)
    }

    // ---- operations ----

    /// Orders held in memory (pending ones, and finished ones until a
    /// snapshot archives them), over every coordinator shard.
    pub async fn orders_in_memory(&self) -> Result<usize> {
        self.sum_over_shards(|b| b.orders.len()).await
    }

    /// Order ids held in memory in the shards' lists by user: those of
    /// the orders held, no more (archived ones are listed by the archive).
    pub async fn user_order_ids_in_memory(&self) -> Result<usize> {
        self.sum_over_shards(|b| b.by_user.values().map(Vec::len).sum())
            .await
    }

    async fn sum_over_shards(&self, count: fn(&OrderBook) -> usize) -> Result<usize> {
        let reads = self
            .inner
            .placement
            .shards
            .iter()
            .map(|shard| shard.send(Read::new(count)));
        let mut held = 0;
        for shard in futures_util::future::join_all(reads).await {
            held += shard?;
        }
        Ok(held)
    }

    /// Balance history entries of a user held in memory (the rest is archived).
    pub async fn history_in_memory(&self, id: UserId) -> Result<usize> {
        self.read_user(id, |u| u.history.len()).await
    }

    /// Writes a snapshot of everything durable now; answers the sequence it covers.
    pub async fn snapshot(&self) -> Result<u64> {
        Ok(self.inner.journal.snapshot().await?)
    }

    /// Events for the data platform neither accepted nor dead letters.
    pub fn outbox_pending(&self) -> usize {
        self.inner.data_platform.live().pending() as usize
    }

    /// `GET /api/v1/admin/data-platform`: what is pending, delivered, dead.
    pub async fn data_platform_status(&self) -> Result<DataPlatformStatus> {
        let engine = self.clone();
        blocking(move || engine.inner.data_platform.status()).await
    }

    /// Up to `page.limit` dead letters after the cursor `page.after`.
    pub async fn dead_letters(&self, page: PageRequest) -> Result<DeadLetters> {
        let engine = self.clone();
        blocking(move || {
            engine
                .inner
                .data_platform
                .dead_letters(page.after, page.limit)
        })
        .await
    }

    /// Sends every dead letter there is now again (they rejoin the
    /// outbox); answers how many.
    pub async fn redrive_dead_letters(&self) -> Result<u64> {
        let engine = self.clone();
        blocking(move || engine.inner.data_platform.redrive()).await
    }

    /// Delivery's own counters (events held in memory, pauses, failures).
    pub fn delivery_stats(&self) -> &DeliveryStats {
        self.inner.data_platform.stats()
    }

    pub fn metrics(&self) -> EngineMetrics {
        let r = &self.inner.registry;
        let j = &self.inner.journal_stats;
        let (users, products, campaigns) = (
            r.users.len() as u64,
            r.products.len() as u64,
            r.campaigns.len() as u64,
        );
        EngineMetrics {
            users,
            products,
            campaigns,
            actors: users + products + campaigns + 2 + self.inner.placement.shards.len() as u64,
            journal_records: j.records.load(Ordering::Relaxed),
            journal_batches: j.batches.load(Ordering::Relaxed),
            journal_last_batch_records: j.last_batch_records.load(Ordering::Relaxed),
            journal_last_flush_us: j.last_flush_us.load(Ordering::Relaxed),
            journal_queued: j.queued.load(Ordering::Relaxed),
            journal_steps: j.time.load(),
            snapshots: j.snapshots.load(Ordering::Relaxed),
            snapshot_failures: j.snapshot_health.failures(),
            outbox_pending: self.inner.data_platform.live().pending(),
            idempotency_keys: self.inner.keys.len() as u64,
            data_platform_added: self.inner.data_platform.live().added(),
            data_platform_delivered: self.inner.data_platform.live().delivered(),
            data_platform_dead_letters: self.inner.data_platform.live().dead_letters(),
            data_platform_failures: self.inner.data_platform.stats().failures(),
            data_platform_events_in_memory: self.inner.data_platform.stats().events_in_memory(),
            data_platform_events_in_memory_max: self
                .inner
                .data_platform
                .stats()
                .events_in_memory_max(),
            business: j.business.load(),
        }
    }

    /// While snapshots fail: how many in a row, and the last error. Writes
    /// go on meanwhile; the journal keeps everything since the last one.
    pub fn snapshots_failing(&self) -> Option<(u64, String)> {
        self.inner.journal_stats.snapshot_health.failing()
    }

    /// True once storage has failed: the engine refuses every write until restarted.
    pub fn is_degraded(&self) -> bool {
        self.inner.journal.is_poisoned()
    }

    /// The starting and stopping flags of [`Engine::readiness`].
    pub(crate) fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }
}

/// The answer a stored key keeps, as the request's: a refusal is the same
/// error again; another request's fingerprint is a reuse of the key.
fn replayed<T: Replied>(stored: StoredKey, fingerprint: u64) -> Result<T> {
    if stored.fingerprint != fingerprint {
        return Err(Error::IdempotencyKeyReused);
    }
    match stored.reply {
        Reply::Rejected(r) => Err(r.into()),
        reply => T::from_reply(reply).ok_or(Error::IdempotencyKeyReused),
    }
}

/// The stored answer of the key of `hash`, recorded at `seq`: in the key
/// tables once a snapshot moved it there, in the journal until then. The
/// tables are read again after the journal: a snapshot may move the key
/// and trim its record between the two reads.
fn stored_answer(
    archive: &ArchiveReader,
    hash: KeyHash,
    seq: u64,
) -> Result<StoredKey, StorageError> {
    if let Some(stored) = archive.key(hash)? {
        return Ok(stored);
    }
    if let Some(record) = archive.journal_record(seq)? {
        if let Some(entry) = record.idempotency.filter(|e| key_hash(&e.key) == hash) {
            return Ok(StoredKey {
                fingerprint: entry.fingerprint,
                reply: entry.reply,
                at: record.at,
            });
        }
    }
    archive.key(hash)?.ok_or_else(|| {
        StorageError::Corrupt(format!(
            "the answer of an idempotency key recorded at {seq} is missing"
        ))
    })
}

/// Runs a store read off the async threads when there are blocking threads to run it on.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T> {
    let result = match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt
            .spawn_blocking(read)
            .await
            .map_err(|_| Error::ShuttingDown)?,
        Err(_) => read(),
    };
    result.map_err(Error::Storage)
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
