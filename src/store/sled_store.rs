//! sled (pinned `=0.34.7`) behind [`Store`].
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
//!
//! Everything else lives in one tree of `<data dir>/sled`:
//! - `p` + generation (u64) + index (u32): a *pack* of snapshot entries
//!   (entities, stored idempotency keys, the world's meta), about 64 KiB,
//!   sorted by key within a generation, checksummed.
//! - `m`: the committed layout: the sequence every snapshot includes, the
//!   newest generation, and the *base* generation the live ones start at.
//! - `x`: a snapshot or a compaction was started and not finished.
//! - `s…`/`k…`: one entry per key, as stores wrote them before packs; read
//!   as the oldest layer until the first compaction folds them in.
//!
//! **Why packs and generations.** sled 0.34 costs about 7 µs per key
//! inserted, and its `apply_batch` holds a process-wide write lock for the
//! whole batch: one atomic batch of 100,000 snapshot entries stalls every
//! journal append for about a second, and one key per entity keeps a core
//! busy writing snapshots. The same bytes as 64 KiB packs go about 15 times
//! faster, each insert on its own (docs/performance.md, "Snapshots as
//! 64 KiB packs under generations"; the unit tests here time neither).
//!
//! A snapshot writes only what changed, as a new generation, invisible
//! until one small write moves `m` to it. Recovery reads the base and every
//! newer generation, newest entry per key winning (a deletion is an entry
//! too). When the newer generations outgrow the base, they are merged into
//! a new base (a streaming merge of sorted runs), committed the same way,
//! and the old packs removed. A crash anywhere leaves `m` at a committed
//! layout; what lies outside it is removed at the next open, which `x` asks for.
//!
//! The archive ([`crate::store::archive`]) is in the same tree:
//! - `ao` + block (u64) + generation (u64): the finished orders of one
//!   block of ids that the snapshot of that generation archived, as
//!   concatenated frames. Readers see only committed generations; the `x`
//!   mark of a snapshot lists its blocks, so an unfinished one's parts are
//!   removed at the next open.
//! - `ag` + user (u64) + group (u64): the whole chunks of history
//!   `group * HISTORY_GROUP_CHUNKS..` of a user archived so far, as
//!   `(chunk u64 | length u32 | frame)`, by chunk. A snapshot that archives
//!   a chunk rewrites its group with it (the same bytes again if a
//!   snapshot is redone, so never tidied): one key per
//!   [`HISTORY_GROUP_CHUNKS`] chunks rather than per chunk.
//! - `ah` + user (u64) + chunk (u64): a whole chunk of history, as stores
//!   wrote them before groups; read when a group lacks the chunk.
//! - `av` + user (u64): the user's *open part*, the ids (u64 each,
//!   ascending) of the user's archived orders not yet in a sealed part.
//!   Each snapshot adds the ids it archived of the user; once the open
//!   part holds [`SEALED_PART_IDS`], it is sealed:
//! - `au` + user (u64) + largest id (u64): a sealed part, written before
//!   the open part is removed, so a reader that finds the open part gone
//!   finds the part. A user's orders page reads the open part, then the
//!   sealed parts from the largest id down. So sled holds about one key
//!   per [`SEALED_PART_IDS`] orders (sled keeps some 40 bytes in memory
//!   per live key: a key per user per snapshot made RSS creep). Visible at
//!   once: an id there whose order the committed archive lacks is still in
//!   memory, and one an unfinished snapshot left is archived again by the
//!   next (readers drop the repeat), so never tidied.
//! - `ai`: the `au` index is complete. A store archived by a version
//!   without it gets it built from `ao` at its next open.
//!
//! sled flushes in the background only every 500 ms, so `append` flushes
//! before it returns: nothing is acknowledged before it is on disk. Every
//! flush here also syncs what sled's own leaves out, its blob files and
//! its log's growth ([`crate::store::sled_sync`]).

use crate::domain::world::IDEMPOTENCY_TTL_MS;
use crate::store::keys::{KeyTables, KeyToPut};
use crate::store::sled_outbox::SledOutbox;
use crate::store::sled_sync::{BlobSync, LogGrowth};
use crate::store::{
    Archive, ArchiveReader, Loaded, OutboxStore, SnapshotEntries, SnapshotKey, StorageError, Store,
    ORDER_BLOCK,
};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
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

const JOURNAL: u8 = b'j';
const SNAPSHOT: u8 = b's';
const KEY: u8 = b'k';
const PACK: u8 = b'p';
const META: &[u8] = b"m";
const UNFINISHED: &[u8] = b"x";
/// A pack is closed once it holds this many bytes.
const PACK_BYTES: usize = 64 * 1024;
/// Journal keys removed per sled batch (each holds sled's write lock briefly).
const CHUNK_ENTRIES: usize = 256;
/// Newer generations are merged into the base once they hold more bytes
/// than it (and at least this much), or once there are this many.
const MERGE_BYTES_MIN: u64 = 4 * 1024 * 1024;
const GENERATIONS_MAX: u64 = 64;
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
/// A user's open part of the index by user is sealed once it holds this
/// many ids (and the index built from `ao` is written in parts this big).
/// Each snapshot rewrites the open part of every user it archived orders
/// of: at most this many ids, 8 bytes each.
const SEALED_PART_IDS: usize = 128;
/// Whole history chunks of a user per `ag` key. Archiving a chunk rewrites
/// its group: on average about (this + 1) / 2 chunks' bytes per chunk.
const HISTORY_GROUP_CHUNKS: u64 = 4;

/// Where the committed snapshot lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Layout {
    seq: u64,
    /// The newest committed generation.
    generation: u64,
    /// Generations `base..=generation` are live; with base 0, entries from
    /// before packs (`s…`, `k…`) are the oldest layer.
    base: u64,
    base_bytes: u64,
    /// Bytes of the generations after the base.
    newer_bytes: u64,
}

impl Layout {
    fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        for (i, v) in [
            self.seq,
            self.generation,
            self.base,
            self.base_bytes,
            self.newer_bytes,
        ]
        .iter()
        .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    /// Stores from before packs wrote the sequence alone.
    fn decode(raw: Option<sled::IVec>) -> Result<Layout, StorageError> {
        let word = |v: &[u8], i: usize| {
            u64::from_be_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        };
        match raw.as_deref() {
            None => Ok(Layout::default()),
            Some(v) if v.len() == 8 => Ok(Layout {
                seq: word(v, 0),
                ..Layout::default()
            }),
            Some(v) if v.len() == 40 => Ok(Layout {
                seq: word(v, 0),
                generation: word(v, 1),
                base: word(v, 2),
                base_bytes: word(v, 3),
                newer_bytes: word(v, 4),
            }),
            Some(v) => Err(StorageError::Corrupt(format!(
                "snapshot layout of {} bytes",
                v.len()
            ))),
        }
    }
}

const ARCHIVED_ORDERS: [u8; 2] = *b"ao";
const ARCHIVED_HISTORY: [u8; 2] = *b"ah";
const ARCHIVED_HISTORY_GROUP: [u8; 2] = *b"ag";
const ARCHIVED_BY_USER: [u8; 2] = *b"au";
const OPEN_BY_USER: [u8; 2] = *b"av";
const BY_USER_BUILT: &[u8] = b"ai";

fn archive_key(prefix: [u8; 2], a: u64, b: u64) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..2].copy_from_slice(&prefix);
    k[2..10].copy_from_slice(&a.to_be_bytes());
    k[10..].copy_from_slice(&b.to_be_bytes());
    k
}

fn part_key(block: u64, generation: u64) -> [u8; 18] {
    archive_key(ARCHIVED_ORDERS, block, generation)
}

fn chunk_key(user: u64, chunk: u64) -> [u8; 18] {
    archive_key(ARCHIVED_HISTORY, user, chunk)
}

fn group_key(user: u64, chunk: u64) -> [u8; 18] {
    archive_key(ARCHIVED_HISTORY_GROUP, user, chunk / HISTORY_GROUP_CHUNKS)
}

/// The chunks of a history group, by chunk.
fn decode_group(raw: &[u8]) -> Result<BTreeMap<u64, &[u8]>, StorageError> {
    let bad = || StorageError::Corrupt(format!("history group of {} bytes", raw.len()));
    let mut chunks = BTreeMap::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_checked(12).ok_or_else(bad)?;
        let chunk = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(head[8..].try_into().expect("4 bytes")) as usize;
        let (frame, tail) = tail.split_at_checked(len).ok_or_else(bad)?;
        chunks.insert(chunk, frame);
        rest = tail;
    }
    Ok(chunks)
}

