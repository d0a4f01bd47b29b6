//! A storage-fault wrapper for tests: makes appends or snapshots fail on demand.

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
}
