//! The same bytes as on disk, kept in memory. Clones share the data, so a
//! test can stop an engine and start another on what the first one wrote.

use crate::domain::limits::Limits;
use crate::store::outbox::{BlockKey, OutboxState, OutboxStore, Requeue, Settlement, Space};
use crate::store::{
    Archive, Loaded, SnapshotEntries, SnapshotKey, StorageError, Store, ORDER_BLOCK,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    snapshot_seq: u64,
    snapshots: BTreeMap<SnapshotKey, Vec<u8>>,
    batches: BTreeMap<u64, Vec<u8>>,
    /// Archived orders (one frame each, by id) and history chunks.
    orders: BTreeMap<u64, Vec<u8>>,
    history: BTreeMap<(u64, u64), Vec<u8>>,
    /// (user, order id) of every archived order.
    by_user: BTreeSet<(u64, u64)>,
    /// Idempotency keys moved out of the snapshot: hash → (at ms, frame).
    keys: BTreeMap<u128, (u64, Vec<u8>)>,
    outbox: Outbox,
}

/// The outbox, as [`SledOutbox`](crate::store::sled_outbox::SledOutbox) keeps it.
#[derive(Clone, Default)]
struct Outbox {
    blocks: BTreeMap<BlockKey, Vec<u8>>,
    dead: BTreeMap<u64, Vec<u8>>,
    state: OutboxState,
}

#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave half a batch: every
        // mutation is a single insert or a loop of removals.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Journal batches currently held (for tests of trimming).
    pub fn batch_count(&self) -> usize {
        self.lock().batches.len()
    }

    /// A separate copy of everything stored now, as a `kill -9` would leave it.
    pub fn copy(&self) -> MemoryStore {
        let copy = self.without_outbox();
        copy.lock().outbox = self.lock().outbox.clone();
        copy
    }

    /// [`copy`](MemoryStore::copy) with an empty outbox, as a data dir
    /// written before the outbox had a store of its own holds it (tests of
    /// the takeover, `store::outbox_legacy`).
    pub fn without_outbox(&self) -> MemoryStore {
        let inner = self.lock();
        MemoryStore {
            inner: Arc::new(Mutex::new(Inner {
                snapshot_seq: inner.snapshot_seq,
                snapshots: inner.snapshots.clone(),
                batches: inner.batches.clone(),
                orders: inner.orders.clone(),
                history: inner.history.clone(),
                by_user: inner.by_user.clone(),
                keys: inner.keys.clone(),
                outbox: Outbox::default(),
            })),
        }
    }
}

impl Archive for MemoryStore {
    fn order_block(&self, block: u64) -> Result<Vec<u8>, StorageError> {
        let first = block.saturating_mul(ORDER_BLOCK);
        let end = first.saturating_add(ORDER_BLOCK);
        Ok(self
            .lock()
            .orders
            .range(first..end)
            .flat_map(|(_, frame)| frame.iter().copied())
            .collect())
    }

    fn history_chunk(&self, user: u64, chunk: u64) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().history.get(&(user, chunk)).cloned())
    }

    fn user_orders(&self, user: u64, before: u64, limit: usize) -> Result<Vec<u64>, StorageError> {
        Ok(self
            .lock()
            .by_user
            .range((user, 0)..(user, before))
            .rev()
            .take(limit)
            .map(|(_, id)| *id)
            .collect())
    }

    fn each_order_block(
        &self,
        f: &mut dyn FnMut(&[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let blocks: Vec<u64> = {
            let inner = self.lock();
            let mut b: Vec<u64> = inner.orders.keys().map(|id| id / ORDER_BLOCK).collect();
            b.dedup();
            b
        };
        for block in blocks {
            f(&self.order_block(block)?)?;
        }
        Ok(())
    }

    fn key(&self, hash: u128) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().keys.get(&hash).map(|(_, frame)| frame.clone()))
    }

    fn journal_batch_of(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        Ok(self
            .lock()
            .batches
            .range(..=seq)
            .next_back()
            .map(|(first, frames)| (*first, frames.clone())))
    }
}

impl Store for MemoryStore {
    fn append(&self, first_seq: u64, frames: &[u8]) -> Result<(), StorageError> {
        self.lock().batches.insert(first_seq, frames.to_vec());
        Ok(())
    }

