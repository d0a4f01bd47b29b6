//! A storage-fault wrapper for tests: makes appends, snapshots or the
//! outbox's writes fail on demand.

use crate::store::outbox::{OutboxState, OutboxStore, Requeue, Settlement, Space};
use crate::store::{Loaded, SnapshotEntries, StorageError, Store};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Shared switches: flip them while the engine runs.
#[derive(Default)]
pub struct FaultPlan {
    /// Fail every append from now on.
    pub fail_appends: AtomicBool,
    /// Fail appends once this many more have succeeded (u64::MAX: never).
    pub appends_before_failure: AtomicU64,
    pub fail_snapshots: AtomicBool,
    /// Fail every write to the outbox (blocks added, settled, requeued).
    pub fail_outbox: AtomicBool,
}

impl FaultPlan {
    pub fn new() -> Arc<FaultPlan> {
        Arc::new(FaultPlan {
            appends_before_failure: AtomicU64::new(u64::MAX),
            ..FaultPlan::default()
        })
    }

    fn append_fails(&self) -> bool {
        if self.fail_appends.load(Ordering::SeqCst) {
            return true;
        }
        let left = self.appends_before_failure.load(Ordering::SeqCst);
        if left == u64::MAX {
            return false;
        }
        if left == 0 {
            return true;
        }
        self.appends_before_failure
            .store(left - 1, Ordering::SeqCst);
        false
    }
}

pub struct FaultyStore<S> {
    inner: S,
    plan: Arc<FaultPlan>,
}

impl<S: Store> FaultyStore<S> {
    pub fn new(inner: S, plan: Arc<FaultPlan>) -> FaultyStore<S> {
        FaultyStore { inner, plan }
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn append(&self, first_seq: u64, frames: &[u8]) -> Result<(), StorageError> {
        if self.plan.append_fails() {
            return Err(StorageError::Io("injected: flush failed".into()));
        }
        self.inner.append(first_seq, frames)
    }

    fn snapshot(&self, seq: u64, entries: SnapshotEntries) -> Result<(), StorageError> {
        if self.plan.fail_snapshots.load(Ordering::SeqCst) {
            return Err(StorageError::Io("injected: snapshot write failed".into()));
        }
        self.inner.snapshot(seq, entries)
    }

    fn load(&self) -> Result<Loaded, StorageError> {
        self.inner.load()
    }

    fn forget_failed_appends(&self) -> Result<(), StorageError> {
        self.inner.forget_failed_appends()
    }

    fn archive(&self) -> std::sync::Arc<dyn crate::store::Archive> {
        self.inner.archive()
    }

    fn outbox(&self) -> Arc<dyn OutboxStore> {
        Arc::new(FaultyOutbox {
            inner: self.inner.outbox(),
            plan: self.plan.clone(),
        })
    }

    fn journal_after(&self, seq: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        self.inner.journal_after(seq)
    }
}

struct FaultyOutbox {
    inner: Arc<dyn OutboxStore>,
    plan: Arc<FaultPlan>,
}

impl FaultyOutbox {
    fn write(&self) -> Result<(), StorageError> {
        if self.plan.fail_outbox.load(Ordering::SeqCst) {
            return Err(StorageError::Io("injected: outbox write failed".into()));
        }
        Ok(())
    }
}

impl OutboxStore for FaultyOutbox {
    fn state(&self) -> Result<OutboxState, StorageError> {
        self.inner.state()
    }
    fn add(&self, blocks: &[(u64, &[u8])], watermark: u64, added: u64) -> Result<(), StorageError> {
        self.write()?;
        self.inner.add(blocks, watermark, added)
    }
    fn block_from(&self, space: Space, from: u64) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        self.inner.block_from(space, from)
    }
    fn settle(&self, s: &Settlement) -> Result<(), StorageError> {
        self.write()?;
        self.inner.settle(s)
    }
    fn dead_letters(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        self.inner.dead_letters(from, limit)
    }
    fn requeue(&self, r: &Requeue) -> Result<(), StorageError> {
        self.write()?;
        self.inner.requeue(r)
    }
}
