//! The journal's own sled database.
//!
//! The journal has a sled database of its own, `<data dir>/sled-journal`,
//! one tree:
//! - `j` + sequence (u64, big-endian): a journal batch, its frames concatenated.
//!   A whole group-commit batch is one sled value, so sled does one insert
//!   per flush rather than one per record.
//!
//! **Why a database of its own.** A sled flush makes everything before it
//! in the database's log durable. With the journal in the snapshots'
//! database, each acknowledgement's flush would also write out and sync
//! whatever the snapshot thread put in the log meanwhile, megabytes per
//! snapshot: at 256 orders in flight a journal flush takes 310–460 µs
//! instead of about 250, and order_pay's p99 is 21 ms instead of 12
//! (docs/performance.md, "The journal in a sled database of its own").
//! Apart, the journal's flushes carry only journal batches. A snapshot is committed in its own database before the
//! journal it covers is trimmed in this one, so a crash between the two
//! leaves batches that recovery skips. Stores written before this kept
//! the journal under the same `j` keys in the main tree: those are read
//! first and trimmed the same way.

use super::{io, journal_db_dir, open_db_at, remove_chunked, SledStore};
use crate::store::sled_sync::{BlobSync, LogGrowth};
use crate::store::StorageError;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub(super) const JOURNAL: u8 = b'j';

/// The journal's own sled database (see the module's documentation).
///
/// Nothing here becomes durable but by [`JournalDb::flush`]: sled's
/// background flush (every 500 ms by default) is off for this database, so
/// a batch whose append failed cannot be written out behind the engine's
/// back. After a failed append the database takes no more appends nor
/// trims in this process (the engine answers 503 `STORAGE_UNAVAILABLE`
/// until restarted); the failed batches are removed from sled's memory at
/// once, and that removal is flushed as soon as storage takes a flush again
/// ([`JournalDb::forget_failed`]), so a batch never acknowledged does not
/// come back at the next start. A failed flush may still have written
/// the batch to the log file before failing; if the process ends before
/// the removal is flushed, that batch can be replayed at the next start.
pub(super) struct JournalDb {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    pub(super) blobs: BlobSync,
    pub(super) log: LogGrowth,
    /// An append failed: no more appends, trims or flushes but the one that
    /// makes the failed batches' removal durable.
    pub(super) poisoned: AtomicBool,
    /// Keys of the batches whose append failed, until their removal is durable.
    pub(super) failed: Mutex<Vec<[u8; 9]>>,
}

impl JournalDb {
    pub(super) fn open(dir: &Path) -> Result<JournalDb, StorageError> {
        let path = journal_db_dir(dir);
        let db = open_db_at(&path, sled::Config::new().flush_every_ms(None))?;
        Ok(JournalDb {
            tree: db.open_tree("journal").map_err(io)?,
            blobs: BlobSync::adopt(&path)?,
            log: LogGrowth::open(&path)?,
            db,
            poisoned: AtomicBool::new(false),
            failed: Mutex::new(Vec::new()),
        })
    }

    /// Appends one batch under `key`, durable when it returns.
    pub(super) fn append(&self, key: [u8; 9], frames: &[u8]) -> Result<(), StorageError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        let result = self
            .tree
            .insert(key, frames)
            .map_err(io)
            .and_then(|_| self.write_out());
        if let Err(e) = &result {
            tracing::error!(error = %e, "a journal batch could not be made durable; it is removed and nothing more is appended");
            self.poisoned.store(true, Ordering::Release);
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(key);
            let _ = self.forget_failed();
        }
        result
    }

    /// Makes the removal of the batches whose append failed durable; `Ok`
    /// once none is left to forget.
    pub(super) fn forget_failed(&self) -> Result<(), StorageError> {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_empty() {
            return Ok(());
        }
        for key in failed.iter() {
            self.tree.remove(key).map_err(io)?;
        }
        self.write_out()?;
        tracing::info!(
            batches = failed.len(),
            "the journal batches that failed are durably gone"
        );
        failed.clear();
        Ok(())
    }

    /// Makes everything inserted or removed so far durable, refused once
    /// an append failed (so no trim writes out a failed batch).
    pub(super) fn flush(&self) -> Result<(), StorageError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        self.write_out()
    }

    /// Makes everything inserted or removed so far durable, with the blob
    /// files sled wrote for it and the log's new length. Only the journal
    /// writes blob files here (its last node, or a node a trim rewrote),
    /// so listing them costs one `stat` nearly always.
    pub(super) fn write_out(&self) -> Result<(), StorageError> {
        self.blobs.sync_new()?;
        self.tree.flush().map_err(io)?;
        self.log.sync_if_grown()?;
        Ok(())
    }
}

/// The sequence a journal key starts at.
pub(super) fn journal_seq(key: &[u8]) -> Result<u64, StorageError> {
    match key {
        [JOURNAL, seq @ ..] => {
            Ok(u64::from_be_bytes(seq.try_into().map_err(|_| {
                StorageError::Corrupt(format!("journal key {key:?}"))
            })?))
        }
        _ => Err(StorageError::Corrupt(format!("journal key {key:?}"))),
    }
}

pub(super) fn journal_key(seq: u64) -> [u8; 9] {
    let mut k = [JOURNAL; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl SledStore {
    /// After a snapshot covering `seq` is committed: removes every journal
    /// batch whose successor starts at or below `seq + 1`, in the journal's
    /// database and among the batches an older store kept in the main tree
    /// (all older than the journal database's), then flushes the journal's
    /// database. Nothing relies on a removal being durable: recovery skips
    /// what the snapshot covers.
    pub(super) fn trim_journal(&self, seq: u64) -> Result<(), StorageError> {
        let covered = journal_key(0)..=journal_key(seq.saturating_add(1));
        let mut starts: Vec<(u64, bool)> = Vec::new();
        for (tree, legacy) in [(&self.tree, true), (&self.journal.tree, false)] {
            for k in tree.range(covered.clone()).keys() {
                starts.push((journal_seq(&k.map_err(io)?)?, legacy));
            }
        }
        let (mut legacy, mut own) = (Vec::new(), Vec::new());
        for pair in starts.windows(2).filter(|pair| pair[1].0 <= seq + 1) {
            let (start, in_legacy) = pair[0];
            let doomed = if in_legacy { &mut legacy } else { &mut own };
            doomed.push(journal_key(start).to_vec());
        }
        if !legacy.is_empty() {
            remove_chunked(&self.tree, legacy)?;
        }
        if !own.is_empty() && !self.journal.poisoned.load(Ordering::Acquire) {
            remove_chunked(&self.journal.tree, own)?;
            self.journal.flush()?;
        }
        Ok(())
    }
}