fn encode_group(chunks: &BTreeMap<u64, &[u8]>) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::with_capacity(chunks.values().map(|f| 12 + f.len()).sum());
    for (chunk, frame) in chunks {
        let len = u32::try_from(frame.len()).map_err(|_| {
            StorageError::Corrupt(format!("history chunk of {} bytes", frame.len()))
        })?;
        out.extend_from_slice(&chunk.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(frame);
    }
    Ok(out)
}

fn by_user_key(user: u64, largest: u64) -> [u8; 18] {
    archive_key(ARCHIVED_BY_USER, user, largest)
}

fn open_part_key(user: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(&OPEN_BY_USER);
    k[2..].copy_from_slice(&user.to_be_bytes());
    k
}

/// A part of user `user`'s index: ids, u64 each.
fn decode_ids(user: u64, raw: &[u8]) -> Result<Vec<u64>, StorageError> {
    if !raw.len().is_multiple_of(8) {
        return Err(StorageError::Corrupt(format!(
            "order ids of user {user} in {} bytes",
            raw.len()
        )));
    }
    Ok(raw
        .chunks_exact(8)
        .map(|w| u64::from_be_bytes(w.try_into().expect("8 bytes")))
        .collect())
}

fn encode_ids(ids: &[u64]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_be_bytes()).collect()
}

fn word_at(raw: &[u8], at: usize) -> Result<u64, StorageError> {
    raw.get(at..at + 8)
        .map(|w| u64::from_be_bytes(w.try_into().expect("8 bytes")))
        .ok_or_else(|| StorageError::Corrupt(format!("key or mark {raw:?} too short")))
}

/// The archive's entries (`a…`), read from any thread.
#[derive(Clone)]
struct SledArchive {
    tree: sled::Tree,
    layout: Arc<Mutex<Layout>>,
    keys: Arc<KeyTables>,
    /// The journal's tree, for the record a recent idempotency key names.
    journal: sled::Tree,
}

impl SledArchive {
    fn committed_generation(&self) -> u64 {
        self.layout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }
}

impl Archive for SledArchive {
    fn order_block(&self, block: u64) -> Result<Vec<u8>, StorageError> {
        let committed = self.committed_generation();
        let mut out = Vec::new();
        for kv in self
            .tree
            .range(part_key(block, 0)..=part_key(block, committed))
        {
            out.extend_from_slice(&kv.map_err(io)?.1);
        }
        Ok(out)
    }

    fn history_chunk(&self, user: u64, chunk: u64) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(group) = self.tree.get(group_key(user, chunk)).map_err(io)? {
            if let Some(frame) = decode_group(&group)?.get(&chunk) {
                return Ok(Some(frame.to_vec()));
            }
        }
        Ok(self
            .tree
            .get(chunk_key(user, chunk))
            .map_err(io)?
            .map(|v| v.to_vec()))
    }

    fn user_orders(&self, user: u64, before: u64, limit: usize) -> Result<Vec<u64>, StorageError> {
        // The open part whole, then the sealed parts by their largest id,
        // newest first. Parts may overlap (an order finished late), so
        // reading stops only once a part's largest id is below the `limit`
        // newest ids found.
        let mut found: Vec<u64> = Vec::new();
        let take = |found: &mut Vec<u64>, raw: &[u8]| -> Result<(), StorageError> {
            found.extend(decode_ids(user, raw)?.into_iter().filter(|id| *id < before));
            found.sort_unstable_by(|a, b| b.cmp(a));
            found.dedup();
            found.truncate(limit);
            Ok(())
        };
        if let Some(open) = self.tree.get(open_part_key(user)).map_err(io)? {
            take(&mut found, &open)?;
        }
        let parts = self
            .tree
            .range(by_user_key(user, 0)..=by_user_key(user, u64::MAX))
            .rev();
        for kv in parts {
            let (k, v) = kv.map_err(io)?;
            let largest = word_at(&k, 10)?;
            if found.len() >= limit && found.last().is_none_or(|least| largest < *least) {
                break;
            }
            take(&mut found, &v)?;
        }
        Ok(found)
    }

    fn each_order_block(
        &self,
        f: &mut dyn FnMut(&[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let committed = self.committed_generation();
        let mut block: Option<(u64, Vec<u8>)> = None;
        for kv in self.tree.scan_prefix(ARCHIVED_ORDERS) {
            let (k, v) = kv.map_err(io)?;
            let (b, generation) = (word_at(&k, 2)?, word_at(&k, 10)?);
            if generation > committed {
                continue;
            }
            match &mut block {
                Some((current, frames)) if *current == b => frames.extend_from_slice(&v),
                _ => {
                    if let Some((_, frames)) = block.take() {
                        f(&frames)?;
                    }
                    block = Some((b, v.to_vec()));
                }
            }
        }
        if let Some((_, frames)) = block {
            f(&frames)?;
        }
        Ok(())
    }

    fn key(&self, hash: u128) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.keys.get(hash)?.map(|found| found.frame))
    }

    fn journal_batch_of(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        // The journal's own database, then where older stores kept it.
        for tree in [&self.journal, &self.tree] {
            let mut below = tree.range(journal_key(0)..=journal_key(seq));
            if let Some(kv) = below.next_back() {
                let (k, v) = kv.map_err(io)?;
                return Ok(Some((journal_seq(&k)?, v.to_vec())));
            }
        }
        Ok(None)
    }
}

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
struct JournalDb {
    db: sled::Db,
    tree: sled::Tree,
    blobs: BlobSync,
    log: LogGrowth,
    /// An append failed: no more appends, trims or flushes but the one that
    /// makes the failed batches' removal durable.
    poisoned: AtomicBool,
    /// Keys of the batches whose append failed, until their removal is durable.
    failed: Mutex<Vec<[u8; 9]>>,
}

