//! The archive's entries in sled, read from any thread ([`Archive`]).
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
//! - `as` + block (u64) + generation (u64): the statuses (a mask of
//!   `archive_statuses::status_bit`s, u16 little-endian) of the orders of
//!   the `ao` part under the same key, written with it. Lists by status
//!   read these at a start instead of every block. Read like the parts:
//!   committed generations only; an unfinished snapshot's are removed
//!   with its parts.
//! - `am`: the `as` masks are complete. A store archived by a version
//!   without them gets them built from `ao` at its next open.

use super::journal::{journal_key, journal_seq};
use super::layout::Layout;
use super::{io, word_at, SledStore};
use crate::store::archive_statuses::status_bit;
use crate::store::keys::KeyTables;
use crate::store::legacy::store_layouts;
use crate::store::{Archive, ArchiveReader, StorageError, ORDER_BLOCK};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A user's open part of the index by user is sealed once it holds this
/// many ids (and the index built from `ao` is written in parts this big).
/// Each snapshot rewrites the open part of every user it archived orders
/// of: at most this many ids, 8 bytes each.
pub(super) const SEALED_PART_IDS: usize = 128;
/// Whole history chunks of a user per `ag` key. Archiving a chunk rewrites
/// its group: on average about (this + 1) / 2 chunks' bytes per chunk.
pub(super) const HISTORY_GROUP_CHUNKS: u64 = 4;

pub(super) const ARCHIVED_ORDERS: [u8; 2] = *b"ao";
pub(super) const ARCHIVED_HISTORY_GROUP: [u8; 2] = *b"ag";
pub(super) const ARCHIVED_BY_USER: [u8; 2] = *b"au";
pub(super) const OPEN_BY_USER: [u8; 2] = *b"av";
pub(super) const BY_USER_BUILT: &[u8] = b"ai";
pub(super) const STATUS_MASKS: [u8; 2] = *b"as";
pub(super) const STATUS_MASKS_BUILT: &[u8] = b"am";

pub(in crate::store) fn archive_key(prefix: [u8; 2], a: u64, b: u64) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..2].copy_from_slice(&prefix);
    k[2..10].copy_from_slice(&a.to_be_bytes());
    k[10..].copy_from_slice(&b.to_be_bytes());
    k
}

pub(super) fn part_key(block: u64, generation: u64) -> [u8; 18] {
    archive_key(ARCHIVED_ORDERS, block, generation)
}

/// The status mask of the part [`part_key`]`(block, generation)`.
pub(super) fn status_mask_key(block: u64, generation: u64) -> [u8; 18] {
    archive_key(STATUS_MASKS, block, generation)
}

pub(super) fn group_key(user: u64, chunk: u64) -> [u8; 18] {
    archive_key(ARCHIVED_HISTORY_GROUP, user, chunk / HISTORY_GROUP_CHUNKS)
}

/// The chunks of a history group, by chunk.
pub(super) fn decode_group(raw: &[u8]) -> Result<BTreeMap<u64, &[u8]>, StorageError> {
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

pub(super) fn encode_group(chunks: &BTreeMap<u64, &[u8]>) -> Result<Vec<u8>, StorageError> {
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

pub(super) fn by_user_key(user: u64, largest: u64) -> [u8; 18] {
    archive_key(ARCHIVED_BY_USER, user, largest)
}

pub(super) fn open_part_key(user: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(&OPEN_BY_USER);
    k[2..].copy_from_slice(&user.to_be_bytes());
    k
}

/// A part of user `user`'s index: ids, u64 each.
pub(super) fn decode_ids(user: u64, raw: &[u8]) -> Result<Vec<u64>, StorageError> {
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

pub(super) fn encode_ids(ids: &[u64]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_be_bytes()).collect()
}

/// The archive's entries (`a…`), read from any thread.
#[derive(Clone)]
pub(super) struct SledArchive {
    pub(super) tree: sled::Tree,
    pub(super) layout: Arc<Mutex<Layout>>,
    pub(super) keys: Arc<KeyTables>,
    /// The journal's tree, for the record a recent idempotency key names.
    pub(super) journal: sled::Tree,
}

impl SledArchive {
    pub(super) fn committed_generation(&self) -> u64 {
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
        store_layouts::history_chunk_before_groups(&self.tree, user, chunk)
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

    fn status_masks(&self) -> Result<Option<Vec<(u64, u16)>>, StorageError> {
        let committed = self.committed_generation();
        let mut masks = Vec::new();
        for kv in self.tree.scan_prefix(STATUS_MASKS) {
            let (k, v) = kv.map_err(io)?;
            let (block, generation) = (word_at(&k, 2)?, word_at(&k, 10)?);
            let mask = <[u8; 2]>::try_from(v.as_ref())
                .map(u16::from_le_bytes)
                .map_err(|_| StorageError::Corrupt(format!("status mask of block {block}")))?;
            if generation <= committed {
                masks.push((block, mask));
            }
        }
        Ok(Some(masks))
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

impl SledStore {
    /// Indexes every archived order by user (a store archived before the
    /// index existed; on a new store there is nothing to index), then marks
    /// the index complete. Redone whole if interrupted: parts repeat ids.
    pub(super) fn build_by_user(&self) -> Result<(), StorageError> {
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

    /// Writes the status mask of every archived block (a store archived
    /// before masks were kept; on a new store there is nothing to mark),
    /// then marks them complete. Redone whole if interrupted.
    pub(super) fn build_status_masks(&self) -> Result<(), StorageError> {
        let mut masks: BTreeMap<u64, u16> = BTreeMap::new();
        ArchiveReader(Arc::new(self.archive.clone())).each_order(|o| {
            *masks.entry(o.id.0 / ORDER_BLOCK).or_default() |= status_bit(o.status)
        })?;
        let generation = self.archive.committed_generation();
        for (block, mask) in masks {
            self.tree
                .insert(status_mask_key(block, generation), &mask.to_le_bytes())
                .map_err(io)?;
        }
        self.tree.insert(STATUS_MASKS_BUILT, &[][..]).map_err(io)?;
        self.flush()?;
        Ok(())
    }

    /// One sealed part of user `user`'s index: `ids`, ascending, not empty.
    pub(super) fn put_user_part(&self, user: u64, ids: &[u64]) -> Result<(), StorageError> {
        let largest = *ids.last().expect("a part has an id");
        self.tree
            .insert(by_user_key(user, largest), encode_ids(ids))
            .map_err(io)?;
        Ok(())
    }

    /// Rewrites the history group under `key` with `chunks` added (or
    /// replaced, when a snapshot is redone).
    pub(super) fn add_history_chunks(
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
    pub(super) fn add_user_ids(&self, user: u64, ids: &[u64]) -> Result<(), StorageError> {
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
}
