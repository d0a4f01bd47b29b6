//! What the operator sees of delivery and does with it: the status, the
//! dead letters, a redrive. Reads go to the store's outbox (blocking
//! calls: the engine runs them off the async threads).

use crate::domain::time::Timestamp;
use crate::engine::delivery::DeliveryStats;
use crate::store::outbox::{
    borrow, decode_dead_letter, encode_event, oldest_pending_at, DeadLetter, OutboxLive,
    OutboxStore, Requeue, BLOCK_EVENTS_MAX,
};
use crate::store::StorageError;
use std::sync::{Arc, Mutex, RwLock};

/// `GET /api/v1/admin/data-platform`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DataPlatformStatus {
    /// Events neither accepted by the data platform nor dead letters.
    pub pending: u64,
    /// Events the data platform accepted, ever.
    pub delivered: u64,
    /// Events refused too often, kept until redriven.
    pub dead_letters: u64,
    /// The payment time of the oldest pending event (by outbox block);
    /// null when none is pending.
    #[schema(required = true)]
    pub oldest_pending_at: Option<Timestamp>,
}

/// A page of dead letters, by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetters {
    pub items: Vec<(u64, DeadLetter)>,
    /// The id to read on from, if there are more.
    pub next: Option<u64>,
}

/// The outbox as the operator reaches it, until shutdown.
pub struct DataPlatformAdmin {
    store: RwLock<Option<Arc<dyn OutboxStore>>>,
    live: Arc<OutboxLive>,
    stats: Arc<DeliveryStats>,
    /// One redrive at a time: each reads the dead letters it puts back.
    redrive: Mutex<()>,
}

impl DataPlatformAdmin {
    pub fn new(
        store: Arc<dyn OutboxStore>,
        live: Arc<OutboxLive>,
        stats: Arc<DeliveryStats>,
    ) -> DataPlatformAdmin {
        DataPlatformAdmin {
            store: RwLock::new(Some(store)),
            live,
            stats,
            redrive: Mutex::new(()),
        }
    }

    /// `None` once the engine has shut down (the store closes with it).
    fn store(&self) -> Option<Arc<dyn OutboxStore>> {
        self.store.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Lets go of the store (at shutdown).
    pub fn release(&self) {
        self.store.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    pub fn live(&self) -> &OutboxLive {
        &self.live
    }

    pub fn stats(&self) -> &DeliveryStats {
        &self.stats
    }

    fn closed() -> StorageError {
        StorageError::Closed
    }

    pub fn status(&self) -> Result<DataPlatformStatus, StorageError> {
        let store = self.store().ok_or_else(Self::closed)?;
        let pending = self.live.pending();
        let oldest_pending_at = if pending == 0 {
            None
        } else {
            // Gathered first: once it no longer shows there, it is stored.
            let gathered = self.live.gathering_at();
            let stored = oldest_pending_at(&*store)?;
            match (gathered, stored) {
                (Some(g), Some(s)) => Some(g.min(s)),
                (g, s) => g.or(s),
            }
        };
        Ok(DataPlatformStatus {
            pending,
            delivered: self.live.delivered(),
            dead_letters: self.live.dead_letters(),
            oldest_pending_at,
        })
    }

    /// Up to `limit` dead letters after id `after`.
    pub fn dead_letters(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<DeadLetters, StorageError> {
        let store = self.store().ok_or_else(Self::closed)?;
        let from = after.map_or(0, |a| a.saturating_add(1));
        let mut page = store.dead_letters(from, limit.saturating_add(1))?;
        let more = page.len() > limit;
        page.truncate(limit);
        let items = page
            .into_iter()
            .map(|(id, bytes)| Ok((id, decode_dead_letter(&bytes)?)))
            .collect::<Result<Vec<_>, StorageError>>()?;
        let next = if more {
            items.last().map(|(id, _)| *id)
        } else {
            None
        };
        Ok(DeadLetters { items, next })
    }

    /// Puts every dead letter there is now back in the outbox, as blocks of
    /// up to [`BLOCK_EVENTS_MAX`] (each one atomic write, flushed); answers
    /// how many. Delivery sends them again, with their refusals counted
    /// from zero.
    pub fn redrive(&self) -> Result<u64, StorageError> {
        let store = self.store().ok_or_else(Self::closed)?;
        let _one = self.redrive.lock().unwrap_or_else(|e| e.into_inner());
        // Those that became dead letters before now: a sink that refuses
        // everything cannot keep this going.
        let end = self.live.dead_lettered();
        let mut from = 0;
        let mut total = 0;
        while from < end {
            let page: Vec<(u64, Vec<u8>)> = store
                .dead_letters(from, BLOCK_EVENTS_MAX)?
                .into_iter()
                .filter(|(id, _)| *id < end)
                .collect();
            let Some(&(last, _)) = page.last() else { break };
            from = last + 1;
            let mut block = Vec::new();
            for (_, bytes) in &page {
                encode_event(&borrow(&decode_dead_letter(bytes)?.event), &mut block)?;
            }
            let n = page.len() as u64;
            let id = self.live.requeued();
            self.live.requeuing(n, n);
            let requeue = Requeue {
                id,
                block,
                requeued: id + n,
                redriven: self.live.redriven(),
                remove_dead: page.iter().map(|(id, _)| *id).collect(),
                legacy_through: None,
            };
            if let Err(e) = store.requeue(&requeue) {
                self.live.not_requeued(n, n);
                return Err(e);
            }
            self.live.added_signal.notify_one();
            total += n;
        }
        if total > 0 {
            tracing::info!(events = total, "data platform: dead letters redriven");
        }
        Ok(total)
    }
}
