//! sled (pinned `=0.34.7`) behind [`Store`].
//!
//! Everything lives in one tree so that one `apply_batch` is atomic across
//! journal, snapshots and trimming (sled 0.34's batches are per tree):
//! - `j` + sequence (u64, big-endian): a journal batch, its frames concatenated.
//!   A whole group-commit batch is one sled value, so sled does one insert
//!   per flush rather than one per record.
//! - `s` + kind + id: an entity snapshot frame; `k` + key: a stored idempotency key.
//! - `m`: the sequence every snapshot includes.
//!
//! sled flushes in the background only every 500 ms, so `append` flushes
//! before it returns: nothing is acknowledged before it is on disk.

use crate::store::{Loaded, SnapshotEntries, SnapshotKey, StorageError, Store};
use std::path::Path;

pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
}

const JOURNAL: u8 = b'j';
const SNAPSHOT: u8 = b's';
const KEY: u8 = b'k';
const META: &[u8] = b"m";

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

impl SledStore {
    pub fn open(dir: &Path) -> Result<SledStore, StorageError> {
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(io)?;
        let tree = db.open_tree("commerce").map_err(io)?;
        Ok(SledStore { db, tree })
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
        let mut batch = sled::Batch::default();
        for (key, value) in entries {
            match value {
                Some(v) => batch.insert(encode_key(&key), v),
                None => batch.remove(encode_key(&key)),
            }
        }
        batch.insert(META, &seq.to_be_bytes());
        // Trim every journal batch whose successor starts at or below seq + 1.
        let starts: Vec<u64> = self
            .tree
            .range(journal_key(0)..=journal_key(seq.saturating_add(1)))
            .keys()
            .map(|k| k.map(|k| u64::from_be_bytes(k[1..9].try_into().expect("journal key"))))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        for pair in starts.windows(2) {
            if pair[1] <= seq + 1 {
                batch.remove(&journal_key(pair[0]));
            }
        }
        self.tree.apply_batch(batch).map_err(io)?;
        self.tree.flush().map_err(io)?;
        Ok(())
    }

    fn load(&self) -> Result<Loaded, StorageError> {
        let snapshot_seq = match self.tree.get(META).map_err(io)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("snapshot sequence".into()))?,
            ),
            None => 0,
        };
        let mut snapshots = Vec::new();
        for prefix in [[SNAPSHOT], [KEY]] {
            for kv in self.tree.scan_prefix(prefix) {
                let (k, v) = kv.map_err(io)?;
                snapshots.push((decode_key(&k)?, v.to_vec()));
            }
        }
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
}
