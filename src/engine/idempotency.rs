//! Idempotency keys (Stripe's semantics), shared by HTTP and embedded callers.
//!
//! A key is reserved before the request runs; concurrent requests with the
//! same key wait for the first. The first answer is stored in the same
//! journal record as the effect it guards (so it is durable exactly when
//! the effect is) and kept at least 24 hours. A request that was refused
//! without changing anything is not stored: its retry runs again.
//!
//! A std mutex guards the key table: it is not domain state, and every
//! critical section is a few map operations, never held across an await.

use crate::domain::time::Timestamp;
use crate::domain::views::Reply;
use crate::domain::world::{StoredKey, IDEMPOTENCY_TTL_MS};
use crate::engine::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;
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
}

/// A key and the fingerprint of the request it is used with, passed down to
/// the actor that writes the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub fingerprint: u64,
}

impl Tag {
    /// The entry that stores this key with `reply` in the record it guards.
    pub fn entry(self, reply: Reply) -> crate::domain::event::IdempotencyEntry {
        crate::domain::event::IdempotencyEntry {
            key: self.key,
            fingerprint: self.fingerprint,
            reply,
        }
    }
}

/// FNV-1a: stable across builds and restarts (std's hasher is not promised to be).
pub fn fingerprint(request: &str) -> u64 {
    request.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub enum Begin {
    /// Run the request, carrying this tag into its record.
    Proceed(Tag),
    /// The first answer.
    Replay(Reply),
    /// Another request with this key is running: wait, then ask again.
    Wait(oneshot::Receiver<()>),
}

struct InFlight {
    fingerprint: u64,
    waiters: Vec<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Table {
    done: HashMap<String, StoredKey>,
    running: HashMap<String, InFlight>,
    calls_since_prune: u32,
}

pub struct IdempotencyStore {
    table: Mutex<Table>,
    keys_max: usize,
}

impl IdempotencyStore {
    pub fn new(recovered: HashMap<String, StoredKey>, keys_max: usize) -> IdempotencyStore {
        IdempotencyStore {
            table: Mutex::new(Table {
                done: recovered,
                ..Table::default()
            }),
            keys_max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn begin(&self, key: &IdempotencyKey, fingerprint: u64, now: Timestamp) -> Result<Begin> {
        let mut t = self.lock();
        t.calls_since_prune += 1;
        if t.calls_since_prune >= 4096 {
            t.calls_since_prune = 0;
            let horizon = Timestamp(now.0.saturating_sub(IDEMPOTENCY_TTL_MS));
            t.done.retain(|_, v| v.at >= horizon);
        }
        if let Some(stored) = t.done.get(key.as_str()) {
            return if stored.fingerprint == fingerprint {
                Ok(Begin::Replay(stored.reply.clone()))
            } else {
                Err(Error::IdempotencyKeyReused)
            };
        }
        if let Some(running) = t.running.get_mut(key.as_str()) {
            if running.fingerprint != fingerprint {
                return Err(Error::IdempotencyKeyReused);
            }
            let (tx, rx) = oneshot::channel();
            running.waiters.push(tx);
            return Ok(Begin::Wait(rx));
        }
        if t.done.len() + t.running.len() >= self.keys_max {
            return Err(Error::Overloaded);
        }
        t.running.insert(
            key.0.clone(),
            InFlight {
                fingerprint,
                waiters: Vec::new(),
            },
        );
        Ok(Begin::Proceed(Tag {
            key: key.0.clone(),
            fingerprint,
        }))
    }

    /// Ends a request: `Some` stores its answer (already durable with its record).
    pub fn finish(&self, tag: &Tag, stored: Option<StoredKey>) {
        let mut t = self.lock();
        if let Some(running) = t.running.remove(&tag.key) {
            for w in running.waiters {
                let _ = w.send(());
            }
        }
        if let Some(s) = stored {
            t.done.insert(tag.key.clone(), s);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
