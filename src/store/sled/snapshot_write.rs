//! Writing a snapshot as a new generation, and merging generations into a new base.

use super::archive::{group_key, part_key, status_mask_key};
use super::layout::{Layout, UNFINISHED};
use super::packs::{pack_prefix, PackWriter};
use super::snapshot_keys::encode_key_into;
use super::{io, remove_chunked, SledStore};
use crate::domain::limits::Limits;
use crate::store::keys::KeyToPut;
use crate::store::{SnapshotEntries, SnapshotKey, StorageError, ORDER_BLOCK};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Newer generations are merged into the base once they hold more bytes
/// than it (and at least this much), or once there are this many.
pub(super) const MERGE_BYTES_MIN: u64 = 4 * 1024 * 1024;
pub(super) const GENERATIONS_MAX: u64 = 64;

/// A snapshot's entries, sorted by where they are written.
struct Sorted<'e> {
    /// Finished orders by block of ids, their frames back to back, and the
    /// mask of their statuses.
    parts: BTreeMap<u64, (Vec<u8>, u16)>,
    /// (user, order id) of each finished order. Flat lists, sorted when
    /// written, rather than a small `Vec` per user or group: a snapshot
    /// archives tens of thousands of them.
    by_user: Vec<(u64, u64)>,
    /// Whole history chunks: (group key, chunk, frame).
    chunks: Vec<([u8; 18], u64, &'e [u8])>,
    keys: Vec<KeyToPut<'e>>,
    /// The snapshot's own entries: their keys encoded one after another
    /// in `names`, each entry its key's range there and its value.
    names: Vec<u8>,
    live: Vec<(usize, usize, Option<&'e [u8]>)>,
}

impl<'e> Sorted<'e> {
    fn of(entries: &'e SnapshotEntries) -> Result<Sorted<'e>, StorageError> {
        let mut sorted = Sorted {
            parts: BTreeMap::new(),
            by_user: Vec::new(),
            chunks: Vec::new(),
            keys: Vec::new(),
            names: Vec::new(),
            live: Vec::with_capacity(entries.len()),
        };
        for (key, value) in entries.iter() {
            match (key, value) {
                (
                    SnapshotKey::ArchivedOrder {
                        user,
                        id,
                        status_bit,
                    },
                    Some(frame),
                ) => {
                    let part = sorted.parts.entry(id / ORDER_BLOCK).or_default();
                    part.0.extend_from_slice(frame);
                    part.1 |= status_bit;
                    sorted.by_user.push((*user, *id));
                }
                (SnapshotKey::ArchivedHistory(user, chunk), Some(frame)) => {
                    sorted
                        .chunks
                        .push((group_key(*user, *chunk), *chunk, frame));
                }
                (
                    SnapshotKey::IdemKey {
                        hash,
                        fingerprint,
                        at_ms,
                    },
                    Some(frame),
                ) => sorted.keys.push(KeyToPut {
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
                    let start = sorted.names.len();
                    encode_key_into(key, &mut sorted.names);
                    sorted.live.push((start, sorted.names.len(), value));
                }
            }
        }
        Ok(sorted)
    }
}

impl SledStore {
    /// [`Store::snapshot`]: writes, commits, trims, and merges when due.
    pub(super) fn write_snapshot(
        &self,
        seq: u64,
        entries: SnapshotEntries,
    ) -> Result<(), StorageError> {
        let layout = self.layout();
        let generation = layout.generation + 1;
        let mut sorted = Sorted::of(&entries)?;
        let mut mark = generation.to_be_bytes().to_vec();
        for block in sorted.parts.keys() {
            mark.extend_from_slice(&block.to_be_bytes());
        }
        self.tree.insert(UNFINISHED, mark).map_err(io)?;
        // Durable before any pack: packs never outlive a crash without the mark.
        self.flush()?;

        // 0. The archive and the idempotency keys.
        self.write_archived(generation, &mut sorted)?;

        // 1. The changed entries as a new generation; invisible until committed.
        let bytes = self.write_generation(generation, &mut sorted)?;
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

    /// The archive's parts under `generation` (invisible until it is
    /// committed), history chunks (the same bytes if redone), the
    /// idempotency keys, and the index by user.
    fn write_archived(&self, generation: u64, sorted: &mut Sorted<'_>) -> Result<(), StorageError> {
        for (block, (frames, statuses)) in std::mem::take(&mut sorted.parts) {
            self.archive
                .tree
                .insert(part_key(block, generation), frames)
                .map_err(io)?;
            self.archive
                .tree
                .insert(status_mask_key(block, generation), &statuses.to_le_bytes())
                .map_err(io)?;
        }
        // Stable: of two frames for one chunk, the one pushed last wins.
        sorted.chunks.sort_by_key(|c| c.0);
        let mut group = Vec::new();
        for run in sorted.chunks.chunk_by(|a, b| a.0 == b.0) {
            group.clear();
            group.extend(run.iter().map(|&(_, chunk, frame)| (chunk, frame)));
            self.add_history_chunks(run[0].0, &group)?;
        }
        // Idempotency keys: durable in their tables before the commit, as
        // the journal records that hold them are trimmed after it.
        let newest_key_ms = sorted.keys.iter().map(|k| k.at_ms).max();
        if let Some(newest) = newest_key_ms {
            self.keys.put(
                &sorted.keys,
                newest.saturating_sub(Limits::IDEMPOTENCY_TTL_MS),
            )?;
        }
        sorted.by_user.sort_unstable();
        let mut ids = Vec::new();
        for run in sorted.by_user.chunk_by(|a, b| a.0 == b.0) {
            ids.clear();
            ids.extend(run.iter().map(|&(_, id)| id));
            self.add_user_ids(run[0].0, &ids)?;
        }
        Ok(())
    }

    /// The snapshot's own entries as packs of `generation`, sorted (the
    /// last of two entries for one key wins); answers the bytes written.
    fn write_generation(
        &self,
        generation: u64,
        sorted: &mut Sorted<'_>,
    ) -> Result<u64, StorageError> {
        let names = &sorted.names;
        let key = |(start, end, _): &(usize, usize, Option<&[u8]>)| &names[*start..*end];
        // Stable: of two entries for one key, the one pushed last stays last.
        sorted.live.sort_by(|a, b| key(a).cmp(key(b)));
        let live = &sorted.live;
        let mut writer = PackWriter::new(&self.tree, generation);
        for (i, entry) in live.iter().enumerate() {
            if live.get(i + 1).is_some_and(|next| key(next) == key(entry)) {
                continue;
            }
            writer.push(key(entry), entry.2)?;
        }
        writer.finish()
    }

    /// Folds every live generation into a new base, commits it, and removes the rest.
    pub(super) fn merge(&self, layout: Layout) -> Result<(), StorageError> {
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