impl JournalDb {
    fn open(dir: &Path) -> Result<JournalDb, StorageError> {
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
    fn append(&self, key: [u8; 9], frames: &[u8]) -> Result<(), StorageError> {
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
    fn forget_failed(&self) -> Result<(), StorageError> {
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
    fn flush(&self) -> Result<(), StorageError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        self.write_out()
    }

    /// Makes everything inserted or removed so far durable, with the blob
    /// files sled wrote for it and the log's new length. Only the journal
    /// writes blob files here (its last node, or a node a trim rewrote),
    /// so listing them costs one `stat` nearly always.
    fn write_out(&self) -> Result<(), StorageError> {
        self.blobs.sync_new()?;
        self.tree.flush().map_err(io)?;
        self.log.sync_if_grown()?;
        Ok(())
    }
}

fn io(e: sled::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

/// The sequence a journal key starts at.
fn journal_seq(key: &[u8]) -> Result<u64, StorageError> {
    match key {
        [JOURNAL, seq @ ..] => {
            Ok(u64::from_be_bytes(seq.try_into().map_err(|_| {
                StorageError::Corrupt(format!("journal key {key:?}"))
            })?))
        }
        _ => Err(StorageError::Corrupt(format!("journal key {key:?}"))),
    }
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

fn journal_key(seq: u64) -> [u8; 9] {
    let mut k = [JOURNAL; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn pack_prefix(generation: u64) -> [u8; 9] {
    let mut k = [PACK; 9];
    k[1..].copy_from_slice(&generation.to_be_bytes());
    k
}

fn pack_key(generation: u64, index: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..9].copy_from_slice(&pack_prefix(generation));
    k[9..].copy_from_slice(&index.to_be_bytes());
    k
}

fn pack_generation(raw: &[u8]) -> Result<u64, StorageError> {
    match raw {
        [PACK, g @ ..] if g.len() == 12 => {
            Ok(u64::from_be_bytes(g[..8].try_into().expect("8 bytes")))
        }
        _ => Err(StorageError::Corrupt(format!("pack key {raw:?}"))),
    }
}

#[cfg(test)]
fn encode_key(key: &SnapshotKey) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key_into(key, &mut out);
    out
}

/// Appends `key` as it is stored.
fn encode_key_into(key: &SnapshotKey, out: &mut Vec<u8>) {
    let mut entity = |kind: u8, id: u64| {
        out.extend_from_slice(&[SNAPSHOT, kind]);
        out.extend_from_slice(&id.to_be_bytes());
    };
    match key {
        SnapshotKey::User(id) => entity(b'u', *id),
        SnapshotKey::Product(id) => entity(b'p', *id),
        SnapshotKey::Campaign(id) => entity(b'c', *id),
        SnapshotKey::Order(id) => entity(b'o', *id),
        SnapshotKey::History(id, chunk) => {
            entity(b'h', *id);
            out.extend_from_slice(&chunk.to_be_bytes());
        }
        SnapshotKey::Issued(id, chunk) => {
            entity(b'i', *id);
            out.extend_from_slice(&chunk.to_be_bytes());
        }
        SnapshotKey::Meta => out.extend_from_slice(&[SNAPSHOT, b'm']),
        SnapshotKey::Tally => out.extend_from_slice(&[SNAPSHOT, b't']),
        SnapshotKey::TallySold(chunk) => entity(b'T', *chunk),
        // Never in a pack: `write_snapshot` sends them to the archive tree.
        SnapshotKey::ArchivedOrder { id, .. } => entity(b'O', *id),
        SnapshotKey::ArchivedHistory(id, chunk) => {
            entity(b'H', *id);
            out.extend_from_slice(&chunk.to_be_bytes());
        }
        SnapshotKey::Key(k) => {
            out.push(KEY);
            out.extend_from_slice(k.as_bytes());
        }
        // Never in a pack: `write_snapshot` sends them to the key tables.
        SnapshotKey::IdemKey { hash, .. } => {
            out.extend_from_slice(&[SNAPSHOT, b'K']);
            out.extend_from_slice(&hash.to_be_bytes());
        }
    }
}

fn decode_key(raw: &[u8]) -> Result<SnapshotKey, StorageError> {
    let bad = || StorageError::Corrupt(format!("unknown snapshot key {raw:?}"));
    match raw {
        [KEY, rest @ ..] => String::from_utf8(rest.to_vec())
            .map(SnapshotKey::Key)
            .map_err(|_| bad()),
        [SNAPSHOT, b'm'] => Ok(SnapshotKey::Meta),
        [SNAPSHOT, b't'] => Ok(SnapshotKey::Tally),
        [SNAPSHOT, pair @ (b'h' | b'i'), rest @ ..] if rest.len() == 16 => {
            let a = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let b = u64::from_be_bytes(rest[8..].try_into().expect("8 bytes"));
            Ok(if *pair == b'h' {
                SnapshotKey::History(a, b)
            } else {
                SnapshotKey::Issued(a, b)
            })
        }
        [SNAPSHOT, kind, id @ ..] if id.len() == 8 => {
            let id = u64::from_be_bytes(id.try_into().expect("8 bytes"));
            match kind {
                b'u' => Ok(SnapshotKey::User(id)),
                b'p' => Ok(SnapshotKey::Product(id)),
                b'c' => Ok(SnapshotKey::Campaign(id)),
                b'o' => Ok(SnapshotKey::Order(id)),
                b'T' => Ok(SnapshotKey::TallySold(id)),
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

/// Writes a generation's entries, in key order, as packs:
/// `(1 | key len u16 | key | value len u32 | value)` or `(0 | key len | key)`
/// for a deletion, repeated, then a crc32 of all of it.
struct PackWriter<'a> {
    tree: &'a sled::Tree,
    generation: u64,
    index: u32,
    buf: Vec<u8>,
    bytes: u64,
}

impl<'a> PackWriter<'a> {
    fn new(tree: &'a sled::Tree, generation: u64) -> Self {
        PackWriter {
            tree,
            generation,
            index: 0,
            buf: Vec::with_capacity(PACK_BYTES + 4096),
            bytes: 0,
        }
    }

    fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
        let too_big = || StorageError::Io(format!("snapshot entry {key:?} is too big"));
        let key_len = u16::try_from(key.len()).map_err(|_| too_big())?;
        self.buf.push(u8::from(value.is_some()));
        self.buf.extend_from_slice(&key_len.to_be_bytes());
        self.buf.extend_from_slice(key);
        if let Some(v) = value {
            let len = u32::try_from(v.len()).map_err(|_| too_big())?;
            self.buf.extend_from_slice(&len.to_be_bytes());
            self.buf.extend_from_slice(v);
        }
        if self.buf.len() >= PACK_BYTES {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self.bytes += self.buf.len() as u64;
        self.tree
            .insert(pack_key(self.generation, self.index), self.buf.as_slice())
            .map_err(io)?;
        self.index += 1;
        self.buf.clear();
        Ok(())
    }

    /// Writes the last pack; returns the bytes written.
    fn finish(mut self) -> Result<u64, StorageError> {
        self.close()?;
        Ok(self.bytes)
    }
}

/// Where one entry of a pack lies in it: its key, and its value unless deleted.
type PackEntry = (Range<usize>, Option<Range<usize>>);

/// Checks a pack and finds its entries (read in place: a merge reads every
/// live entry, and copying each cost two allocations).
fn decode_pack(raw: &[u8]) -> Result<VecDeque<PackEntry>, StorageError> {
    let bad = |what: &str| StorageError::Corrupt(format!("snapshot pack: {what}"));
    let Some(body_len) = raw.len().checked_sub(4) else {
        return Err(bad("too short"));
    };
    let (body, crc) = raw.split_at(body_len);
    if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
        return Err(bad("checksum mismatch"));
    }
    let mut out = VecDeque::new();
    let take = |n: usize, at: &mut usize| -> Result<Range<usize>, StorageError> {
        if body.len() - *at < n {
            return Err(bad("truncated entry"));
        }
        *at += n;
        Ok(*at - n..*at)
    };
    let word =
        |r: Range<usize>| -> u64 { r.map(|i| body[i]).fold(0, |w, b| w << 8 | u64::from(b)) };
    let mut at = 0;
    while at < body.len() {
        let tag = body[take(1, &mut at)?.start];
        let key_len = word(take(2, &mut at)?) as usize;
        let key = take(key_len, &mut at)?;
        let value = match tag {
            0 => None,
            1 => {
                let len = word(take(4, &mut at)?) as usize;
                Some(take(len, &mut at)?)
            }
            _ => return Err(bad("unknown entry tag")),
        };
        out.push_back((key, value));
    }
    Ok(out)
}

/// A sorted run of entries: one generation's packs, or the entries from before packs.
struct Run<'a> {
    source: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a>,
    /// The entries still to come, read in place: a pack and its entries,
    /// or (from before packs, where each sled value is one entry) one key
    /// and its value. The variant says which the run reads.
    held: Held,
}

enum Held {
    Pack(sled::IVec, VecDeque<PackEntry>),
    Single(Option<(sled::IVec, sled::IVec)>),
}

impl Run<'_> {
    /// A run of packs.
    fn packs<'a>(
        source: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a,
    ) -> Run<'a> {
        Run {
            source: Box::new(source),
            held: Held::Pack(sled::IVec::default(), VecDeque::new()),
        }
    }

    /// A run of entries from before packs, one per sled value.
    fn singles<'a>(
        source: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a,
    ) -> Run<'a> {
        Run {
            source: Box::new(source),
            held: Held::Single(None),
        }
    }

    /// Reads on until an entry is held, or the run is over.
    fn fill(&mut self) -> Result<(), StorageError> {
        while self.peek().is_none() {
            let Some(kv) = self.source.next() else {
                return Ok(());
            };
            let (k, v) = kv.map_err(io)?;
            match &mut self.held {
                Held::Single(kv) => *kv = Some((k, v)),
                Held::Pack(pack, entries) => {
                    *entries = decode_pack(&v)?;
                    *pack = v;
                }
            }
        }
        Ok(())
    }

    /// The entry held: its key, and its value unless deleted.
    fn peek(&self) -> Option<(&[u8], Option<&[u8]>)> {
        match &self.held {
            Held::Pack(pack, entries) => entries
                .front()
                .map(|(k, v)| (&pack[k.clone()], v.clone().map(|v| &pack[v]))),
            Held::Single(kv) => kv.as_ref().map(|(k, v)| (&k[..], Some(&v[..]))),
        }
    }

