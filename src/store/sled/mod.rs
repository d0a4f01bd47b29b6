//! sled (pinned `=0.34.7`) behind [`Store`]: [`SledStore`].
//!
//! - [`journal`]: the journal's own sled database, `<data dir>/sled-journal`.
//! - [`layout`]: the committed layout of the snapshot's generations.
//! - [`packs`]: snapshot entries written as checksummed packs.
//! - [`snapshot_keys`]: how a [`SnapshotKey`] is stored.
//! - [`snapshot_write`], [`snapshot_read`]: a snapshot written as a new
//!   generation, merged, and read back as one sorted run.
//! - [`archive`]: the archive's entries, read from any thread.
//!
//! Everything but the journal lives in one tree of `<data dir>/sled`
//! (packs, the layout, the archive; the data platform's outbox in a tree of
//! its own). Layouts that stores wrote before are read by
//! [`crate::store::legacy`].
//!
//! sled flushes in the background only every 500 ms, so `append` flushes
//! before it returns: nothing is acknowledged before it is on disk. Every
//! flush here also syncs what sled's own leaves out, its blob files and
//! its log's growth ([`crate::store::sled_sync`]).

mod archive;
mod journal;
mod layout;
mod packs;
mod snapshot_keys;
mod snapshot_read;
mod snapshot_write;
#[cfg(test)]
mod tests;

pub(in crate::store) use self::archive::archive_key;
use self::archive::{SledArchive, BY_USER_BUILT, STATUS_MASKS_BUILT};
use self::journal::{journal_key, journal_seq, JournalDb, JOURNAL};
use self::layout::{Layout, META, UNFINISHED};
use self::snapshot_keys::decode_key;
pub(in crate::store) use self::snapshot_keys::{KEY, SNAPSHOT};
use crate::store::keys::KeyTables;
use crate::store::sled_outbox::SledOutbox;
use crate::store::sled_sync::{BlobSync, LogGrowth};
use crate::store::{Archive, Loaded, OutboxStore, SnapshotEntries, StorageError, Store};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    journal: JournalDb,
    /// sled leaves its blob files unsynced: synced before each flush.
    blobs: Arc<BlobSync>,
    /// ...and its log file's new length: synced after a flush that grew it.
    log: Arc<LogGrowth>,
    archive: SledArchive,
    /// The data platform's outbox, a tree of this database ([`SledOutbox`]).
    outbox: SledOutbox,
    /// Idempotency keys moved out of the snapshots ([`crate::store::keys`]).
    keys: Arc<KeyTables>,
    /// The committed layout (snapshots run one at a time; this mirrors `m`).
    layout: Arc<Mutex<Layout>>,
    /// A snapshot or merge failed part way: its packs may still be there
    /// under a generation the next one would reuse (`x` is still set), so
    /// the next snapshot first tidies them, as an open would. A failure is
    /// usually passing (a full disk freed, an I/O error once): snapshots
    /// go on as soon as a tidy and a write succeed.
    needs_tidy: AtomicBool,
}
/// Journal keys removed per sled batch (each holds sled's write lock briefly).
const CHUNK_ENTRIES: usize = 256;
/// sled's page cache. Nothing here reads back much: the journal is only
/// written, merges stream packs once, archive reads are rare. sled holds
/// several times this in memory (spacejam/sled#986), and it fills as the
/// tree grows: at 256 MiB a 5-minute mixed run's RSS rose from 0.68 GB at
/// 60 s to 0.95 GB; at 64 MiB from 0.51 GB to 0.60 GB (0.71 at most), at
/// the same throughput. At 16 MiB the server's RSS under mixed HTTP load
/// is about 50 MiB lower again, with throughput unchanged in alternating
/// runs at 64 and 512 in flight (docs/performance.md, "sled's page cache
/// at 16 MiB").
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Opens sled's database. sled 0.34 lets go of its directory lock only
/// once its background I/O has ended, a while after the last handle is
/// dropped (spacejam/sled#1234), so an open right after a close in the
/// same process can find it still held: that is retried for up to 10 s
/// (seen past 1 s on a loaded machine). Another process holding the lock
/// gets the error after that.
fn open_db(dir: &Path) -> Result<sled::Db, StorageError> {
    open_db_at(&db_dir(dir), sled::Config::new())
}

/// [`open_db`] for sled's directory `path`.
fn open_db_at(path: &Path, config: sled::Config) -> Result<sled::Db, StorageError> {
    let config = config.path(path).cache_capacity(CACHE_BYTES);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match config.open() {
            // sled reports it as `ErrorKind::Other` with this message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.map_err(io),
        }
    }
}

/// The directories of the store's sled databases inside the data
/// directory: the main one (snapshots, archive), then the journal's.
pub const DATABASE_DIRS: [&str; 2] = ["sled", "sled-journal"];

/// The idempotency key tables inside the data directory.
pub const KEYS_DIR: &str = "keys";

/// sled's own directory inside the data directory.
fn db_dir(dir: &Path) -> std::path::PathBuf {
    dir.join(DATABASE_DIRS[0])
}

/// The journal's sled database inside the data directory.
fn journal_db_dir(dir: &Path) -> std::path::PathBuf {
    dir.join(DATABASE_DIRS[1])
}

