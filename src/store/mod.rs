//! Durability: the journal, snapshots and recovery.
//!
//! - [`Store`] is the storage backend: append a batch durably, write
//!   snapshot entries and trim, load everything back. [`SledStore`] is the
//!   real one, [`MemoryStore`] keeps the same bytes in memory (tests, and
//!   engines that need no durability), [`FaultyStore`] makes writes fail.
//! - [`codec`] turns records and snapshots into checksummed frames.
//! - [`writer`] is the journal writer: one thread that group-commits the
//!   records of every actor and acknowledges each once its batch is flushed.
//! - [`outbox`] keeps the data platform's events on disk until delivered
//!   ([`sled_outbox`] in sled, [`MemoryStore`] in memory).
//! - [`recovery`] rebuilds a [`World`](crate::domain::world::World) from
//!   snapshots and the journal and checks its invariants.

pub mod archive;
pub mod archive_statuses;
pub mod codec;
pub mod cut;
pub mod entries;
pub mod fault;
pub mod keys;
pub mod legacy;
pub mod memory;
pub mod outbox;
pub mod outbox_legacy;
pub mod recent_keys;
pub mod recovery;
pub mod replicated;
pub mod sled;
pub mod sled_outbox;
mod sled_sync;
pub mod writer;

pub use self::sled::SledStore;
pub use archive::{Archive, ArchiveReader, ORDER_BLOCK};
pub use entries::SnapshotEntries;
pub use fault::{FaultPlan, FaultyStore};
pub use memory::MemoryStore;
pub use outbox::OutboxStore;
use std::sync::Arc;

/// A storage operation failed. Once it has, the journal acknowledges nothing more.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the journal stopped after an earlier failure")]
    Poisoned,
    #[error("the journal is closed")]
    Closed,
    /// In a cluster: this node does not lead (or stopped leading); the
    /// batch was not stored anywhere.
    #[error("this node is not the cluster's leader")]
    NotLeader,
    /// In a cluster: leadership ended while the batch was being
    /// replicated; it may be stored (the next leader applies it if so).
    #[error("leadership ended before the batch's replication was settled")]
    OutcomeUnknown,
}

/// A snapshot key: one entity, a stored idempotency key, or the meta value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SnapshotKey {
    User(u64),
    /// Chunk `.1` of user `.0`'s balance history (`HISTORY_CHUNK` entries each, in `recovery`).
    History(u64, u64),
    Product(u64),
    /// A campaign's header (its issued set is in `Issued` chunks).
    Campaign(u64),
    /// Chunk `.1` of campaign `.0`'s issued set ([`crate::domain::id_bitmap`]).
    Issued(u64, u64),
    Order(u64),
    /// An idempotency key as stores before the key tables kept it, among
    /// the snapshot entries (read, and deleted by the next snapshot).
    Key(String),
    /// An idempotency key for the store's key tables ([`keys`]), never
    /// among the snapshot entries: its hash, what its request asked and
    /// when; the value is its [`StoredKey`](crate::domain::world::StoredKey).
    IdemKey {
        hash: u128,
        fingerprint: u64,
        at_ms: u64,
    },
    Meta,
    /// The archive's sums, written with the archive entries they count.
    Tally,
    /// Chunk `.0` of the archive's units sold per product.
    TallySold(u64),
    /// A finished order (of user `user`) moved to the archive: written
    /// once, never loaded by recovery (read it through [`Archive`]).
    ArchivedOrder {
        user: u64,
        id: u64,
        /// The order's status as its bit (`archive_statuses::status_bit`),
        /// kept with its block so that lists by status find it after a start.
        status_bit: u16,
    },
    /// A whole chunk of user `.0`'s history moved to the archive, likewise.
    ArchivedHistory(u64, u64),
}

impl SnapshotKey {
    /// Whether the entry goes to the archive rather than the snapshot.
    pub fn is_archived(&self) -> bool {
        matches!(
            self,
            SnapshotKey::ArchivedOrder { .. } | SnapshotKey::ArchivedHistory(..)
        )
    }
}

/// What a store holds, as read back for recovery.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The journal sequence every snapshot entry includes.
    pub snapshot_seq: u64,
    pub snapshots: Vec<(SnapshotKey, Vec<u8>)>,
    /// Journal batches after `snapshot_seq`: (first sequence, frames), in order.
    pub batches: Vec<(u64, Vec<u8>)>,
}

/// A storage backend. The journal writer appends; its snapshot thread
/// writes snapshots at the same time (each call is atomic on its own).
pub trait Store: Send + Sync + 'static {
    /// Durably appends `frames` (records `first_seq..`), flushed before it returns.
    fn append(&self, first_seq: u64, frames: &[u8]) -> Result<(), StorageError>;

    /// Durably writes snapshot entries (`None` deletes), records that they
    /// include everything up to `seq`, and trims journal batches wholly at or below it.
    fn snapshot(&self, seq: u64, entries: SnapshotEntries) -> Result<(), StorageError>;

    /// Reads everything back.
    fn load(&self) -> Result<Loaded, StorageError>;

    /// After failed appends: makes it durable that their batches are gone
    /// (none of them was acknowledged). `Ok` once nothing is left to do;
    /// the journal writer calls it until then.
    fn forget_failed_appends(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Bytes the store uses on disk, when it knows.
    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    /// What snapshots archived, for reads from any thread.
    fn archive(&self) -> Arc<dyn Archive>;

    /// The data platform's outbox, for use from any thread.
    fn outbox(&self) -> Arc<dyn OutboxStore>;

    /// The journal batches holding records above `seq` (the first of them
    /// may also hold records at or below it), in order. What [`load`]
    /// reads, without the snapshots.
    ///
    /// [`load`]: Store::load
    fn journal_after(&self, seq: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        Ok(batches_after(self.load()?.batches, seq))
    }
}

/// Of batches `(first sequence, frames)` in order, those holding records
/// above `seq`: every batch from the last one starting at or below `seq + 1`.
pub fn batches_after(mut batches: Vec<(u64, Vec<u8>)>, seq: u64) -> Vec<(u64, Vec<u8>)> {
    let keep_from = batches
        .iter()
        .rposition(|(first, _)| *first <= seq.saturating_add(1))
        .unwrap_or(0);
    batches.drain(..keep_from);
    batches
}

impl Store for Box<dyn Store> {
    fn append(&self, first_seq: u64, frames: &[u8]) -> Result<(), StorageError> {
        (**self).append(first_seq, frames)
    }
    fn snapshot(&self, seq: u64, entries: SnapshotEntries) -> Result<(), StorageError> {
        (**self).snapshot(seq, entries)
    }
    fn load(&self) -> Result<Loaded, StorageError> {
        (**self).load()
    }
    fn forget_failed_appends(&self) -> Result<(), StorageError> {
        (**self).forget_failed_appends()
    }
    fn size_on_disk(&self) -> Option<u64> {
        (**self).size_on_disk()
    }
    fn archive(&self) -> Arc<dyn Archive> {
        (**self).archive()
    }
    fn outbox(&self) -> Arc<dyn OutboxStore> {
        (**self).outbox()
    }
    fn journal_after(&self, seq: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        (**self).journal_after(seq)
    }
}