    fn advance(&mut self) {
        match &mut self.held {
            Held::Pack(_, entries) => {
                entries.pop_front();
            }
            Held::Single(kv) => *kv = None,
        }
    }
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
        Ok(store)
    }

    /// Indexes every archived order by user (a store archived before the
    /// index existed; on a new store there is nothing to index), then marks
    /// the index complete. Redone whole if interrupted: parts repeat ids.
    fn build_by_user(&self) -> Result<(), StorageError> {
        let mut by_user: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        ArchiveReader(Arc::new(self.archive.clone()))
            .each_order(|o| by_user.entry(o.user_id.0).or_default().push(o.id.0))?;
        for (user, mut ids) in by_user {
            ids.sort_unstable();
            for part in ids.chunks(SEALED_PART_IDS) {
                self.put_user_part(user, part)?;
            }
        }
        self.tree.insert(BY_USER_BUILT, &[][..]).map_err(io)?;
        self.flush()?;
        Ok(())
    }

    /// One sealed part of user `user`'s index: `ids`, ascending, not empty.
    fn put_user_part(&self, user: u64, ids: &[u64]) -> Result<(), StorageError> {
        let largest = *ids.last().expect("a part has an id");
        self.tree
            .insert(by_user_key(user, largest), encode_ids(ids))
            .map_err(io)?;
        Ok(())
    }

    /// Rewrites the history group under `key` with `chunks` added (or
    /// replaced, when a snapshot is redone).
    fn add_history_chunks(
        &self,
        key: [u8; 18],
        chunks: &[(u64, &[u8])],
    ) -> Result<(), StorageError> {
        let old = self.tree.get(key).map_err(io)?;
        let mut group = match &old {
            Some(raw) => decode_group(raw)?,
            None => BTreeMap::new(),
        };
        for (chunk, frame) in chunks {
            group.insert(*chunk, *frame);
        }
        self.tree.insert(key, encode_group(&group)?).map_err(io)?;
        Ok(())
    }

    /// Adds `ids` (archived orders of user `user`) to the user's open part,
    /// sealing it once it is full: the sealed part is written before the
    /// open one is removed, so a concurrent reader never misses its ids.
    fn add_user_ids(&self, user: u64, ids: &[u64]) -> Result<(), StorageError> {
        let key = open_part_key(user);
        let mut open = match self.tree.get(key).map_err(io)? {
            Some(raw) => decode_ids(user, &raw)?,
            None => Vec::new(),
        };
        open.extend_from_slice(ids);
        open.sort_unstable();
        open.dedup();
        if open.len() >= SEALED_PART_IDS {
            self.put_user_part(user, &open)?;
            self.tree.remove(key).map_err(io)?;
        } else {
            self.tree.insert(key, encode_ids(&open)).map_err(io)?;
        }
        Ok(())
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

    /// After a snapshot or merge that did not finish: removes every pack
    /// outside the committed layout (and entries from before packs once a
    /// merge folded them in), the archive parts of an uncommitted snapshot
    /// (its mark lists their blocks), then the `x` mark.
    fn tidy(&self, layout: &Layout) -> Result<(), StorageError> {
        if let Some(mark) = self.tree.get(UNFINISHED).map_err(io)? {
            let generation = word_at(&mark, 0)?;
            if generation > layout.generation {
                for at in (8..mark.len()).step_by(8) {
                    let block = word_at(&mark, at)?;
                    self.archive
                        .tree
                        .remove(part_key(block, generation))
                        .map_err(io)?;
                }
            }
        }
        let mut doomed = Vec::new();
        for k in self.tree.scan_prefix([PACK]).keys() {
            let k = k.map_err(io)?;
            let generation = pack_generation(&k)?;
            if generation < layout.base || generation > layout.generation {
                doomed.push(k.to_vec());
            }
        }
        if layout.base > 0 {
            doomed.extend(self.before_packs_keys()?);
        }
        remove_chunked(&self.tree, doomed)?;
        self.tree.remove(UNFINISHED).map_err(io)?;
        self.flush()?;
        Ok(())
    }

    fn before_packs_keys(&self) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut out = Vec::new();
        for prefix in [[KEY], [SNAPSHOT]] {
            for k in self.tree.scan_prefix(prefix).keys() {
                out.push(k.map_err(io)?.to_vec());
            }
        }
        Ok(out)
    }

    /// After a snapshot covering `seq` is committed: removes every journal
    /// batch whose successor starts at or below `seq + 1`, in the journal's
    /// database and among the batches an older store kept in the main tree
    /// (all older than the journal database's), then flushes the journal's
    /// database. Nothing relies on a removal being durable: recovery skips
    /// what the snapshot covers.
    fn trim_journal(&self, seq: u64) -> Result<(), StorageError> {
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

    fn commit(&self, layout: Layout) -> Result<(), StorageError> {
        self.tree.insert(META, &layout.encode()[..]).map_err(io)?;
        if let Err(e) = self.flush() {
            // Not committed: put the committed layout back, so no later
            // flush makes durable a layout whose packs the tidy removes.
            let committed = self.layout().encode();
            let _ = self.tree.insert(META, &committed[..]);
            return Err(e);
        }
        *self.layout.lock().unwrap_or_else(|e| e.into_inner()) = layout;
        Ok(())
    }

    /// Every live entry of `layout`, in key order, the newest layer winning;
    /// deletions are applied, not passed on.
    fn merged(
        &self,
        layout: &Layout,
        mut emit: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        // Oldest first: on equal keys the last run wins.
        let mut runs: Vec<Run<'_>> = Vec::new();
        if layout.base == 0 {
            let before_packs = self
                .tree
                .scan_prefix([KEY])
                .chain(self.tree.scan_prefix([SNAPSHOT]));
            runs.push(Run::singles(before_packs));
        }
        for generation in layout.base.max(1)..=layout.generation {
            runs.push(Run::packs(self.tree.scan_prefix(pack_prefix(generation))));
        }
        let mut heads: Vec<usize> = Vec::with_capacity(runs.len());
        loop {
            for run in runs.iter_mut() {
                run.fill()?;
            }
            // The runs whose entry has the least key; the last of them wins.
            heads.clear();
            let mut least: Option<&[u8]> = None;
            for (i, run) in runs.iter().enumerate() {
                let Some((k, _)) = run.peek() else { continue };
                if least.is_none_or(|l| k < l) {
                    least = Some(k);
                    heads.clear();
                }
                if least == Some(k) {
                    heads.push(i);
                }
            }
            let Some(&last) = heads.last() else {
                return Ok(());
            };
            if let Some((k, Some(v))) = runs[last].peek() {
                emit(k, v)?;
            }
            for &i in &heads {
                runs[i].advance();
            }
        }
    }

    /// [`Store::snapshot`]: writes, commits, trims, and merges when due.
    fn write_snapshot(&self, seq: u64, entries: SnapshotEntries) -> Result<(), StorageError> {
        let layout = self.layout();
        let generation = layout.generation + 1;
        let mut parts: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        // Flat lists, sorted below, rather than a small `Vec` per user or
        // group: a snapshot archives tens of thousands of them.
        let mut by_user: Vec<(u64, u64)> = Vec::new();
        let mut chunks: Vec<([u8; 18], u64, &[u8])> = Vec::new();
        let mut keys: Vec<KeyToPut<'_>> = Vec::new();
        // The snapshot's own entries: their keys encoded one after another
        // in `names`, each entry its key's range there and its value.
        let mut names: Vec<u8> = Vec::new();
        let mut live: Vec<(usize, usize, Option<&[u8]>)> = Vec::with_capacity(entries.len());
        for (key, value) in entries.iter() {
            match (key, value) {
                (SnapshotKey::ArchivedOrder { user, id }, Some(frame)) => {
                    parts
                        .entry(id / ORDER_BLOCK)
                        .or_default()
                        .extend_from_slice(frame);
                    by_user.push((*user, *id));
                }
                (SnapshotKey::ArchivedHistory(user, chunk), Some(frame)) => {
                    chunks.push((group_key(*user, *chunk), *chunk, frame));
                }
                (
                    SnapshotKey::IdemKey {
                        hash,
                        fingerprint,
                        at_ms,
                    },
                    Some(frame),
                ) => keys.push(KeyToPut {
                    hash: *hash,
                    fingerprint: *fingerprint,
                    at_ms: *at_ms,
                    frame,
                }),
                (key, _) if key.is_archived() => {
                    return Err(StorageError::Corrupt(format!(
                        "archive entry {key:?} without a value"
                    )))
                }
                (key, value) => {
                    let start = names.len();
                    encode_key_into(key, &mut names);
                    live.push((start, names.len(), value));
                }
            }
        }
        let mut mark = generation.to_be_bytes().to_vec();
        for block in parts.keys() {
            mark.extend_from_slice(&block.to_be_bytes());
        }
        self.tree.insert(UNFINISHED, mark).map_err(io)?;
        // Durable before any pack: packs never outlive a crash without the mark.
        self.flush()?;

        // 0. The archive: parts under this generation (invisible until it
        //    is committed), history chunks (the same bytes if redone).
        for (block, frames) in parts {
            self.archive
                .tree
                .insert(part_key(block, generation), frames)
                .map_err(io)?;
        }
        // Stable: of two frames for one chunk, the one pushed last wins.
        chunks.sort_by_key(|c| c.0);
        let mut group = Vec::new();
        for run in chunks.chunk_by(|a, b| a.0 == b.0) {
            group.clear();
            group.extend(run.iter().map(|&(_, chunk, frame)| (chunk, frame)));
            self.add_history_chunks(run[0].0, &group)?;
        }
        // Idempotency keys: durable in their tables before the commit, as
        // the journal records that hold them are trimmed after it.
        let newest_key_ms = keys.iter().map(|k| k.at_ms).max();
        if let Some(newest) = newest_key_ms {
            self.keys
                .put(&keys, newest.saturating_sub(IDEMPOTENCY_TTL_MS))?;
        }
        by_user.sort_unstable();
        let mut ids = Vec::new();
        for run in by_user.chunk_by(|a, b| a.0 == b.0) {
            ids.clear();
            ids.extend(run.iter().map(|&(_, id)| id));
            self.add_user_ids(run[0].0, &ids)?;
        }

        // 1. The changed entries as a new generation, sorted (the last of
        //    two entries for one key wins); invisible until committed.
        let key = |(start, end, _): &(usize, usize, Option<&[u8]>)| &names[*start..*end];
        // Stable: of two entries for one key, the one pushed last stays last.
        live.sort_by(|a, b| key(a).cmp(key(b)));
        let mut writer = PackWriter::new(&self.tree, generation);
        for (i, entry) in live.iter().enumerate() {
            if live.get(i + 1).is_some_and(|next| key(next) == key(entry)) {
                continue;
            }
            writer.push(key(entry), entry.2)?;
        }
        let bytes = writer.finish()?;
        self.flush()?;

        // 2. Commit: one small write.
        let layout = Layout {
            seq,
            generation,
            newer_bytes: layout.newer_bytes + bytes,
            ..layout
        };
        self.commit(layout)?;

        // 3. Remove the journal it covers.
        self.trim_journal(seq)?;

        // 4. Newer generations outgrew the base: fold them in.
        if layout.newer_bytes > layout.base_bytes.max(MERGE_BYTES_MIN)
            || layout.generation - layout.base >= GENERATIONS_MAX
        {
            if let Err(e) = self.merge(layout) {
                // The snapshot itself is committed; what the merge left is
                // tidied before the next snapshot, which merges again.
                tracing::error!(error = %e, "merging snapshot generations failed; the next snapshot tidies and retries");
                self.needs_tidy.store(true, Ordering::Release);
                return Ok(());
            }
        }
        self.tree.remove(UNFINISHED).map_err(io)?;
        self.flush()?;
        Ok(())
    }

    /// Folds every live generation into a new base, commits it, and removes the rest.
    fn merge(&self, layout: Layout) -> Result<(), StorageError> {
        let generation = layout.generation + 1;
        self.tree
            .insert(UNFINISHED, &generation.to_be_bytes())
            .map_err(io)?;
        // Durable before any pack: packs never outlive a crash without the mark.
        self.flush()?;
        let mut writer = PackWriter::new(&self.tree, generation);
        self.merged(&layout, |k, v| writer.push(k, Some(v)))?;
        let bytes = writer.finish()?;
        self.flush()?;
        let merged = Layout {
            seq: layout.seq,
            generation,
            base: generation,
            base_bytes: bytes,
            newer_bytes: 0,
        };
        self.commit(merged)?;
        let mut doomed = Vec::new();
        for k in self
            .tree
            .range(pack_prefix(0)..pack_prefix(generation))
            .keys()
        {
            doomed.push(k.map_err(io)?.to_vec());
        }
        if layout.base == 0 {
            doomed.extend(self.before_packs_keys()?);
        }
        remove_chunked(&self.tree, doomed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn snapshot_keys_round_trip() {
        for key in [
            SnapshotKey::User(7),
            SnapshotKey::Product(1),
            SnapshotKey::Campaign(u64::MAX),
            SnapshotKey::Order(3),
            SnapshotKey::History(7, 2),
            SnapshotKey::Issued(3, 305),
            SnapshotKey::TallySold(9),
            SnapshotKey::Tally,
            SnapshotKey::Meta,
            SnapshotKey::Key("retry-1".into()),
        ] {
            assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
        }
    }

    /// sled writes a value over 128 KiB to a blob file of its own and does
    /// not sync it; `append` syncs it before it returns. Were sled's blob
    /// layout not the one `sled_sync` checks, the file would count as
    /// incomplete here, and the batch is read back whole.
    #[test]
    fn a_batch_sled_keeps_in_a_blob_file_is_synced_before_append_returns() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let batch = vec![7u8; 300 * 1024];
        s.append(1, &batch).unwrap();
        let files = std::fs::read_dir(journal_db_dir(dir.path()).join("blobs"))
            .unwrap()
            .count();
        assert!(files >= 1, "sled kept the batch in a blob file");
        assert_eq!(
            s.journal.blobs.sync_new().unwrap(),
            crate::store::sled_sync::Synced::default(),
            "every blob file was synced whole by append"
        );
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(loaded.batches, vec![(1, batch)]);
    }

    /// The log grows a segment at a time; `append` syncs its new length
    /// (sled's flush does not) before it returns.
    #[test]
    fn append_syncs_the_logs_new_length() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let len = || {
            std::fs::metadata(journal_db_dir(dir.path()).join("db"))
                .unwrap()
                .len()
        };
        let before = len();
        for seq in 0..64 {
            s.append(seq * 10 + 1, &[seq as u8; 16 * 1024]).unwrap();
        }
        assert!(len() > before, "the log grew");
        assert!(!s.journal.log.sync_if_grown().unwrap(), "append synced it");
    }

    /// Journal keys in the main tree, as stores kept them before the
    /// journal had a database of its own.
    fn legacy_journal(s: &SledStore) -> Vec<u64> {
        s.tree
            .scan_prefix([JOURNAL])
            .keys()
            .map(|k| journal_seq(&k.unwrap()).unwrap())
            .collect()
    }

    /// Batches go to the journal's own database. Those an older store
    /// kept in the main tree are read first, and trimmed by the snapshots
    /// that cover them, as the new ones are.
    #[test]
    fn an_older_stores_journal_in_the_main_tree_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.tree.insert(journal_key(1), b"a").unwrap();
            s.tree.insert(journal_key(3), b"b").unwrap();
            s.flush().unwrap();
            s.append(6, b"c").unwrap();
            s.append(8, b"d").unwrap();
            assert_eq!(
                legacy_journal(&s),
                [1, 3],
                "append wrote to the journal's database"
            );
        }
        let batches = |s: &SledStore| s.load().unwrap().batches;
        let s = SledStore::open(dir.path()).unwrap();
        let all: Vec<(u64, Vec<u8>)> = [(1, "a"), (3, "b"), (6, "c"), (8, "d")]
            .map(|(seq, v)| (seq, v.as_bytes().to_vec()))
            .into();
        assert_eq!(batches(&s), all);
        // Batch 1 (1..=2) is covered; batch 3 (3..=5) is not, 6 > 4 + 1.
        s.snapshot(4, vec![(SnapshotKey::User(1), Some(b"u".to_vec()))].into())
            .unwrap();
        assert_eq!(batches(&s), all[1..]);
        assert_eq!(legacy_journal(&s), [3]);
        // Batch 3 (the main tree's last) and 6 (the journal database's first) are covered.
        s.snapshot(7, vec![(SnapshotKey::User(1), Some(b"v".to_vec()))].into())
            .unwrap();
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(batches(&s), all[3..]);
        assert!(legacy_journal(&s).is_empty());
        assert_eq!(s.load().unwrap().snapshot_seq, 7);
    }

    /// A pack is read in place: each entry's key and value are found where
    /// they lie, and a pack that is cut short, altered or unknown is refused.
    #[test]
    fn packs_are_read_in_place_and_damaged_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let entries: [(&[u8], Option<&[u8]>); 4] = [
            (b"a", Some(b"one")),
            (b"bb", None),
            (b"c", Some(b"")),
            (&[7; 300], Some(&[9; 70_000])),
        ];
        let mut w = PackWriter::new(&s.tree, 9);
        for (k, v) in entries {
            w.push(k, v).unwrap();
        }
        w.finish().unwrap();
        let packs: Vec<sled::IVec> = s
            .tree
            .scan_prefix(pack_prefix(9))
            .values()
            .map(Result::unwrap)
            .collect();
        assert_eq!(packs.len(), 1, "the last entry closes the one pack");
        let raw = &packs[0];
        let read: Vec<(&[u8], Option<&[u8]>)> = decode_pack(raw)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (&raw[k], v.map(|v| &raw[v])))
            .collect();
        assert_eq!(read, entries);

        let refused = |bytes: &[u8]| decode_pack(bytes).unwrap_err().to_string();
        let sealed = |body: &[u8]| [body, &crc32fast::hash(body).to_be_bytes()].concat();
        let mut altered = raw.to_vec();
        altered[5] ^= 1;
        assert!(refused(&altered).contains("checksum"));
        assert!(refused(&raw[..3]).contains("too short"));
        let body = &raw[..raw.len() - 4];
        assert!(refused(&sealed(&body[..body.len() - 1])).contains("truncated"));
        assert!(refused(&sealed(&[2, 0, 1, b'k'])).contains("unknown entry tag"));
        assert!(decode_pack(&sealed(&[])).unwrap().is_empty());
    }

    #[test]
    fn appended_batches_survive_reopen_and_snapshots_trim_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.append(1, b"a").unwrap();
            s.append(3, b"b").unwrap();
            s.append(6, b"c").unwrap();
            s.snapshot(5, vec![(SnapshotKey::User(1), Some(b"u".to_vec()))].into())
                .unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(loaded.snapshot_seq, 5);
        assert_eq!(
            loaded.snapshots,
            vec![(SnapshotKey::User(1), b"u".to_vec())]
        );
        // batch 1 (1..=2) is trimmed; batch 3 (3..=5) too, since 6 <= 5 + 1; batch 6 stays.
        assert_eq!(loaded.batches, vec![(6, b"c".to_vec())]);
    }

    fn entries(pairs: &[(SnapshotKey, Option<&str>)]) -> SnapshotEntries {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    fn loaded(dir: &Path) -> Vec<(SnapshotKey, String)> {
        let mut out: Vec<_> = SledStore::open(dir)
            .unwrap()
            .load()
            .unwrap()
            .snapshots
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect();
        out.sort();
        out
    }

    /// What a snapshot of `generation` leaves when it stops before its
    /// commit: the `x` mark and packs of these entries.
    fn leave_unfinished(s: &SledStore, generation: u64, pairs: &[(SnapshotKey, &str)]) {
        s.tree
            .insert(UNFINISHED, &generation.to_be_bytes())
            .unwrap();
        let mut w = PackWriter::new(&s.tree, generation);
        for (key, value) in pairs {
            w.push(&encode_key(key), Some(value.as_bytes())).unwrap();
        }
        w.finish().unwrap();
        s.tree.flush().unwrap();
    }

    /// The generations that have packs, and whether `x` or entries from before packs remain.
    fn raw(dir: &Path) -> (BTreeSet<u64>, bool, usize) {
        let s = SledStore::open(dir).unwrap();
        let generations = s
            .tree
            .scan_prefix([PACK])
            .keys()
            .map(|k| pack_generation(&k.unwrap()).unwrap())
            .collect();
        let unfinished = s.tree.contains_key(UNFINISHED).unwrap();
        (
            generations,
            unfinished,
            s.before_packs_keys().unwrap().len(),
        )
    }

    #[test]
    fn snapshots_overwrite_and_delete_across_generations() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            // More than one pack, so a generation spans several sled values.
            let many: Vec<_> = (1..=600)
                .map(|i| (SnapshotKey::Order(i), Some(vec![b'o'; 300])))
                .collect();
            s.snapshot(3, many.into()).unwrap();
            s.snapshot(
                7,
                entries(&[
                    (SnapshotKey::Order(1), Some("o1-paid")),
                    (SnapshotKey::Order(2), None),
                    (SnapshotKey::Key("k".into()), Some("key")),
                ]),
            )
            .unwrap();
        }
        let got = loaded(dir.path());
        assert_eq!(got.len(), 600); // 599 orders and the key
        assert!(got.contains(&(SnapshotKey::Order(1), "o1-paid".into())));
        assert!(!got.iter().any(|(k, _)| *k == SnapshotKey::Order(2)));
        let loaded = SledStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.snapshot_seq, 7);
        let (generations, unfinished, _) = raw(dir.path());
        assert_eq!(generations, BTreeSet::from([1, 2]));
        assert!(!unfinished);
    }

    /// Archived orders are read by block, only from committed snapshots; an
    /// unfinished snapshot's parts are invisible and removed at the next
    /// open. History chunks are read back by key. Neither is loaded.
    #[test]
    fn archived_entries_are_read_by_block_and_an_unfinished_snapshots_parts_removed() {
        let dir = tempfile::tempdir().unwrap();
        let frame = |s: &str| s.as_bytes().to_vec();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.snapshot(
                4,
                vec![
                    (
                        SnapshotKey::ArchivedOrder { user: 1, id: 3 },
                        Some(frame("o3")),
                    ),
                    (
                        SnapshotKey::ArchivedOrder { user: 2, id: 300 },
                        Some(frame("o300")),
                    ),
                    (SnapshotKey::ArchivedHistory(1, 0), Some(frame("h10"))),
                    (SnapshotKey::Order(9), Some(frame("pending"))),
                ]
                .into(),
            )
            .unwrap();
            s.snapshot(
                5,
                vec![(
                    SnapshotKey::ArchivedOrder { user: 1, id: 5 },
                    Some(frame("o5")),
                )]
                .into(),
            )
            .unwrap();
            let a = s.archive();
            assert_eq!(a.order_block(0).unwrap(), frame("o3o5"));
            assert_eq!(a.order_block(1).unwrap(), frame("o300"));
            assert_eq!(a.history_chunk(1, 0).unwrap(), Some(frame("h10")));
            assert_eq!(a.history_chunk(1, 1).unwrap(), None);
            assert_eq!(a.user_orders(1, u64::MAX, 10).unwrap(), vec![5, 3]);
            assert_eq!(a.user_orders(2, u64::MAX, 10).unwrap(), vec![300]);
            assert_eq!(a.user_orders(3, u64::MAX, 10).unwrap(), Vec::<u64>::new());
            // A crash part way through the next snapshot (generation 3, block 0).
            let mut mark = 3u64.to_be_bytes().to_vec();
            mark.extend_from_slice(&0u64.to_be_bytes());
            s.tree.insert(UNFINISHED, mark).unwrap();
            s.tree.insert(part_key(0, 3), frame("o7")).unwrap();
            s.tree.flush().unwrap();
            assert_eq!(a.order_block(0).unwrap(), frame("o3o5"), "not committed");
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert!(!s.tree.contains_key(part_key(0, 3)).unwrap(), "tidied");
        assert!(
            s.tree.contains_key(part_key(0, 2)).unwrap(),
            "committed parts stay"
        );
        let mut blocks = Vec::new();
        s.archive()
            .each_order_block(&mut |frames| {
                blocks.push(frames.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(blocks, vec![frame("o3o5"), frame("o300")]);
        let loaded = s.load().unwrap();
        assert_eq!(
            loaded.snapshots,
            vec![(SnapshotKey::Order(9), frame("pending"))]
        );
    }

    /// A user's archived order ids come newest first below the cursor,
    /// exactly, however the parts of successive snapshots overlap (an order
    /// that finished late lands in a later part than newer ones).
    #[test]
    fn a_users_archived_orders_read_in_id_order_across_overlapping_parts() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        // Snapshot by snapshot, the ids each archived of user 7 (and of 8).
        let snapshots: [&[u64]; 5] = [&[10, 11, 13], &[14, 15], &[12, 20, 21], &[22], &[1, 30]];
        let mut all: Vec<u64> = Vec::new();
        for (i, ids) in snapshots.iter().enumerate() {
            let mut entries: SnapshotEntries = ids
                .iter()
                .map(|id| {
                    (
                        SnapshotKey::ArchivedOrder { user: 7, id: *id },
                        Some(vec![1]),
                    )
                })
                .collect();
            entries.push(
                SnapshotKey::ArchivedOrder {
                    user: 8,
                    id: 100 + i as u64,
                },
                Some(&[1]),
            );
            s.snapshot(i as u64 + 1, entries).unwrap();
            all.extend_from_slice(ids);
        }
        all.sort_unstable_by(|a, b| b.cmp(a));
        let a = s.archive();
        let befores = [u64::MAX, 31, 30, 22, 21, 15, 13, 12, 11, 2, 1, 0];
        assert_pages(&*a, 7, &all, &befores, &Vec::from_iter(0..=all.len() + 1));
        assert_eq!(a.user_orders(8, u64::MAX, 2).unwrap(), vec![104, 103]);
    }

    /// Many snapshots archive a user's orders, some finished late (an id
    /// below ids already archived), one archived twice (an unfinished
    /// snapshot redone): the open part is sealed every [`SEALED_PART_IDS`]
    /// ids, so sled holds one key per part rather than per snapshot, and
    /// every page still reads exactly, newest first.
    #[test]
    fn the_index_by_user_seals_full_parts_and_pages_read_exactly_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let mut all = BTreeSet::new();
        let mut late: Vec<u64> = Vec::new();
        let mut next = 1u64;
        let mut snapshots = 0u64;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        // Until some ids are in sealed parts, and the newest only in the open one.
        while all.len() < 5 * SEALED_PART_IDS + 17
            || !s.tree.contains_key(open_part_key(7)).unwrap()
        {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut ids: Vec<u64> = Vec::new();
            for _ in 0..(state >> 59) + 1 {
                // Every third order finishes a few snapshots later.
                if next.is_multiple_of(3) {
                    late.push(next);
                } else {
                    ids.push(next);
                }
                next += 1;
            }
            if snapshots % 4 == 3 {
                ids.append(&mut late);
            }
            if let Some(again) = all.iter().next_back() {
                ids.push(*again);
            }
            snapshots += 1;
            let entries = ids
                .iter()
                .map(|id| {
                    (
                        SnapshotKey::ArchivedOrder { user: 7, id: *id },
                        Some(vec![1]),
                    )
                })
                .collect();
            s.snapshot(snapshots, entries).unwrap();
            all.extend(ids);
        }
        let sealed = s.tree.scan_prefix(&by_user_key(7, 0)[..10]).count();
        let open = decode_ids(
            7,
            &s.tree.get(open_part_key(7)).unwrap().unwrap_or_default(),
        )
        .unwrap()
        .len();
        // A sealed part holds at least SEALED_PART_IDS ids.
        assert!(
            (4..=all.len() / SEALED_PART_IDS).contains(&sealed),
            "{sealed} sealed parts for {} ids in {snapshots} snapshots",
            all.len()
        );
        assert!((1..SEALED_PART_IDS).contains(&open), "{open} ids open");
        let all: Vec<u64> = all.into_iter().rev().collect();
        let befores: Vec<u64> = (0..=next + 1).step_by(7).chain([u64::MAX]).collect();
        let limits = [0, 1, 2, 20, 127, 128, 129, 300, all.len() + 1];
        assert_pages(&*s.archive(), 7, &all, &befores, &limits);
    }

    /// A reader racing snapshots that seal open parts never misses an id
    /// archived before its read began: the sealed part is written before
    /// the open part is removed.
    #[test]
    fn a_reader_racing_sealing_snapshots_sees_every_id_archived_before_it() {
        use std::sync::atomic::AtomicU64;
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SledStore::open(dir.path()).unwrap());
        let archived = Arc::new(AtomicU64::new(0));
        let per_snapshot = SEALED_PART_IDS as u64 / 2 + 1;
        let snapshots = 120u64;
        let writer = {
            let (s, archived) = (s.clone(), archived.clone());
            std::thread::spawn(move || {
                for n in 0..snapshots {
                    let ids = n * per_snapshot + 1..=(n + 1) * per_snapshot;
                    let entries = ids
                        .clone()
                        .map(|id| (SnapshotKey::ArchivedOrder { user: 7, id }, Some(vec![1])))
                        .collect();
                    s.snapshot(n + 1, entries).unwrap();
                    archived.store(*ids.end(), Ordering::SeqCst);
                }
            })
        };
        let a = s.archive();
        let mut reads = 0;
        loop {
            let done = writer.is_finished();
            let before = archived.load(Ordering::SeqCst);
            let ids = a.user_orders(7, u64::MAX, usize::MAX).unwrap();
            let mut seen: Vec<u64> = ids.into_iter().filter(|id| *id <= before).collect();
            seen.reverse();
            assert_eq!(seen, Vec::from_iter(1..=before), "read {reads}");
            reads += 1;
            if done {
                break;
            }
        }
        writer.join().unwrap();
        assert_eq!(archived.load(Ordering::SeqCst), snapshots * per_snapshot);
        assert!(reads > snapshots, "{reads} reads");
    }

    /// Every page of user `user`'s archived orders, for each cursor and
    /// limit, is the model's: `newest_first` below the cursor, `limit` of them.
    fn assert_pages(
        a: &dyn Archive,
        user: u64,
        newest_first: &[u64],
        befores: &[u64],
        limits: &[usize],
    ) {
        for &before in befores {
            for &limit in limits {
                let expected: Vec<u64> = newest_first
                    .iter()
                    .copied()
                    .filter(|id| *id < before)
                    .take(limit)
                    .collect();
                assert_eq!(
                    a.user_orders(user, before, limit).unwrap(),
                    expected,
                    "before {before}, limit {limit}"
                );
            }
        }
    }

    /// History chunks are archived in groups of [`HISTORY_GROUP_CHUNKS`]
    /// per key, across snapshots and group boundaries, a redone chunk
    /// replaced by the same bytes; a chunk a store wrote before groups
    /// (one key per chunk) still reads.
    #[test]
    fn history_chunks_are_archived_in_groups_and_old_single_chunks_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let frame = |user: u64, chunk: u64| format!("history {user}/{chunk}").into_bytes();
        let snapshots: [&[(u64, u64)]; 3] = [
            &[(5, 0), (5, 1), (5, 2), (6, 0)],
            &[(5, 2), (5, 3), (5, 4), (6, 1)],
            &[(5, 5), (5, 9), (6, 1)],
        ];
        for (i, chunks) in snapshots.iter().enumerate() {
            let entries = chunks
                .iter()
                .map(|&(user, chunk)| {
                    (
                        SnapshotKey::ArchivedHistory(user, chunk),
                        Some(frame(user, chunk)),
                    )
                })
                .collect();
            s.snapshot(i as u64 + 1, entries).unwrap();
        }
        // As a store from before groups wrote it.
        s.tree.insert(chunk_key(5, 12), frame(5, 12)).unwrap();
        let a = s.archive();
        for (user, chunk) in [
            (5, 0),
            (5, 1),
            (5, 2),
            (5, 3),
            (5, 4),
            (5, 5),
            (5, 9),
            (6, 0),
            (6, 1),
            (5, 12),
        ] {
            assert_eq!(
                a.history_chunk(user, chunk).unwrap(),
                Some(frame(user, chunk)),
                "user {user}, chunk {chunk}"
            );
        }
        for (user, chunk) in [(5, 6), (5, 8), (5, 10), (6, 2), (7, 0)] {
            assert_eq!(
                a.history_chunk(user, chunk).unwrap(),
                None,
                "user {user}, chunk {chunk}"
            );
        }
        // Chunks 0-3, 4-7 and 8-11 of user 5, 0-3 of user 6.
        assert_eq!(s.tree.scan_prefix(ARCHIVED_HISTORY_GROUP).count(), 4);
        let group = s.tree.get(group_key(5, 2)).unwrap().unwrap();
        assert_eq!(decode_group(&group).unwrap().len(), 4);
        assert!(matches!(
            decode_group(&group[..group.len() - 1]),
            Err(StorageError::Corrupt(_))
        ));
    }

    /// A store archived before the index by user existed gets it built
    /// from the archived orders at its next open.
    #[test]
    fn the_index_by_user_is_built_for_a_store_archived_without_it() {
        use crate::domain::ids::{OrderId, UserId};
        use crate::domain::money::Krw;
        use crate::domain::order::{Order, OrderStatus};
        use crate::domain::time::Timestamp;
        use crate::store::codec::{self, Kind};
        let dir = tempfile::tempdir().unwrap();
        let order = |id: u64, user: u64| Order {
            id: OrderId(id),
            user_id: UserId(user),
            status: OrderStatus::Paid,
            items: Vec::new(),
            total_amount: Krw(0),
            discount_amount: Krw(0),
            pay_amount: Krw(0),
            user_coupon_id: None,
            created_at: Timestamp(1),
            expires_at: Timestamp(2),
            paid_at: Some(Timestamp(1)),
            refunded_amount: Krw(0),
            refunds: Vec::new(),
        };
        let placed = [(1, 5), (2, 6), (3, 5), (700, 5), (701, 6)];
        {
            let s = SledStore::open(dir.path()).unwrap();
            let entries = placed
                .iter()
                .map(|(id, user)| {
                    (
                        SnapshotKey::ArchivedOrder {
                            user: *user,
                            id: *id,
                        },
                        Some(codec::encode(Kind::Order, &order(*id, *user)).unwrap()),
                    )
                })
                .collect();
            s.snapshot(1, entries).unwrap();
            // As the version before the index left it.
            for prefix in [ARCHIVED_BY_USER, OPEN_BY_USER] {
                for k in s.tree.scan_prefix(prefix).keys() {
                    s.tree.remove(k.unwrap()).unwrap();
                }
            }
            s.tree.remove(BY_USER_BUILT).unwrap();
            s.tree.flush().unwrap();
            assert_eq!(
                s.archive().user_orders(5, u64::MAX, 9).unwrap(),
                Vec::<u64>::new()
            );
        }
        let s = SledStore::open(dir.path()).unwrap();
        let a = s.archive();
        assert_eq!(a.user_orders(5, u64::MAX, 9).unwrap(), vec![700, 3, 1]);
        assert_eq!(a.user_orders(6, u64::MAX, 9).unwrap(), vec![701, 2]);
        assert_eq!(a.user_orders(5, 700, 1).unwrap(), vec![3]);
    }

    /// A crash while a snapshot's packs were being written: recovery sees
    /// the last committed snapshot only, and the next open removes the packs.
    #[test]
    fn an_unfinished_snapshot_is_invisible_and_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.snapshot(2, entries(&[(SnapshotKey::User(1), Some("u1"))]))
                .unwrap();
            // What snapshot() does before it commits, then "crashes".
            leave_unfinished(
                &s,
                2,
                &[
                    (SnapshotKey::User(1), "u1-new"),
                    (SnapshotKey::User(2), "u2"),
                ],
            );
        }
        assert_eq!(
            loaded(dir.path()),
            vec![(SnapshotKey::User(1), "u1".into())]
        );
        assert_eq!(raw(dir.path()).0, BTreeSet::from([1]));
        assert!(!raw(dir.path()).1);
        // The next snapshot reuses generation 2 cleanly.
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.snapshot(5, entries(&[(SnapshotKey::User(3), Some("u3"))]))
                .unwrap();
        }
        assert_eq!(
            loaded(dir.path()),
            vec![
                (SnapshotKey::User(1), "u1".into()),
                (SnapshotKey::User(3), "u3".into())
            ]
        );
    }

    /// A crash after a merge was committed, before the generations it
    /// folded in were removed: the base wins, and the next open tidies.
    #[test]
    fn a_merge_that_was_not_tidied_is_tidied_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.snapshot(2, entries(&[(SnapshotKey::User(1), Some("u1"))]))
                .unwrap();
            s.snapshot(
                3,
                entries(&[
                    (SnapshotKey::User(1), None),
                    (SnapshotKey::User(2), Some("u2")),
                ]),
            )
            .unwrap();
            // What merge() does up to its commit.
            let layout = s.layout();
            s.tree.insert(UNFINISHED, &3u64.to_be_bytes()).unwrap();
            let mut w = PackWriter::new(&s.tree, 3);
            s.merged(&layout, |k, v| w.push(k, Some(v))).unwrap();
            let bytes = w.finish().unwrap();
            s.commit(Layout {
                generation: 3,
                base: 3,
                base_bytes: bytes,
                newer_bytes: 0,
                ..layout
            })
            .unwrap();
        }
        assert_eq!(raw(dir.path()).0, BTreeSet::from([3]));
        assert_eq!(
            loaded(dir.path()),
            vec![(SnapshotKey::User(2), "u2".into())]
        );
    }

    /// Stores written before packs: their entries load as the oldest layer
    /// and are folded into the first merge.
    #[test]
    fn entries_from_before_packs_load_and_are_merged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            for (key, value) in [
                (SnapshotKey::User(1), "u1"),
                (SnapshotKey::User(2), "u2"),
                (SnapshotKey::Key("a".into()), "ka"),
            ] {
                s.tree.insert(encode_key(&key), value).unwrap();
            }
            s.tree.insert(META, &9u64.to_be_bytes()).unwrap();
            s.tree.flush().unwrap();
        }
        let before = vec![
            (SnapshotKey::User(1), "u1".to_string()),
            (SnapshotKey::User(2), "u2".into()),
            (SnapshotKey::Key("a".into()), "ka".into()),
        ];
        assert_eq!(loaded(dir.path()), before);
        {
            let s = SledStore::open(dir.path()).unwrap();
            assert_eq!(s.load().unwrap().snapshot_seq, 9);
            s.snapshot(
                12,
                entries(&[
                    (SnapshotKey::User(1), Some("u1-new")),
                    (SnapshotKey::Key("a".into()), None),
                ]),
            )
            .unwrap();
        }
        let after = vec![
            (SnapshotKey::User(1), "u1-new".to_string()),
            (SnapshotKey::User(2), "u2".into()),
        ];
        assert_eq!(loaded(dir.path()), after);
        assert_eq!(raw(dir.path()).2, 3, "not merged yet");
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.merge(s.layout()).unwrap();
        }
        assert_eq!(loaded(dir.path()), after);
        assert_eq!(raw(dir.path()).2, 0, "folded into the base");
    }

    /// Hundreds of snapshots of random changes, reopening now and then:
    /// what loads is always the model, and merges keep the generations few.
    #[test]
    fn random_snapshots_load_as_the_model_through_merges_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut model: BTreeMap<SnapshotKey, Vec<u8>> = BTreeMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut store = SledStore::open(dir.path()).unwrap();
        for seq in 1..=300u64 {
            let mut changes = SnapshotEntries::new();
            for _ in 0..next(40) {
                let key = match next(3) {
                    0 => SnapshotKey::User(1 + next(50)),
                    1 => SnapshotKey::Order(1 + next(200)),
                    _ => SnapshotKey::Key(format!("key-{}", next(30))),
                };
                let value = (next(5) > 0).then(|| vec![seq as u8; 1 + next(3000) as usize]);
                match &value {
                    Some(v) => model.insert(key.clone(), v.clone()),
                    None => model.remove(&key),
                };
                changes.push(key, value.as_deref());
            }
            store.snapshot(seq, changes).unwrap();
            if seq % 37 == 0 {
                drop(store);
                store = SledStore::open(dir.path()).unwrap();
            }
            let loaded = store.load().unwrap();
            assert_eq!(loaded.snapshot_seq, seq);
            let got: BTreeMap<_, _> = loaded.snapshots.into_iter().collect();
            assert_eq!(got, model, "after snapshot {seq}");
        }
        let layout = store.layout();
        assert!(layout.base > 1, "merged at least once: {layout:?}");
        assert!(layout.generation - layout.base < GENERATIONS_MAX);
    }

    /// A snapshot that failed part way is tidied by the next one in the
    /// same process, which reuses its generation cleanly: snapshots go on
    /// after a passing failure, with no restart.
    #[test]
    fn the_snapshot_after_a_failed_one_tidies_it_and_snapshots_go_on() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.snapshot(2, entries(&[(SnapshotKey::User(1), Some("u1"))]))
                .unwrap();
            // What a failure part way leaves: the mark and packs of generation 2.
            leave_unfinished(&s, 2, &[(SnapshotKey::User(9), "stale")]);
            s.needs_tidy.store(true, Ordering::Release);
            s.snapshot(3, entries(&[(SnapshotKey::User(2), Some("u2"))]))
                .unwrap();
            assert!(!s.needs_tidy.load(Ordering::Acquire));
        }
        let s = SledStore::open(dir.path()).unwrap();
        drop(s);
        assert_eq!(
            loaded(dir.path()),
            vec![
                (SnapshotKey::User(1), "u1".into()),
                (SnapshotKey::User(2), "u2".into())
            ]
        );
    }
}
