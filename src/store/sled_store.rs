//! sled (pinned `=0.34.7`) behind [`Store`].
//!
//! Everything lives in one tree:
//! - `j` + sequence (u64, big-endian): a journal batch, its frames concatenated.
//!   A whole group-commit batch is one sled value, so sled does one insert
//!   per flush rather than one per record.
//! - `g` + key length (u16) + key + generation (u64): one version of a
//!   snapshot entry (an entity, a stored idempotency key, or the world's
//!   meta). An empty value is a deletion (a tombstone).
//! - `m`: the sequence every committed snapshot includes, and its generation.
//! - `x`: a snapshot was started and not finished (its generation).
//! - `s…`/`k…`: snapshot entries as stores before generations wrote them;
//!   read as generation 0 and removed as they are rewritten.
//!
//! **Why generations.** sled 0.34's `apply_batch` takes a process-wide
//! write lock for the whole batch, so one atomic batch of 100,000 snapshot
//! entries stalled every journal append for about a second. A snapshot is
//! therefore written as many small batches under a new generation, which
//! recovery ignores until one small batch commits it by moving `m`. Only
//! then are the versions it replaces, and the journal it covers, removed,
//! again in small batches. A crash anywhere leaves `m` at the last
//! committed snapshot: versions newer than it are ignored (and removed at
//! the next open, which `x` asks for), older ones are shadowed.
//!
//! sled flushes in the background only every 500 ms, so `append` flushes
//! before it returns: nothing is acknowledged before it is on disk.

use crate::store::{Loaded, SnapshotEntries, SnapshotKey, StorageError, Store};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    /// The generation of the last committed snapshot.
    generation: AtomicU64,
    /// Entries written before generations exist here (`s…`, `k…`).
    legacy: AtomicBool,
}

const JOURNAL: u8 = b'j';
const SNAPSHOT: u8 = b's';
const KEY: u8 = b'k';
const VERSION: u8 = b'g';
const META: &[u8] = b"m";
const UNFINISHED: &[u8] = b"x";
/// Entries per sled batch: each holds sled's write lock briefly, so
/// journal appends go on between them.
const CHUNK_ENTRIES: usize = 256;

