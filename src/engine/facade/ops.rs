//! [`Engine`]: operations: memory gauges, snapshots, the data platform, metrics and health.

use super::{blocking, Engine, EngineMetrics, PageRequest};
use crate::domain::ids::UserId;
use crate::engine::actor::Read;
use crate::engine::coordinator::OrderBook;
use crate::engine::delivery::admin::{DataPlatformStatus, DeadLetters};
use crate::engine::delivery::DeliveryStats;
use crate::engine::error::Result;
use std::sync::atomic::Ordering;

impl Engine {
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
}
