//! The same bytes as on disk, kept in memory. Clones share the data, so a
//! test can stop an engine and start another on what the first one wrote.

use crate::store::{Loaded, SnapshotEntries, SnapshotKey, StorageError, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    snapshot_seq: u64,
    snapshots: BTreeMap<SnapshotKey, Vec<u8>>,
    batches: BTreeMap<u64, Vec<u8>>,
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
}

impl Store for MemoryStore {
    fn append(&self, first_seq: u64, frames: &[u8]) -> Result<(), StorageError> {
        self.lock().batches.insert(first_seq, frames.to_vec());
        Ok(())
    }

    fn snapshot(&self, seq: u64, entries: SnapshotEntries) -> Result<(), StorageError> {
        let mut inner = self.lock();
        for (key, value) in entries {
            match value {
                Some(v) => inner.snapshots.insert(key, v),
                None => inner.snapshots.remove(&key),
            };
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
