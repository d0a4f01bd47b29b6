//! Idempotency keys older than the last snapshot, on disk: kept 24 hours at
//! any rate, with nothing per key in memory, expired in time order.
//!
//! Keys arrive in no order of their own (clients make them up), so a
//! B-tree pays for every one with a random insert: sled took about 67 µs
//! and 3 KiB of memory per random 16-byte key (2 million keys, 16 MiB
//! cache). Here each key is a fixed-size slot in an open-addressing hash
//! table file, found by its [`KeyHash`]; its stored answer is a frame in an
//! append-only log beside it. Keys go into the table of the current
//! *generation*; a generation is closed when it is full or old enough, and
//! a new one, sized from the last, takes the next keys. A lookup probes each
//! live generation, newest first (a few at most); expiry removes whole
//! generations whose newest key is past the time to keep: in time order,
//! without reading a slot.
//!
//! Files, under `<data dir>/keys/`: `<n>.tbl` (a 64-byte header, then
//! slots) and `<n>.log` (frames of [`StoredKey`]) for generation `n`.
//! A slot: key hash (16, LE) | fingerprint (8) | at, ms (8) | log offset
//! (8) | frame length (4) | crc32 of the 44 bytes before (4). A slot whose
//! checksum does not hold is empty: a write torn by a crash leaves one, and
//! its key is still in the journal (written again by the next snapshot).
//!
//! Only the snapshot thread writes ([`KeyTables::put`], durable when it
//! returns); readers on any thread probe with `pread`. A key the snapshot
//! is writing is still in memory ([`crate::engine::idempotency`]), which
//! lets go of it only once that snapshot is written: no reader depends on
//! a slot being written.

use crate::domain::key_hash::KeyHash;
use crate::store::StorageError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

const MAGIC: &[u8; 4] = b"CEKT";
const TABLE_VERSION: u32 = 1;
const HEADER_LEN: u64 = 64;
const SLOT_LEN: usize = 48;
/// Slots a lookup or an insert probes past the home slot at most; past it,
/// an insert goes to a new generation.
const PROBE_MAX: u64 = 64;
/// Slots read per `pread` while probing.
const PROBE_READ_SLOTS: u64 = 8;
/// The smallest table: 2^20 slots, 48 MiB of sparse file.
const SLOTS_MIN: u64 = 1 << 20;
/// A generation takes keys until it is this full...
const LOAD_MAX_PERCENT: u64 = 70;
/// ...or this old (ms), so that expiry frees disk in steps of this size.
pub const GENERATION_SPAN_MS: u64 = 4 * 60 * 60 * 1000;

/// A key as a lookup finds it: what its request asked, when, and its
/// [`StoredKey`] as a [`Kind::Key`] frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundKey {
    pub fingerprint: u64,
    pub at_ms: u64,
    pub frame: Vec<u8>,
}

/// A key to write: its hash, what the request asked, when, and its
/// [`StoredKey`] as a [`Kind::Key`] frame.
#[derive(Clone, Copy, Debug)]
pub struct KeyToPut<'a> {
    pub hash: KeyHash,
    pub fingerprint: u64,
    pub at_ms: u64,
    pub frame: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    hash: KeyHash,
    fingerprint: u64,
    at_ms: u64,
    offset: u64,
    len: u32,
}

impl Slot {
    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..16].copy_from_slice(&self.hash.to_le_bytes());
        b[16..24].copy_from_slice(&self.fingerprint.to_le_bytes());
        b[24..32].copy_from_slice(&self.at_ms.to_le_bytes());
        b[32..40].copy_from_slice(&self.offset.to_le_bytes());
        b[40..44].copy_from_slice(&self.len.to_le_bytes());
        let crc = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The slot's key, or `None` for an empty (or torn) slot.
    fn decode(b: &[u8]) -> Option<Slot> {
        let word =
            |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(b[44..48].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&b[..44]) {
            return None;
        }
        Some(Slot {
            hash: u128::from_le_bytes(b[0..16].try_into().expect("16 bytes")),
            fingerprint: word(16..24),
            at_ms: word(24..32),
            offset: word(32..40),
            len: u32::from_le_bytes(b[40..44].try_into().expect("4 bytes")),
        })
    }
}

