//! Idempotency keys (Stripe's semantics), shared by HTTP and embedded callers.
//!
//! A key is reserved before the request runs; concurrent requests with the
//! same key wait for the first. The first answer is stored in the same
//! journal record as the effect it guards (so it is durable exactly when
//! the effect is), and a refusal in a record of its own, so a retry gets
//! the same 4xx even if the request would now succeed. Keys are kept at
//! least 24 hours: those of the last snapshot interval in memory
//! ([`RecentKeys`]: hash, fingerprint, and the sequence of the record with
//! the answer), older ones in the store's key tables
//! ([`crate::store::keys`]), found there when memory does not know a key.
//!
//! A std mutex guards the keys being run: it is not domain state, and
//! every critical section is a few map operations, never held across an
//! await.

use crate::domain::key_hash::{key_hash, KeyHash};
use crate::domain::views::Reply;
use crate::engine::error::{Error, Result};
use crate::store::recent_keys::RecentKeys;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// A validated `Idempotency-Key`: 1..=128 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn new(key: impl Into<String>) -> Result<IdempotencyKey> {
        let key = key.into();
        let printable = key.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if key.is_empty()
            || key.len() > crate::domain::limits::Limits::API.idempotency_key_chars_max
            || !printable
        {
            return Err(Error::invalid(
                "Idempotency-Key must be 1 to 128 printable characters",
            ));
        }
        Ok(IdempotencyKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        key_hash(&self.0)
    }
}

/// A key and the fingerprint of the request it is used with, passed down to
/// the actor that writes the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub hash: KeyHash,
    pub fingerprint: u64,
}

impl Tag {
    /// The entry that stores this key with `reply` in the record it guards.
    pub fn entry(self, reply: Reply) -> Box<crate::domain::event::IdempotencyEntry> {
        Box::new(crate::domain::event::IdempotencyEntry {
            key: self.key,
            fingerprint: self.fingerprint,
            reply,
        })
    }
}

pub enum Begin {
    /// Memory does not know the key: look for it in the key tables, then
    /// [`IdempotencyStore::found`], or run the request with this tag (it
    /// goes into the record of the request's effect).
    Check(Tag),
    /// The first answer is in the record at `seq` (or already in the key tables).
    Replay { hash: KeyHash, seq: u64 },
    /// Another request with this key is running: wait, then ask again.
    Wait(oneshot::Receiver<()>),
}

struct InFlight {
    fingerprint: u64,
    waiters: Vec<oneshot::Sender<()>>,
}

/// The keys being run, and the keys known in memory.
pub struct IdempotencyStore {
    running: Mutex<HashMap<KeyHash, InFlight>>,
    recent: Arc<RecentKeys>,
}

