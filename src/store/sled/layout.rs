//! The committed layout: which generations of packs hold the snapshot.
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

use super::archive::{part_key, status_mask_key};
use super::packs::{pack_generation, PACK};
use super::{io, remove_chunked, word_at, SledStore};
use crate::store::legacy::store_layouts;
use crate::store::StorageError;

pub(super) const META: &[u8] = b"m";
pub(super) const UNFINISHED: &[u8] = b"x";

/// Where the committed snapshot lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) seq: u64,
    /// The newest committed generation.
    pub(super) generation: u64,
    /// Generations `base..=generation` are live; with base 0, entries from
    /// before packs (`s…`, `k…`) are the oldest layer.
    pub(super) base: u64,
    pub(super) base_bytes: u64,
    /// Bytes of the generations after the base.
    pub(super) newer_bytes: u64,
}

impl Layout {
    pub(super) fn encode(&self) -> [u8; 40] {
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

    /// Stores from before packs wrote the sequence alone
    /// ([`store_layouts::seq_before_packs`]).
    pub(super) fn decode(raw: Option<sled::IVec>) -> Result<Layout, StorageError> {
        let word = |v: &[u8], i: usize| {
            u64::from_be_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        };
        match raw.as_deref() {
            None => Ok(Layout::default()),
            Some(v) if v.len() == 40 => Ok(Layout {
                seq: word(v, 0),
                generation: word(v, 1),
                base: word(v, 2),
                base_bytes: word(v, 3),
                newer_bytes: word(v, 4),
            }),
            Some(v) => match store_layouts::seq_before_packs(v) {
                Some(seq) => Ok(Layout {
                    seq,
                    ..Layout::default()
                }),
                None => Err(StorageError::Corrupt(format!(
                    "snapshot layout of {} bytes",
                    v.len()
                ))),
            },
        }
    }
}

impl SledStore {
    /// After a snapshot or merge that did not finish: removes every pack
    /// outside the committed layout (and entries from before packs once a
    /// merge folded them in), the archive parts of an uncommitted snapshot
    /// (its mark lists their blocks), then the `x` mark.
    pub(super) fn tidy(&self, layout: &Layout) -> Result<(), StorageError> {
        if let Some(mark) = self.tree.get(UNFINISHED).map_err(io)? {
            let generation = word_at(&mark, 0)?;
            if generation > layout.generation {
                for at in (8..mark.len()).step_by(8) {
                    let block = word_at(&mark, at)?;
                    self.archive
                        .tree
                        .remove(part_key(block, generation))
                        .map_err(io)?;
                    self.archive
                        .tree
                        .remove(status_mask_key(block, generation))
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

    pub(super) fn before_packs_keys(&self) -> Result<Vec<Vec<u8>>, StorageError> {
        store_layouts::keys_before_packs(&self.tree)
    }

    pub(super) fn commit(&self, layout: Layout) -> Result<(), StorageError> {
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
}