/// One generation: its table, its log, and what its header says.
struct Generation {
    number: u64,
    table: File,
    log: File,
    slots: u64,
    /// Keys written (the header's count; a crash may lose the last put's).
    count: u64,
    /// The oldest and newest key written, ms.
    first_at_ms: u64,
    newest_at_ms: u64,
    log_len: u64,
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::Io(format!("idempotency keys: {e}"))
}

fn corrupt(what: String) -> StorageError {
    StorageError::Corrupt(format!("idempotency keys: {what}"))
}

impl Generation {
    fn paths(dir: &Path, number: u64) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("{number:020}.tbl")),
            dir.join(format!("{number:020}.log")),
        )
    }

    fn create(dir: &Path, number: u64, slots: u64) -> Result<Generation, StorageError> {
        let (tbl, log) = Generation::paths(dir, number);
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
                .map_err(io)
        };
        let table = open(&tbl)?;
        // Sparse: a slot takes disk only once written.
        table
            .set_len(HEADER_LEN + slots * SLOT_LEN as u64)
            .map_err(io)?;
        let g = Generation {
            number,
            table,
            log: open(&log)?,
            slots,
            count: 0,
            first_at_ms: 0,
            newest_at_ms: 0,
            log_len: 0,
        };
        g.write_header()?;
        g.table.sync_all().map_err(io)?;
        sync_dir(dir)?;
        Ok(g)
    }

    fn open(dir: &Path, number: u64) -> Result<Generation, StorageError> {
        let (tbl, log) = Generation::paths(dir, number);
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .map_err(io)
        };
        let table = open(&tbl)?;
        let log = open(&log)?;
        let mut h = [0u8; HEADER_LEN as usize];
        table.read_exact_at(&mut h, 0).map_err(io)?;
        let word = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        if &h[0..4] != MAGIC {
            return Err(corrupt(format!("{} is not a key table", tbl.display())));
        }
        let version = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        if version != TABLE_VERSION {
            return Err(corrupt(format!(
                "{} has table version {version}; this build reads {TABLE_VERSION}",
                tbl.display()
            )));
        }
        let crc = u32::from_le_bytes(h[40..44].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&h[..40]) {
            return Err(corrupt(format!("{} header checksum", tbl.display())));
        }
        let log_len = log.metadata().map_err(io)?.len();
        Ok(Generation {
            number,
            table,
            log,
            slots: word(8),
            count: word(16),
            first_at_ms: word(24),
            newest_at_ms: word(32),
            log_len,
        })
    }

    fn write_header(&self) -> Result<(), StorageError> {
        let mut h = [0u8; HEADER_LEN as usize];
        h[0..4].copy_from_slice(MAGIC);
        h[4..8].copy_from_slice(&TABLE_VERSION.to_le_bytes());
        for (i, v) in [self.slots, self.count, self.first_at_ms, self.newest_at_ms]
            .iter()
            .enumerate()
        {
            h[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&h[..40]);
        h[40..44].copy_from_slice(&crc.to_le_bytes());
        self.table.write_all_at(&h, 0).map_err(io)
    }

    fn home(&self, hash: KeyHash) -> u64 {
        (hash as u64) % self.slots
    }

    fn slot_offset(&self, index: u64) -> u64 {
        HEADER_LEN + (index % self.slots) * SLOT_LEN as u64
    }

    /// Probes for `hash`: `Ok(Found)` with its slot, or the first free slot
    /// on its path, or neither within [`PROBE_MAX`].
    fn probe(&self, hash: KeyHash) -> Result<Probe, StorageError> {
        let home = self.home(hash);
        let mut buf = [0u8; SLOT_LEN * PROBE_READ_SLOTS as usize];
        let mut step = 0;
        while step <= PROBE_MAX {
            let index = home + step;
            // A read never wraps past the end of the table.
            let in_row = (self.slots - index % self.slots).min(PROBE_READ_SLOTS);
            let bytes = &mut buf[..SLOT_LEN * in_row as usize];
            self.table
                .read_exact_at(bytes, self.slot_offset(index))
                .map_err(io)?;
            for (i, raw) in bytes.chunks_exact(SLOT_LEN).enumerate() {
                match Slot::decode(raw) {
                    None => return Ok(Probe::Free(index + i as u64)),
                    Some(slot) if slot.hash == hash => {
                        return Ok(Probe::Found(index + i as u64, slot))
                    }
                    Some(_) => {}
                }
            }
            step += in_row;
        }
        Ok(Probe::Full)
    }

    fn is_full(&self, adding: u64) -> bool {
        (self.count + adding) * 100 > self.slots * LOAD_MAX_PERCENT
    }
}

