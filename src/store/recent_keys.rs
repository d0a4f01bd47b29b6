//! Idempotency keys recorded since the last snapshot, in memory: their
//! hash, what their request asked, when, and the journal sequence of the
//! record that holds their answer. Nothing else: an entry is a few dozen
//! bytes whatever its answer (read back from the journal, or from the key
//! tables once a snapshot moved it there; see [`crate::store::keys`]).
//!
//! The journal writer adds a key once its record is durable, before anyone
//! hears back, and lets go of every key a written snapshot moved to the key
//! tables, in the order they came: memory holds the keys of about one
//! snapshot interval, whatever the rate or the 24 hours they are kept.
//! A std mutex: a few map operations per call, never held across I/O.

use crate::domain::key_hash::KeyHash;
use crate::domain::time::Timestamp;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A key recorded in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecentKey {
    pub fingerprint: u64,
    pub at: Timestamp,
    /// The record that holds the answer.
    pub seq: u64,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<KeyHash, RecentKey>,
    /// Keys by the sequence of their record, in the order they came.
    order: VecDeque<(u64, KeyHash)>,
}

#[derive(Default)]
pub struct RecentKeys {
    inner: Mutex<Inner>,
}

impl RecentKeys {
    pub fn new() -> RecentKeys {
        RecentKeys::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every mutation is a map insert or removal: a panic cannot leave half of one.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A key's record is durable.
    pub fn insert(&self, hash: KeyHash, key: RecentKey) {
        let mut inner = self.lock();
        inner.order.push_back((key.seq, hash));
        inner.keys.insert(hash, key);
    }

    pub fn get(&self, hash: KeyHash) -> Option<RecentKey> {
        self.lock().keys.get(&hash).copied()
    }

    /// A snapshot covering records up to `seq` is written: the keys of
    /// those records are in the key tables now, and leave memory.
    pub fn written_up_to(&self, seq: u64) {
        let mut inner = self.lock();
        while let Some(&(key_seq, hash)) = inner.order.front() {
            if key_seq > seq {
                break;
            }
            inner.order.pop_front();
            // A key recorded again later (a refusal, then a change) stays.
            if inner.keys.get(&hash).is_some_and(|k| k.seq <= seq) {
                inner.keys.remove(&hash);
            }
        }
        let (len, capacity) = (inner.keys.len(), inner.keys.capacity());
        if capacity > 4 * len.max(1024) {
            // Room left by a burst is given back: memory follows the keys held.
            inner.keys.shrink_to(2 * len);
            inner.order.shrink_to(2 * len);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seq: u64) -> RecentKey {
        RecentKey {
            fingerprint: seq * 10,
            at: Timestamp(seq),
            seq,
        }
    }

    #[test]
    fn keys_leave_memory_once_a_snapshot_covers_their_record() {
        // given keys of records 1..=5, when a snapshot covers 3, then 4 and 5 stay
        let r = RecentKeys::new();
        for seq in 1..=5u64 {
            r.insert(u128::from(seq), key(seq));
        }
        r.written_up_to(3);
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(3), None);
        assert_eq!(r.get(4), Some(key(4)));
        // a key recorded again by a later record is kept until that one is covered
        r.insert(4, key(9));
        r.written_up_to(5);
        assert_eq!(r.get(4), Some(key(9)));
        r.written_up_to(9);
        assert!(r.is_empty());
    }
}
