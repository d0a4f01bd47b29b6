//! Layouts of the sled store ([`crate::store::sled`]) that stores wrote
//! before its current one, told apart from it by key prefix or by value
//! length. Each is read for as long as a data dir may hold it:
//!
//! - `m` of 8 bytes: the snapshot's sequence alone, from before packs
//!   (today's layout is 40 bytes);
//! - `s…`/`k…`: one snapshot entry per sled key, from before packs; read
//!   as the oldest layer until the first merge folds them into a base;
//! - `ah` + user + chunk: one whole history chunk per key, from before
//!   history groups (`ag`); read when a group lacks the chunk.
//!
//! Two more live where they are read, as they share their code with
//! today's layout: journal batches under `j` in the main tree, from before
//! the journal had a database of its own (read and trimmed with the
//! journal's, [`crate::store::sled`]'s `journal`), and an archive without
//! its index by user (`ai` missing), indexed once at open (its `archive`).

use crate::store::sled::{archive_key, io, KEY, SNAPSHOT};
use crate::store::StorageError;

/// `ah`: a whole history chunk of a user, one per key.
const ARCHIVED_HISTORY: [u8; 2] = *b"ah";

/// The snapshot's sequence, if `raw` is a layout from before packs (8 bytes).
pub(crate) fn seq_before_packs(raw: &[u8]) -> Option<u64> {
    let word: [u8; 8] = raw.try_into().ok()?;
    Some(u64::from_be_bytes(word))
}

/// The snapshot entries from before packs, in key order (`k…` sorts before `s…`).
pub(crate) fn entries_before_packs(
    tree: &sled::Tree,
) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + '_ {
    tree.scan_prefix([KEY]).chain(tree.scan_prefix([SNAPSHOT]))
}

/// The keys of [`entries_before_packs`], to remove once merged.
pub(crate) fn keys_before_packs(tree: &sled::Tree) -> Result<Vec<Vec<u8>>, StorageError> {
    let mut out = Vec::new();
    for prefix in [[KEY], [SNAPSHOT]] {
        for k in tree.scan_prefix(prefix).keys() {
            out.push(k.map_err(io)?.to_vec());
        }
    }
    Ok(out)
}

/// The key of a history chunk stored alone, from before groups.
pub(crate) fn chunk_key(user: u64, chunk: u64) -> [u8; 18] {
    archive_key(ARCHIVED_HISTORY, user, chunk)
}

/// A whole history chunk of `user` stored alone, from before groups.
pub(crate) fn history_chunk_before_groups(
    tree: &sled::Tree,
    user: u64,
    chunk: u64,
) -> Result<Option<Vec<u8>>, StorageError> {
    Ok(tree
        .get(chunk_key(user, chunk))
        .map_err(io)?
        .map(|v| v.to_vec()))
}