pub(in crate::store) fn io(e: sled::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

/// Removes `keys` from `tree`, [`CHUNK_ENTRIES`] per sled batch.
fn remove_chunked(tree: &sled::Tree, keys: Vec<Vec<u8>>) -> Result<(), StorageError> {
    for chunk in keys.chunks(CHUNK_ENTRIES) {
        let mut batch = sled::Batch::default();
        for key in chunk {
            batch.remove(key.as_slice());
        }
        tree.apply_batch(batch).map_err(io)?;
    }
    Ok(())
}

fn word_at(raw: &[u8], at: usize) -> Result<u64, StorageError> {
    raw.get(at..at + 8)
        .map(|w| u64::from_be_bytes(w.try_into().expect("8 bytes")))
        .ok_or_else(|| StorageError::Corrupt(format!("key or mark {raw:?} too short")))
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<SledStore, StorageError> {
        let db = open_db(dir)?;
        let tree = db.open_tree("commerce").map_err(io)?;
        let blobs = Arc::new(BlobSync::adopt(&db_dir(dir))?);
        let log = Arc::new(LogGrowth::open(&db_dir(dir))?);
        let outbox = SledOutbox::open(&db, blobs.clone(), log.clone())?;
        let layout = Layout::decode(tree.get(META).map_err(io)?)?;
        let layout_shared = Arc::new(Mutex::new(layout));
        let journal = JournalDb::open(dir)?;
        let keys = Arc::new(KeyTables::open(&dir.join(KEYS_DIR))?);
        let store = SledStore {
            archive: SledArchive {
                tree: tree.clone(),
                layout: layout_shared.clone(),
                keys: keys.clone(),
                journal: journal.tree.clone(),
            },
            journal,
            keys,
            db,
            tree,
            blobs,
            log,
            outbox,
            layout: layout_shared,
            needs_tidy: AtomicBool::new(false),
        };
        if store.tree.contains_key(UNFINISHED).map_err(io)? {
            store.tidy(&layout)?;
        }
        if !store.tree.contains_key(BY_USER_BUILT).map_err(io)? {
            store.build_by_user()?;
        }
        if !store.tree.contains_key(STATUS_MASKS_BUILT).map_err(io)? {
            store.build_status_masks()?;
        }
        Ok(store)
    }

    fn layout(&self) -> Layout {
        *self.layout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes everything inserted so far durable: the blob files sled wrote
    /// for it, sled's log, and the log's new length if it grew (what sled's
    /// flush leaves out, see [`crate::store::sled_sync`]).
    fn flush(&self) -> Result<(), StorageError> {
        self.blobs.sync_new()?;
        self.tree.flush().map_err(io)?;
        self.log.sync_if_grown()?;
        Ok(())
    }
}

impl Store for SledStore {
    fn append(&self, first_seq: u64, frames: &[u8]) -> Result<(), StorageError> {
        self.journal.append(journal_key(first_seq), frames)
    }

    fn forget_failed_appends(&self) -> Result<(), StorageError> {
        self.journal.forget_failed()
    }

    fn snapshot(&self, seq: u64, entries: SnapshotEntries) -> Result<(), StorageError> {
        if self.needs_tidy.load(Ordering::Acquire) {
            self.tidy(&self.layout())?;
            self.needs_tidy.store(false, Ordering::Release);
        }
        let result = self.write_snapshot(seq, entries);
        if result.is_err() {
            self.needs_tidy.store(true, Ordering::Release);
        }
        result
    }

    fn load(&self) -> Result<Loaded, StorageError> {
        let layout = Layout::decode(self.tree.get(META).map_err(io)?)?;
        let mut snapshots = Vec::new();
        self.merged(&layout, |k, v| {
            snapshots.push((decode_key(k)?, v.to_vec()));
            Ok(())
        })?;
        // An older store's batches in the main tree first: they are older.
        let mut batches = Vec::new();
        for tree in [&self.tree, &self.journal.tree] {
            for kv in tree.scan_prefix([JOURNAL]) {
                let (k, v) = kv.map_err(io)?;
                batches.push((journal_seq(&k)?, v.to_vec()));
            }
        }
        Ok(Loaded {
            snapshot_seq: layout.seq,
            snapshots,
            batches,
        })
    }

    fn size_on_disk(&self) -> Option<u64> {
        let main = self.db.size_on_disk().ok()?;
        Some(main + self.journal.db.size_on_disk().ok()?)
    }

    fn archive(&self) -> Arc<dyn Archive> {
        Arc::new(self.archive.clone())
    }

    fn outbox(&self) -> Arc<dyn OutboxStore> {
        Arc::new(self.outbox.clone())
    }

    /// Reads only the journal's keys from the batch that may hold `seq + 1` on.
    fn journal_after(&self, seq: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let mut batches = Vec::new();
        // An older store's batches in the main tree first: they are older.
        for tree in [&self.tree, &self.journal.tree] {
            let straddling = tree
                .range(journal_key(0)..=journal_key(seq.saturating_add(1)))
                .next_back();
            let later = tree.range(journal_key(seq.saturating_add(2))..=journal_key(u64::MAX));
            for kv in straddling.into_iter().chain(later) {
                let (k, v) = kv.map_err(io)?;
                batches.push((journal_seq(&k)?, v.to_vec()));
            }
        }
        Ok(crate::store::batches_after(batches, seq))
    }
}
