//! The outbox ([`crate::store::outbox`]) in sled: a tree of its own,
//! `outbox`, in the main database (`<data dir>/sled`), the one the snapshot
//! thread flushes before it commits a snapshot. That flush is what makes
//! the journal writer's blocks durable before the journal records they
//! came from can be trimmed; the journal's own database would not do.
//!
//! Keys:
//! - `b` + first sequence (u64, big-endian): a block of events of journal records.
//! - `r` + id (u64): a block of requeued events (redriven, or taken over).
//! - `d` + id (u64): one dead letter.
//! - `w`: the watermark and the `added` total.
//! - `c`: the `delivered` and `dead_lettered` totals.
//! - `q`: the `requeued` and `redriven` totals.
//! - `f`: the file sink's length after the last settled write.
//! - `l`: how far an older data dir's pending orders were taken over.
//!
//! Fixed-layout values carry a version byte ([`words`]); blocks and dead
//! letters are codec frames. Every change is one sled batch (atomic across
//! a crash); only a settlement that asks for it is flushed, with the blob
//! files and log growth sled leaves unsynced ([`crate::store::sled_sync`]).

use crate::store::outbox::{words, OutboxState, OutboxStore, Requeue, Settlement, Space};
use crate::store::sled_sync::{BlobSync, LogGrowth};
use crate::store::StorageError;
use std::sync::Arc;

const JOURNAL_BLOCK: u8 = b'b';
const REQUEUED_BLOCK: u8 = b'r';
const DEAD: u8 = b'd';
const WATERMARK: &[u8] = b"w";
const SETTLED: &[u8] = b"c";
const REQUEUED: &[u8] = b"q";
const FILE: &[u8] = b"f";
const LEGACY: &[u8] = b"l";

#[derive(Clone)]
pub struct SledOutbox {
    tree: sled::Tree,
    blobs: Arc<BlobSync>,
    log: Arc<LogGrowth>,
}