enum Probe {
    Found(u64, Slot),
    Free(u64),
    Full,
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// The generations of a data dir's keys.
pub struct KeyTables {
    dir: PathBuf,
    /// Oldest first; the last takes new keys.
    generations: RwLock<Vec<Generation>>,
    /// The fewest slots a new generation has.
    slots_min: u64,
}

impl KeyTables {
    /// Opens (or creates) `<dir>`; a table of an unknown version is refused.
    pub fn open(dir: &Path) -> Result<KeyTables, StorageError> {
        KeyTables::open_with_slots_min(dir, SLOTS_MIN)
    }

    /// [`open`](KeyTables::open), new generations at least `slots_min` slots.
    pub fn open_with_slots_min(dir: &Path, slots_min: u64) -> Result<KeyTables, StorageError> {
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".tbl")
                .and_then(|n| n.parse::<u64>().ok())
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let generations = numbers
            .into_iter()
            .map(|n| Generation::open(dir, n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyTables {
            dir: dir.to_path_buf(),
            generations: RwLock::new(generations),
            slots_min: slots_min.max(PROBE_READ_SLOTS),
        })
    }

    /// The stored key of `hash`, newest generation first.
    pub fn get(&self, hash: KeyHash) -> Result<Option<FoundKey>, StorageError> {
        let generations = self.generations.read().unwrap_or_else(|e| e.into_inner());
        for g in generations.iter().rev() {
            if let Probe::Found(_, slot) = g.probe(hash)? {
                let mut frame = vec![0u8; slot.len as usize];
                g.log.read_exact_at(&mut frame, slot.offset).map_err(io)?;
                return Ok(Some(FoundKey {
                    fingerprint: slot.fingerprint,
                    at_ms: slot.at_ms,
                    frame,
                }));
            }
        }
        Ok(None)
    }