fn io(e: sled::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

fn journal_key(seq: u64) -> [u8; 9] {
    let mut k = [JOURNAL; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn encode_key(key: &SnapshotKey) -> Vec<u8> {
    let entity = |kind: u8, id: u64| {
        let mut k = vec![SNAPSHOT, kind];
        k.extend_from_slice(&id.to_be_bytes());
        k
    };
    match key {
        SnapshotKey::User(id) => entity(b'u', *id),
        SnapshotKey::Product(id) => entity(b'p', *id),
        SnapshotKey::Campaign(id) => entity(b'c', *id),
        SnapshotKey::Order(id) => entity(b'o', *id),
        SnapshotKey::Meta => vec![SNAPSHOT, b'm'],
        SnapshotKey::Key(k) => {
            let mut out = vec![KEY];
            out.extend_from_slice(k.as_bytes());
            out
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
        [SNAPSHOT, kind, id @ ..] if id.len() == 8 => {
            let id = u64::from_be_bytes(id.try_into().expect("8 bytes"));
            match kind {
                b'u' => Ok(SnapshotKey::User(id)),
                b'p' => Ok(SnapshotKey::Product(id)),
                b'c' => Ok(SnapshotKey::Campaign(id)),
                b'o' => Ok(SnapshotKey::Order(id)),
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

/// `g` + length + key: the prefix every version of `key` starts with.
fn version_prefix(key: &[u8]) -> Result<Vec<u8>, StorageError> {
    let len = u16::try_from(key.len())
        .map_err(|_| StorageError::Io(format!("snapshot key of {} bytes", key.len())))?;
    let mut out = Vec::with_capacity(key.len() + 11);
    out.push(VERSION);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key);
    Ok(out)
}

fn version_key(prefix: &[u8], generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 8);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&generation.to_be_bytes());
    out
}

/// Splits a version key into its entry key and generation.
fn parse_version(raw: &[u8]) -> Result<(&[u8], u64), StorageError> {
    let bad = || StorageError::Corrupt(format!("snapshot version key {raw:?}"));
    let [VERSION, l0, l1, rest @ ..] = raw else {
        return Err(bad());
    };
    let len = u16::from_be_bytes([*l0, *l1]) as usize;
    if rest.len() != len + 8 {
        return Err(bad());
    }
    let (key, generation) = rest.split_at(len);
    Ok((
        key,
        u64::from_be_bytes(generation.try_into().expect("8 bytes")),
    ))
}

/// `m`: the snapshot sequence and its generation (stores before generations
/// wrote the sequence alone: generation 0).
fn parse_meta(raw: Option<sled::IVec>) -> Result<(u64, u64), StorageError> {
    let bad = || StorageError::Corrupt("snapshot sequence".into());
    match raw.as_deref() {
        None => Ok((0, 0)),
        Some(v) if v.len() == 8 => Ok((u64::from_be_bytes(v.try_into().map_err(|_| bad())?), 0)),
        Some(v) if v.len() == 16 => Ok((
            u64::from_be_bytes(v[..8].try_into().map_err(|_| bad())?),
            u64::from_be_bytes(v[8..].try_into().map_err(|_| bad())?),
        )),
        Some(_) => Err(bad()),
    }
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<SledStore, StorageError> {
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(io)?;
        let tree = db.open_tree("commerce").map_err(io)?;
        let (_, generation) = parse_meta(tree.get(META).map_err(io)?)?;
        let legacy = [[SNAPSHOT], [KEY]]
            .iter()
            .any(|p| tree.scan_prefix(p).next().is_some());
        let store = SledStore {
            db,
            tree,
            generation: AtomicU64::new(generation),
            legacy: AtomicBool::new(legacy),
        };
        if store.tree.contains_key(UNFINISHED).map_err(io)? {
            store.tidy(generation)?;
        }
        Ok(store)
    }

    /// After a snapshot that did not finish: removes every version newer
    /// than the committed generation and every version shadowed by a newer
    /// committed one, then the `x` mark.
    fn tidy(&self, committed: u64) -> Result<(), StorageError> {
        let mut doomed = Vec::new();
        // The newest committed version seen of the current key, and whether it is a tombstone.
        let mut current: Option<(Vec<u8>, Vec<u8>, bool)> = None;
        for kv in self.tree.scan_prefix([VERSION]) {
            let (raw, value) = kv.map_err(io)?;
            let (key, generation) = parse_version(&raw)?;
            if generation > committed {
                doomed.push(raw.to_vec());
                continue;
            }
            if let Some((k, newest, tombstone)) = current.take() {
                if k == key {
                    doomed.push(newest);
                } else if tombstone {
                    self.doom_tombstone(k, newest, &mut doomed);
                }
            }
            current = Some((key.to_vec(), raw.to_vec(), value.is_empty()));
        }
        if let Some((k, newest, true)) = current {
            self.doom_tombstone(k, newest, &mut doomed);
        }
        self.remove_chunked(doomed.into_iter())?;
        self.tree.remove(UNFINISHED).map_err(io)?;
        self.tree.flush().map_err(io)?;
        Ok(())
    }

    /// A committed tombstone goes after what it deletes (older versions
    /// were doomed before it; the entry from before generations too).
    fn doom_tombstone(&self, key: Vec<u8>, tombstone: Vec<u8>, doomed: &mut Vec<Vec<u8>>) {
        if self.legacy.load(Ordering::Acquire) {
            doomed.push(key);
        }
        doomed.push(tombstone);
    }

    fn remove_chunked(&self, keys: impl Iterator<Item = Vec<u8>>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in keys {
            batch.remove(key);
            n += 1;
            if n == CHUNK_ENTRIES {
                self.tree
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(io)?;
                n = 0;
            }
        }
        if n > 0 {
            self.tree.apply_batch(batch).map_err(io)?;
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn append(&self, first_seq: u64, frames: &[u8]) -> Result<(), StorageError> {
        self.tree
            .insert(journal_key(first_seq), frames)
            .map_err(io)?;
        self.tree.flush().map_err(io)?;
        Ok(())
    }

    fn snapshot(&self, seq: u64, entries: SnapshotEntries) -> Result<(), StorageError> {
        let previous = self.generation.load(Ordering::Acquire);
        let generation = previous + 1;
        self.tree
            .insert(UNFINISHED, &generation.to_be_bytes())
            .map_err(io)?;
        self.tree.flush().map_err(io)?;

        // 1. The new versions, in small batches; invisible until committed.
        let mut written = Vec::with_capacity(entries.len());
        let mut batch = sled::Batch::default();
        for (i, (key, value)) in entries.into_iter().enumerate() {
            let encoded = encode_key(&key);
            let prefix = version_prefix(&encoded)?;
            let tombstone = value.is_none();
            batch.insert(version_key(&prefix, generation), value.unwrap_or_default());
            written.push((encoded, prefix, tombstone));
            if (i + 1) % CHUNK_ENTRIES == 0 {
                self.tree
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(io)?;
            }
        }
        self.tree.apply_batch(batch).map_err(io)?;
        self.tree.flush().map_err(io)?;

        // 2. Commit: one small write.
        let mut meta = [0u8; 16];
        meta[..8].copy_from_slice(&seq.to_be_bytes());
        meta[8..].copy_from_slice(&generation.to_be_bytes());
        self.tree.insert(META, &meta).map_err(io)?;
        self.tree.flush().map_err(io)?;
        self.generation.store(generation, Ordering::Release);

        // 3. Remove what the commit shadows: older versions, tombstones,
        //    entries from before generations, and the journal it covers.
        let legacy = self.legacy.load(Ordering::Acquire);
        let mut doomed = Vec::new();
        for (encoded, prefix, tombstone) in &written {
            // Each finished snapshot leaves one version per entry (and `tidy`
            // restores that after a crash), so one look below is enough.
            if let Some((older, _)) = self
                .tree
                .get_lt(version_key(prefix, generation))
                .map_err(io)?
            {
                if older.starts_with(prefix) {
                    doomed.push(older.to_vec());
                }
            }
            if legacy {
                doomed.push(encoded.clone());
            }
            // Last, so that a crash part way never lets an older version show through.
            if *tombstone {
                doomed.push(version_key(prefix, generation));
            }
        }
        // Every journal batch whose successor starts at or below seq + 1.
        let starts: Vec<u64> = self
            .tree
            .range(journal_key(0)..=journal_key(seq.saturating_add(1)))
            .keys()
            .map(|k| k.map(|k| u64::from_be_bytes(k[1..9].try_into().expect("journal key"))))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        for pair in starts.windows(2) {
            if pair[1] <= seq + 1 {
                doomed.push(journal_key(pair[0]).to_vec());
            }
        }
        self.remove_chunked(doomed.into_iter())?;
        self.tree.remove(UNFINISHED).map_err(io)?;
        self.tree.flush().map_err(io)?;
        Ok(())
    }

    fn load(&self) -> Result<Loaded, StorageError> {
        let (snapshot_seq, committed) = parse_meta(self.tree.get(META).map_err(io)?)?;
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for prefix in [[SNAPSHOT], [KEY]] {
            for kv in self.tree.scan_prefix(prefix) {
                let (k, v) = kv.map_err(io)?;
                entries.insert(k.to_vec(), v.to_vec());
            }
        }
        // Versions of one key come in ascending generations: the last committed one wins.
        for kv in self.tree.scan_prefix([VERSION]) {
            let (raw, value) = kv.map_err(io)?;
            let (key, generation) = parse_version(&raw)?;
            if generation > committed {
                continue;
            }
            if value.is_empty() {
                entries.remove(key);
            } else {
                entries.insert(key.to_vec(), value.to_vec());
            }
        }
        let snapshots = entries
            .into_iter()
            .map(|(k, v)| Ok((decode_key(&k)?, v)))
            .collect::<Result<_, StorageError>>()?;
        let mut batches = Vec::new();
        for kv in self.tree.scan_prefix([JOURNAL]) {
            let (k, v) = kv.map_err(io)?;
            let seq = u64::from_be_bytes(
                k[1..]
                    .try_into()
                    .map_err(|_| StorageError::Corrupt(format!("journal key {k:?}")))?,
            );
            batches.push((seq, v.to_vec()));
        }
        Ok(Loaded {
            snapshot_seq,
            snapshots,
            batches,
        })
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_keys_round_trip() {
        for key in [
            SnapshotKey::User(7),
            SnapshotKey::Product(1),
            SnapshotKey::Campaign(u64::MAX),
            SnapshotKey::Order(3),
            SnapshotKey::Meta,
            SnapshotKey::Key("retry-1".into()),
        ] {
            assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
        }
    }

    #[test]
    fn appended_batches_survive_reopen_and_snapshots_trim_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.append(1, b"a").unwrap();
            s.append(3, b"b").unwrap();
            s.append(6, b"c").unwrap();
            s.snapshot(5, vec![(SnapshotKey::User(1), Some(b"u".to_vec()))])
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

    /// Every raw key of the tree, as (first byte, count).
    fn raw_prefix_counts(dir: &Path) -> BTreeMap<char, usize> {
        let s = SledStore::open(dir).unwrap();
        let mut out = BTreeMap::new();
        for kv in s.tree.iter() {
            let (k, _) = kv.unwrap();
            *out.entry(k[0] as char).or_insert(0) += 1;
        }
        out
    }

    #[test]
    fn snapshots_overwrite_and_delete_leaving_one_version_per_entry() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            // More entries than one chunk, so the write spans several batches.
            let many: Vec<_> = (1..=600)
                .map(|i| (SnapshotKey::Order(i), Some(format!("o{i}").into_bytes())))
                .collect();
            s.snapshot(3, many).unwrap();
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
        assert_eq!(
            SledStore::open(dir.path())
                .unwrap()
                .load()
                .unwrap()
                .snapshot_seq,
            7
        );
        // One version per live entry: no shadowed versions, tombstones or marks are left.
        let counts = raw_prefix_counts(dir.path());
        assert_eq!(counts.get(&'g'), Some(&600));
        assert_eq!(counts.get(&'x'), None);
    }

    /// A crash while a snapshot's versions were being written: recovery
    /// sees the last committed snapshot only, and the next open removes the
    /// unfinished versions.
    #[test]
    fn an_unfinished_snapshot_is_invisible_and_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.snapshot(2, entries(&[(SnapshotKey::User(1), Some("u1"))]))
                .unwrap();
            // What snapshot() does before it commits, then "crashes".
            s.tree.insert(UNFINISHED, &2u64.to_be_bytes()).unwrap();
            for (key, value) in [
                (SnapshotKey::User(1), "u1-new"),
                (SnapshotKey::User(2), "u2"),
            ] {
                let prefix = version_prefix(&encode_key(&key)).unwrap();
                s.tree.insert(version_key(&prefix, 2), value).unwrap();
            }
            s.tree.flush().unwrap();
        }
        assert_eq!(
            loaded(dir.path()),
            vec![(SnapshotKey::User(1), "u1".into())]
        );
        let counts = raw_prefix_counts(dir.path());
        assert_eq!(counts.get(&'g'), Some(&1));
        assert_eq!(counts.get(&'x'), None);
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

    /// A crash after the commit, before the shadowed versions were removed:
    /// the newest committed version wins, and the next open tidies.
    #[test]
    fn a_committed_snapshot_that_was_not_tidied_is_tidied_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.snapshot(
                2,
                entries(&[
                    (SnapshotKey::User(1), Some("u1")),
                    (SnapshotKey::User(2), Some("u2")),
                ]),
            )
            .unwrap();
            // Generation 2 written and committed, nothing removed yet.
            s.tree.insert(UNFINISHED, &2u64.to_be_bytes()).unwrap();
            let u1 = version_prefix(&encode_key(&SnapshotKey::User(1))).unwrap();
            let u2 = version_prefix(&encode_key(&SnapshotKey::User(2))).unwrap();
            s.tree.insert(version_key(&u1, 2), "u1-new").unwrap();
            s.tree.insert(version_key(&u2, 2), "").unwrap();
            let mut meta = [0u8; 16];
            meta[..8].copy_from_slice(&4u64.to_be_bytes());
            meta[8..].copy_from_slice(&2u64.to_be_bytes());
            s.tree.insert(META, &meta).unwrap();
            s.tree.flush().unwrap();
        }
        assert_eq!(
            loaded(dir.path()),
            vec![(SnapshotKey::User(1), "u1-new".into())]
        );
        assert_eq!(raw_prefix_counts(dir.path()).get(&'g'), Some(&1));
    }

    /// Stores written before generations: their entries load as
    /// generation 0 and go as they are rewritten or deleted.
    #[test]
    fn entries_from_before_generations_load_and_are_replaced() {
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
        assert_eq!(
            loaded(dir.path()),
            vec![
                (SnapshotKey::User(1), "u1".into()),
                (SnapshotKey::User(2), "u2".into()),
                (SnapshotKey::Key("a".into()), "ka".into()),
            ]
        );
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
        assert_eq!(
            loaded(dir.path()),
            vec![
                (SnapshotKey::User(1), "u1-new".into()),
                (SnapshotKey::User(2), "u2".into()),
            ]
        );
        let counts = raw_prefix_counts(dir.path());
        assert_eq!(counts.get(&'s'), Some(&1)); // user 2, never rewritten
        assert_eq!(counts.get(&'k'), None);
        assert_eq!(counts.get(&'g'), Some(&1));
    }
}