fn io(e: sled::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

fn key(prefix: u8, id: u64) -> [u8; 9] {
    let mut k = [prefix; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn id_of(raw: &[u8]) -> Result<u64, StorageError> {
    raw.get(1..9)
        .filter(|_| raw.len() == 9)
        .map(|w| u64::from_be_bytes(w.try_into().expect("8 bytes")))
        .ok_or_else(|| StorageError::Corrupt(format!("outbox key {raw:?}")))
}

fn prefix(space: Space) -> u8 {
    match space {
        Space::Journal => JOURNAL_BLOCK,
        Space::Requeued => REQUEUED_BLOCK,
    }
}

impl SledOutbox {
    /// The outbox tree of `db`, whose flushes sync `blobs` and `log`.
    pub fn open(
        db: &sled::Db,
        blobs: Arc<BlobSync>,
        log: Arc<LogGrowth>,
    ) -> Result<SledOutbox, StorageError> {
        Ok(SledOutbox {
            tree: db.open_tree("outbox").map_err(io)?,
            blobs,
            log,
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.blobs.sync_new()?;
        self.tree.flush().map_err(io)?;
        self.log.sync_if_grown()?;
        Ok(())
    }

    fn read<const N: usize>(&self, k: &[u8], what: &str) -> Result<Option<[u64; N]>, StorageError> {
        self.tree
            .get(k)
            .map_err(io)?
            .map(|raw| words::decode::<N>(what, &raw))
            .transpose()
    }
}

impl OutboxStore for SledOutbox {
    fn state(&self) -> Result<OutboxState, StorageError> {
        let [watermark, added] = self.read(WATERMARK, "watermark")?.unwrap_or_default();
        let [delivered, dead_lettered] = self.read(SETTLED, "totals")?.unwrap_or_default();
        let [requeued, redriven] = self.read(REQUEUED, "requeue totals")?.unwrap_or_default();
        Ok(OutboxState {
            watermark,
            added,
            requeued,
            redriven,
            delivered,
            dead_lettered,
            file_len: self.read::<1>(FILE, "file length")?.map(|[l]| l),
            legacy_through: self.read::<1>(LEGACY, "takeover")?.map(|[l]| l),
        })
    }

    fn add(&self, blocks: &[(u64, &[u8])], watermark: u64, added: u64) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (id, block) in blocks {
            batch.insert(&key(JOURNAL_BLOCK, *id)[..], *block);
        }
        batch.insert(WATERMARK, words::encode(&[watermark, added]));
        self.tree.apply_batch(batch).map_err(io)
    }

    fn block_from(&self, space: Space, from: u64) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let p = prefix(space);
        match self.tree.range(key(p, from)..=key(p, u64::MAX)).next() {
            Some(kv) => {
                let (k, v) = kv.map_err(io)?;
                Ok(Some((id_of(&k)?, v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn settle(&self, s: &Settlement) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for b in &s.remove {
            batch.remove(&key(prefix(b.space), b.id)[..]);
        }
        for (id, letter) in &s.dead {
            batch.insert(&key(DEAD, *id)[..], letter.as_slice());
        }
        batch.insert(SETTLED, words::encode(&[s.delivered, s.dead_lettered]));
        if let Some(len) = s.file_len {
            batch.insert(FILE, words::encode(&[len]));
        }
        self.tree.apply_batch(batch).map_err(io)?;
        if s.flush {
            self.flush()?;
        }
        Ok(())
    }

    fn dead_letters(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        for kv in self
            .tree
            .range(key(DEAD, from)..=key(DEAD, u64::MAX))
            .take(limit)
        {
            let (k, v) = kv.map_err(io)?;
            out.push((id_of(&k)?, v.to_vec()));
        }
        Ok(out)
    }

    fn requeue(&self, r: &Requeue) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert(&key(REQUEUED_BLOCK, r.id)[..], r.block.as_slice());
        for id in &r.remove_dead {
            batch.remove(&key(DEAD, *id)[..]);
        }
        batch.insert(REQUEUED, words::encode(&[r.requeued, r.redriven]));
        if let Some(through) = r.legacy_through {
            batch.insert(LEGACY, words::encode(&[through]));
        }
        self.tree.apply_batch(batch).map_err(io)?;
        // A redrive is answered once durable; it is rare and small.
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::outbox::BlockKey;
    use crate::store::{SledStore, Store};

    fn journal(id: u64) -> BlockKey {
        BlockKey {
            space: Space::Journal,
            id,
        }
    }

    #[test]
    fn blocks_counters_and_dead_letters_survive_a_reopen_each_change_whole() {
        // proves every key and counter round trip through sled, in key order
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            let o = s.outbox();
            assert_eq!(o.state().unwrap(), OutboxState::default());
            o.add(&[(5, b"five"), (9, b"nine")], 12, 2).unwrap();
            o.add(&[(13, b"thirteen")], 14, 3).unwrap();
            o.settle(&Settlement {
                remove: vec![journal(9)],
                dead: vec![(0, b"dead".to_vec())],
                delivered: 0,
                dead_lettered: 1,
                file_len: Some(77),
                flush: true,
            })
            .unwrap();
            o.requeue(&Requeue {
                id: 0,
                block: b"again".to_vec(),
                requeued: 1,
                redriven: 1,
                remove_dead: vec![0],
                legacy_through: Some(40),
            })
            .unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let o = s.outbox();
        let state = o.state().unwrap();
        assert_eq!(
            state,
            OutboxState {
                watermark: 14,
                added: 3,
                requeued: 1,
                redriven: 1,
                delivered: 0,
                dead_lettered: 1,
                file_len: Some(77),
                legacy_through: Some(40),
            }
        );
        assert_eq!(state.pending(), 3);
        assert_eq!(state.dead_letters(), 0);
        assert_eq!(
            o.block_from(Space::Journal, 0).unwrap(),
            Some((5, b"five".to_vec()))
        );
        assert_eq!(
            o.block_from(Space::Journal, 6).unwrap(),
            Some((13, b"thirteen".to_vec())),
            "the settled block is gone"
        );
        assert_eq!(o.block_from(Space::Journal, 14).unwrap(), None);
        assert_eq!(
            o.block_from(Space::Requeued, 0).unwrap(),
            Some((0, b"again".to_vec()))
        );
        assert!(o.dead_letters(0, 10).unwrap().is_empty(), "redriven");
    }

    #[test]
    fn dead_letters_read_from_an_id_at_most_a_limit() {
        // proves the page bounds of the dead letters' range read
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let o = s.outbox();
        o.settle(&Settlement {
            dead: (0..5).map(|i| (i, vec![i as u8])).collect(),
            dead_lettered: 5,
            ..Settlement::default()
        })
        .unwrap();
        let ids = |from, limit| -> Vec<u64> {
            o.dead_letters(from, limit)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        assert_eq!(ids(0, 2), vec![0, 1]);
        assert_eq!(ids(2, 10), vec![2, 3, 4]);
        assert!(ids(5, 10).is_empty());
    }

    #[test]
    fn a_value_of_another_layout_version_is_refused() {
        // proves the version byte of the counters is checked on read
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let o = SledOutbox::open(
            &db,
            Arc::new(BlobSync::new(dir.path())),
            Arc::new(LogGrowth::open(dir.path()).unwrap()),
        )
        .unwrap();
        o.tree.insert(WATERMARK, &[2u8; 17][..]).unwrap();
        assert!(matches!(o.state(), Err(StorageError::Corrupt(_))));
    }

    #[test]
    fn the_journal_after_a_sequence_starts_with_the_batch_holding_the_next_record() {
        // proves journal_after for sled and memory: the straddling batch and every later one
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        let memory = crate::store::MemoryStore::new();
        for store in [&sled as &dyn Store, &memory] {
            for first in [1, 4, 9] {
                store.append(first, &[first as u8]).unwrap();
            }
            let starts = |seq| -> Vec<u64> {
                store
                    .journal_after(seq)
                    .unwrap()
                    .into_iter()
                    .map(|(first, _)| first)
                    .collect()
            };
            assert_eq!(starts(0), vec![1, 4, 9]);
            assert_eq!(starts(2), vec![1, 4, 9], "batch 1 holds record 3");
            assert_eq!(starts(3), vec![4, 9]);
            assert_eq!(starts(5), vec![4, 9]);
            assert_eq!(starts(8), vec![9]);
            assert_eq!(starts(20), vec![9], "the last batch may hold more");
        }
    }
}