    /// Writes `keys` and makes them durable; then removes every generation
    /// whose newest key is older than `expire_before_ms`.
    pub fn put(&self, keys: &[KeyToPut<'_>], expire_before_ms: u64) -> Result<(), StorageError> {
        let mut generations = self.generations.write().unwrap_or_else(|e| e.into_inner());
        let mut rest = keys;
        let mut stuck = false;
        while !rest.is_empty() {
            let now_ms = rest.iter().map(|k| k.at_ms).max().unwrap_or(0);
            let need_new = stuck
                || generations.last().is_none_or(|g| {
                    g.is_full(rest.len() as u64)
                        || now_ms.saturating_sub(g.first_at_ms) > GENERATION_SPAN_MS && g.count > 0
                });
            if need_new {
                let last_count = generations.last().map_or(0, |g| g.count);
                let wanted = (last_count.max(rest.len() as u64) * 100 / LOAD_MAX_PERCENT) * 2;
                let slots = wanted.max(self.slots_min).next_power_of_two();
                let number = generations.last().map_or(1, |g| g.number + 1);
                generations.push(Generation::create(&self.dir, number, slots)?);
            }
            let g = generations.last_mut().expect("a generation takes the keys");
            let written = write_keys(g, rest)?;
            // A key that found no slot within its probe window goes to a new generation.
            stuck = written < rest.len();
            rest = &rest[written..];
        }
        let current = generations.last().map(|g| g.number);
        let mut expired = Vec::new();
        generations.retain(|g| {
            let keep = Some(g.number) == current || g.newest_at_ms >= expire_before_ms;
            if !keep {
                expired.push(g.number);
            }
            keep
        });
        drop(generations);
        if !expired.is_empty() {
            // Off the snapshot thread: unlinking a table whose slots are
            // scattered over its file can take seconds (a filesystem that
            // discards freed blocks does so block by block). A crash before
            // it ends leaves files that the next expiry removes again.
            let dir = self.dir.clone();
            std::thread::spawn(move || {
                for number in expired {
                    let (tbl, log) = Generation::paths(&dir, number);
                    for path in [tbl, log] {
                        if let Err(e) = std::fs::remove_file(&path) {
                            tracing::warn!(path = %path.display(), error = %e, "an expired key table was not removed");
                        }
                    }
                }
            });
        }
        Ok(())
    }

    /// Generations on disk, and the keys they hold.
    pub fn stats(&self) -> (usize, u64) {
        let generations = self.generations.read().unwrap_or_else(|e| e.into_inner());
        (generations.len(), generations.iter().map(|g| g.count).sum())
    }
}

/// Writes keys into `g` until one does not fit its probe window; makes
/// what it wrote durable; answers how many it wrote.
fn write_keys(g: &mut Generation, keys: &[KeyToPut<'_>]) -> Result<usize, StorageError> {
    let mut log = Vec::new();
    let mut written = 0;
    for key in keys {
        if g.is_full(1) {
            break;
        }
        let index = match g.probe(key.hash)? {
            Probe::Found(index, _) | Probe::Free(index) => index,
            Probe::Full => break,
        };
        let len = u32::try_from(key.frame.len())
            .map_err(|_| corrupt(format!("a stored answer of {} bytes", key.frame.len())))?;
        let slot = Slot {
            hash: key.hash,
            fingerprint: key.fingerprint,
            at_ms: key.at_ms,
            offset: g.log_len + log.len() as u64,
            len,
        };
        log.extend_from_slice(key.frame);
        // Written at once: the next key's probe sees it.
        g.table
            .write_all_at(&slot.encode(), g.slot_offset(index))
            .map_err(io)?;
        if g.first_at_ms == 0 {
            g.first_at_ms = key.at_ms;
        }
        g.newest_at_ms = g.newest_at_ms.max(key.at_ms);
        g.count += 1;
        written += 1;
    }
    // The log first, then the slots that point into it, then the header.
    g.log.write_all_at(&log, g.log_len).map_err(io)?;
    g.log.sync_data().map_err(io)?;
    g.log_len += log.len() as u64;
    g.write_header()?;
    g.table.sync_data().map_err(io)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::key_hash::key_hash;
    use crate::domain::rejection::Rejection;
    use crate::domain::time::Timestamp;
    use crate::domain::views::Reply;
    use crate::domain::world::StoredKey;
    use crate::store::codec::{self, Kind};

    fn found(t: &KeyTables, n: u64) -> Option<StoredKey> {
        t.get(key_hash(&format!("key-{n}")))
            .unwrap()
            .map(|f| codec::decode(Kind::Key, &f.frame).unwrap())
    }

    fn stored(n: u64, at: u64) -> StoredKey {
        StoredKey {
            fingerprint: n,
            reply: Reply::Rejected(Rejection::InvalidRequest(format!("reply {n}"))),
            at: Timestamp(at),
        }
    }

    /// Keys `key-<n>` for `range`, stored at `at`, as hashes and frames.
    fn keys(range: std::ops::Range<u64>, at: u64) -> Vec<(KeyHash, StoredKey, Vec<u8>)> {
        range
            .map(|n| {
                let k = stored(n, at);
                let frame = codec::encode(Kind::Key, &k).unwrap();
                (key_hash(&format!("key-{n}")), k, frame)
            })
            .collect()
    }

    fn put(t: &KeyTables, keys: &[(KeyHash, StoredKey, Vec<u8>)], expire_before_ms: u64) {
        let puts: Vec<KeyToPut<'_>> = keys
            .iter()
            .map(|(hash, k, frame)| KeyToPut {
                hash: *hash,
                fingerprint: k.fingerprint,
                at_ms: k.at.0,
                frame,
            })
            .collect();
        t.put(&puts, expire_before_ms).unwrap();
    }

    #[test]
    fn slots_round_trip_and_a_torn_one_reads_as_empty() {
        let s = Slot {
            hash: u128::MAX - 5,
            fingerprint: 7,
            at_ms: 9,
            offset: 11,
            len: 13,
        };
        let mut b = s.encode();
        assert_eq!(Slot::decode(&b), Some(s));
        b[20] ^= 1;
        assert_eq!(Slot::decode(&b), None);
        assert_eq!(Slot::decode(&[0u8; SLOT_LEN]), None);
    }

    /// Keys put are found after a reopen; absent ones are not; a key put
    /// again (a snapshot redone after a crash) is found once, the same.
    #[test]
    fn keys_are_found_after_a_reopen_and_absent_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        {
            let t = KeyTables::open_with_slots_min(&path, 16_384).unwrap();
            put(&t, &keys(0..5_000, 1_000), 0);
            put(&t, &keys(4_000..6_000, 1_000), 0);
        }
        let t = KeyTables::open_with_slots_min(&path, 16_384).unwrap();
        for n in [0, 1, 3_999, 4_000, 5_999] {
            assert_eq!(found(&t, n), Some(stored(n, 1_000)), "key {n}");
        }
        assert_eq!(t.get(key_hash("key-6000")).unwrap(), None);
        assert_eq!(t.stats().0, 1);
    }

    /// A generation full to its load limit hands the next keys to a new,
    /// larger one; lookups find keys in every generation.
    #[test]
    fn a_full_generation_hands_over_to_a_larger_one() {
        let dir = tempfile::tempdir().unwrap();
        let t = KeyTables::open_with_slots_min(dir.path(), 1024).unwrap();
        let first = (1024 * LOAD_MAX_PERCENT / 100) - 10;
        put(&t, &keys(0..10, 5), 0);
        put(&t, &keys(10..first, 5), 0);
        assert_eq!(t.stats(), (1, first));
        put(&t, &keys(first..first + 1_000, 6), 0);
        let (generations, count) = t.stats();
        assert_eq!((generations, count), (2, first + 1_000));
        let sizes: Vec<u64> = t
            .generations
            .read()
            .unwrap()
            .iter()
            .map(|g| g.slots)
            .collect();
        assert!(sizes[1] > sizes[0], "{sizes:?}");
        for n in [0, first - 1, first, first + 999] {
            assert!(
                t.get(key_hash(&format!("key-{n}"))).unwrap().is_some(),
                "key {n}"
            );
        }
    }

    /// Generations are removed whole once their newest key is older than
    /// the horizon, oldest first; the current one stays.
    #[test]
    fn expiry_removes_whole_generations_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let t = KeyTables::open_with_slots_min(dir.path(), 1024).unwrap();
        let span = GENERATION_SPAN_MS;
        put(&t, &keys(0..10, 1), 0);
        put(&t, &keys(10..20, 2 * span), 0);
        put(&t, &keys(20..30, 4 * span), 0);
        assert_eq!(t.stats().0, 3);
        put(&t, &keys(30..31, 4 * span + 1), 2 * span);
        assert_eq!(t.stats().0, 2, "the first generation expired");
        assert_eq!(t.get(key_hash("key-5")).unwrap(), None);
        assert!(t.get(key_hash("key-15")).unwrap().is_some());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_dir(dir.path()).unwrap().count() != 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "its files are removed"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        put(&t, &keys(31..32, 4 * span + 2), u64::MAX);
        assert_eq!(t.stats().0, 1, "the current generation stays");
    }

    #[test]
    fn a_table_of_another_version_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let t = KeyTables::open_with_slots_min(dir.path(), 1024).unwrap();
            put(&t, &keys(0..1, 1), 0);
        }
        let (tbl, _) = Generation::paths(dir.path(), 1);
        let f = OpenOptions::new().write(true).open(&tbl).unwrap();
        f.write_all_at(&9u32.to_le_bytes(), 4).unwrap();
        let e = KeyTables::open(dir.path()).err().expect("refused");
        assert!(e.to_string().contains("table version 9"), "{e}");
    }
}