    fn snapshot(&self, seq: u64, entries: SnapshotEntries) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let mut newest_key_ms = 0;
        for (key, value) in entries.iter() {
            match (key, value) {
                (SnapshotKey::ArchivedOrder { user, id, .. }, Some(v)) => {
                    inner.orders.insert(*id, v.to_vec());
                    inner.by_user.insert((*user, *id));
                }
                (SnapshotKey::ArchivedHistory(user, chunk), Some(v)) => {
                    inner.history.insert((*user, *chunk), v.to_vec());
                }
                (SnapshotKey::IdemKey { hash, at_ms, .. }, Some(v)) => {
                    newest_key_ms = newest_key_ms.max(*at_ms);
                    inner.keys.insert(*hash, (*at_ms, v.to_vec()));
                }
                (key, Some(v)) => {
                    inner.snapshots.insert(key.clone(), v.to_vec());
                }
                (key, None) => {
                    inner.snapshots.remove(key);
                }
            }
        }
        if newest_key_ms > 0 {
            let horizon = newest_key_ms.saturating_sub(Limits::IDEMPOTENCY_TTL_MS);
            inner.keys.retain(|_, (at, _)| *at >= horizon);
        }
        inner.snapshot_seq = seq;
        // A batch is trimmed when the next batch starts at or below seq + 1,
        // i.e. when all of its records are at or below `seq`.
        let starts: Vec<u64> = inner.batches.keys().copied().collect();
        for (i, start) in starts.iter().enumerate() {
            let next = starts.get(i + 1).copied();
            if next.is_some_and(|n| n <= seq + 1) {
                inner.batches.remove(start);
            }
        }
        Ok(())
    }

    fn archive(&self) -> Arc<dyn Archive> {
        Arc::new(self.clone())
    }

    fn outbox(&self) -> Arc<dyn OutboxStore> {
        Arc::new(self.clone())
    }

    fn journal_after(&self, seq: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let inner = self.lock();
        let from = inner
            .batches
            .range(..=seq.saturating_add(1))
            .next_back()
            .map_or(0, |(first, _)| *first);
        let batches = inner
            .batches
            .range(from..)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        Ok(crate::store::batches_after(batches, seq))
    }

    fn load(&self) -> Result<Loaded, StorageError> {
        let inner = self.lock();
        Ok(Loaded {
            snapshot_seq: inner.snapshot_seq,
            snapshots: inner
                .snapshots
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            batches: inner.batches.iter().map(|(k, v)| (*k, v.clone())).collect(),
        })
    }
}

impl OutboxStore for MemoryStore {
    fn state(&self) -> Result<OutboxState, StorageError> {
        Ok(self.lock().outbox.state)
    }

    fn add(&self, blocks: &[(u64, &[u8])], watermark: u64, added: u64) -> Result<(), StorageError> {
        let outbox = &mut self.lock().outbox;
        for (id, block) in blocks {
            let key = BlockKey {
                space: Space::Journal,
                id: *id,
            };
            outbox.blocks.insert(key, block.to_vec());
        }
        outbox.state.watermark = watermark;
        outbox.state.added = added;
        Ok(())
    }

    fn block_from(&self, space: Space, from: u64) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let (start, end) = (
            BlockKey { space, id: from },
            BlockKey {
                space,
                id: u64::MAX,
            },
        );
        Ok(self
            .lock()
            .outbox
            .blocks
            .range(start..=end)
            .next()
            .map(|(k, v)| (k.id, v.clone())))
    }

    fn settle(&self, s: &Settlement) -> Result<(), StorageError> {
        let outbox = &mut self.lock().outbox;
        for key in &s.remove {
            outbox.blocks.remove(key);
        }
        for (id, letter) in &s.dead {
            outbox.dead.insert(*id, letter.clone());
        }
        outbox.state.delivered = s.delivered;
        outbox.state.dead_lettered = s.dead_lettered;
        if s.file_len.is_some() {
            outbox.state.file_len = s.file_len;
        }
        Ok(())
    }

    fn dead_letters(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        Ok(self
            .lock()
            .outbox
            .dead
            .range(from..)
            .take(limit)
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }

    fn requeue(&self, r: &Requeue) -> Result<(), StorageError> {
        let outbox = &mut self.lock().outbox;
        let key = BlockKey {
            space: Space::Requeued,
            id: r.id,
        };
        outbox.blocks.insert(key, r.block.clone());
        for id in &r.remove_dead {
            outbox.dead.remove(id);
        }
        outbox.state.requeued = r.requeued;
        outbox.state.redriven = r.redriven;
        if r.legacy_through.is_some() {
            outbox.state.legacy_through = r.legacy_through;
        }
        Ok(())
    }
}