impl IdempotencyStore {
    pub fn new(recent: Arc<RecentKeys>) -> IdempotencyStore {
        IdempotencyStore {
            running: Mutex::new(HashMap::new()),
            recent,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyHash, InFlight>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn known(&self, hash: KeyHash, fingerprint: u64) -> Option<Result<Begin>> {
        self.recent.get(hash).map(|k| {
            if k.fingerprint == fingerprint {
                Ok(Begin::Replay { hash, seq: k.seq })
            } else {
                Err(Error::IdempotencyKeyReused)
            }
        })
    }

    pub fn begin(&self, key: &IdempotencyKey, fingerprint: u64) -> Result<Begin> {
        let hash = key.hash();
        if let Some(known) = self.known(hash, fingerprint) {
            return known;
        }
        let mut running = self.lock();
        // Again under the lock: a request that just finished recorded its
        // key before it left `running`.
        if let Some(known) = self.known(hash, fingerprint) {
            return known;
        }
        if let Some(r) = running.get_mut(&hash) {
            if r.fingerprint != fingerprint {
                return Err(Error::IdempotencyKeyReused);
            }
            let (tx, rx) = oneshot::channel();
            r.waiters.push(tx);
            return Ok(Begin::Wait(rx));
        }
        running.insert(
            hash,
            InFlight {
                fingerprint,
                waiters: Vec::new(),
            },
        );
        Ok(Begin::Check(Tag {
            key: key.0.clone(),
            hash,
            fingerprint,
        }))
    }

    /// The key tables held the key of `tag`: it is known (its answer is
    /// there), and whoever waits for it asks again.
    pub fn found(&self, tag: &Tag, fingerprint: u64, at: crate::domain::time::Timestamp) {
        use crate::store::recent_keys::RecentKey;
        // Sequence 0: the answer is in the key tables, not the journal.
        self.recent.insert(
            tag.hash,
            RecentKey {
                fingerprint,
                at,
                seq: 0,
            },
        );
        self.finish(tag);
    }

    /// Whether the journal recorded an answer under `tag`'s key.
    pub fn recorded(&self, tag: &Tag) -> bool {
        self.recent.get(tag.hash).is_some()
    }

    /// Ends a request run under `tag`; its answer, if any, is recorded
    /// already (with its record). Whoever waits for it asks again.
    pub fn finish(&self, tag: &Tag) {
        if let Some(running) = self.lock().remove(&tag.hash) {
            for w in running.waiters {
                let _ = w.send(());
            }
        }
    }

    /// Keys known in memory.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Ends the request of a tag when dropped: a request that panics, or whose
/// task is cancelled, never leaves its key running.
pub struct KeyGuard<'a> {
    store: &'a IdempotencyStore,
    tag: Option<Tag>,
}

impl<'a> KeyGuard<'a> {
    pub fn new(store: &'a IdempotencyStore, tag: Tag) -> KeyGuard<'a> {
        KeyGuard {
            store,
            tag: Some(tag),
        }
    }

    pub fn tag(&self) -> &Tag {
        self.tag
            .as_ref()
            .expect("a guard holds its tag until dropped")
    }

    /// Hands the running key on to another guard (on another task).
    pub fn hand_over(mut self) -> Tag {
        self.tag
            .take()
            .expect("a guard holds its tag until dropped")
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        if let Some(tag) = self.tag.take() {
            self.store.finish(&tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;
    use crate::store::recent_keys::RecentKey;

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey::new(k).unwrap()
    }

    #[test]
    fn a_second_request_with_a_running_key_waits_and_then_replays() {
        // given a key being run, when the same request comes, then it waits;
        // once the first is recorded and finished, it replays
        let recent = Arc::new(RecentKeys::new());
        let s = IdempotencyStore::new(recent.clone());
        let Ok(Begin::Check(tag)) = s.begin(&key("a"), 7) else {
            panic!("a new key is checked");
        };
        let Ok(Begin::Wait(mut rx)) = s.begin(&key("a"), 7) else {
            panic!("the second waits");
        };
        assert!(matches!(
            s.begin(&key("a"), 8),
            Err(Error::IdempotencyKeyReused)
        ));
        recent.insert(
            tag.hash,
            RecentKey {
                fingerprint: 7,
                at: Timestamp(1),
                seq: 42,
            },
        );
        s.finish(&tag);
        assert!(rx.try_recv().is_ok());
        assert!(matches!(
            s.begin(&key("a"), 7),
            Ok(Begin::Replay { seq: 42, .. })
        ));
        assert!(matches!(
            s.begin(&key("a"), 8),
            Err(Error::IdempotencyKeyReused)
        ));
    }

    #[test]
    fn a_request_that_panics_releases_its_key() {
        // given a key run under a guard, when the request panics, then the key is free again
        let s = IdempotencyStore::new(Arc::new(RecentKeys::new()));
        let Ok(Begin::Check(tag)) = s.begin(&key("b"), 1) else {
            panic!("a new key is checked");
        };
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _running = KeyGuard::new(&s, tag.clone());
            panic!("the request panicked");
        }));
        assert!(caught.is_err());
        assert!(matches!(s.begin(&key("b"), 1), Ok(Begin::Check(_))));
    }
}
