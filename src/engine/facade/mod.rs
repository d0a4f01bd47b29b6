//! [`Engine`]: the async facade, one method per use case of `API.md`.
//!
//! It runs its own actix `System` on its own threads (one Arbiter per
//! core), so it can be called from any tokio runtime, or from several.
//! Methods validate what the domain does not own (names, shapes), resolve
//! actor addresses, send one message, and map the reply; product reads need
//! no message, they read what the product's actor publishes (see
//! `product_actor`). Idempotency keys are handled here so HTTP and embedded
//! callers share them.

mod cart;
mod coupons;
mod ops;
mod orders;
mod product_admin;
mod products;
mod start;
mod users;

pub use start::current_thread_runtime;

use crate::domain::coupon::Discount;
use crate::domain::coupon_terms::CouponTerms;
use crate::domain::event::{Event, Record};
use crate::domain::ids::{CouponId, ProductId, UserCouponId, UserId};
use crate::domain::key_hash::{key_hash, KeyHash};
use crate::domain::limits::Limits;
use crate::domain::rejection::Rejection;
use crate::domain::time::Timestamp;
use crate::domain::user::User;
use crate::domain::views::{Replied, Reply};
use crate::domain::world::StoredKey;
use crate::engine::actor::Read;
use crate::engine::campaign_actor::CampaignActor;
use crate::engine::clock::Clock;
use crate::engine::coordinator::{OrderSource, Placement};
use crate::engine::delivery::admin::DataPlatformAdmin;
use crate::engine::delivery::Delivery;
use crate::engine::directory::Directory;
use crate::engine::error::{Error, Result};
use crate::engine::idempotency::{Begin, IdempotencyKey, IdempotencyStore, KeyGuard, Tag};
use crate::engine::product_actor::ProductRef;
use crate::engine::readiness::Lifecycle;
use crate::engine::registry::Registry;
use crate::engine::stats_actor::StatsActor;
use crate::engine::user_actor::UserActor;
use crate::store::recovery::RecoveryError;
use crate::store::writer::{
    BusinessTotals, JournalHandle, JournalStats, JournalWriter, WriterSteps,
};
use crate::store::{ArchiveReader, StorageError};
use actix::prelude::*;
use futures_util::future::Either;
use std::future::Future;
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
    /// Start, minimum order and discount cap; default: none.
    pub terms: CouponTerms,
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
    /// The archive, until shutdown.
    pub(super) fn archive(&self) -> Result<ArchiveReader> {
        self.inner
            .archive
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::ShuttingDown)
    }

    /// What the admin lists read (src/engine/admin_lists.rs).
    pub(super) fn parts(&self) -> (&Registry, &Placement, &crate::store::writer::ArchiveWatch) {
        (
            &self.inner.registry,
            &self.inner.placement,
            &self.inner.journal.archive,
        )
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Runs `op` under an idempotency key and its request's fingerprint
    /// ([`KeyedRequest::under`](crate::engine::keyed_request::KeyedRequest::under)):
    /// the first answer is stored with its record (a refusal in a record of
    /// its own); a retry with the same request gets it back; another
    /// request with the same key is refused.
    ///
    /// With no key the future is `op`'s alone: awaited inside the keyed
    /// path's future, it would also carry that path's state, and most
    /// requests come without a key.
    pub(in crate::engine) fn keyed<T, F, Fut>(
        &self,
        keyed: Option<(IdempotencyKey, u64)>,
        op: F,
    ) -> impl Future<Output = Result<T>> + Send + '_
    where
        T: Replied + Send + 'static,
        F: FnOnce(Engine, Option<Tag>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        match keyed {
            None => Either::Left(op(self.clone(), None)),
            Some((key, fp)) => Either::Right(self.run_keyed(key, fp, op)),
        }
    }

    /// [`Engine::keyed`] under a key.
    async fn run_keyed<T, F, Fut>(&self, key: IdempotencyKey, fp: u64, op: F) -> Result<T>
    where
        T: Replied + Send + 'static,
        F: FnOnce(Engine, Option<Tag>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
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
pub(super) async fn blocking<T: Send + 'static>(
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
