//! Snapshot entries as packs of about 64 KiB, checksummed.

use super::io;
use crate::store::StorageError;
use std::collections::VecDeque;
use std::ops::Range;

pub(super) const PACK: u8 = b'p';
/// A pack is closed once it holds this many bytes.
pub(super) const PACK_BYTES: usize = 64 * 1024;

pub(super) fn pack_prefix(generation: u64) -> [u8; 9] {
    let mut k = [PACK; 9];
    k[1..].copy_from_slice(&generation.to_be_bytes());
    k
}

pub(super) fn pack_key(generation: u64, index: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..9].copy_from_slice(&pack_prefix(generation));
    k[9..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(super) fn pack_generation(raw: &[u8]) -> Result<u64, StorageError> {
    match raw {
        [PACK, g @ ..] if g.len() == 12 => {
            Ok(u64::from_be_bytes(g[..8].try_into().expect("8 bytes")))
        }
        _ => Err(StorageError::Corrupt(format!("pack key {raw:?}"))),
    }
}

/// Writes a generation's entries, in key order, as packs:
/// `(1 | key len u16 | key | value len u32 | value)` or `(0 | key len | key)`
/// for a deletion, repeated, then a crc32 of all of it.
pub(super) struct PackWriter<'a> {
    pub(super) tree: &'a sled::Tree,
    pub(super) generation: u64,
    pub(super) index: u32,
    pub(super) buf: Vec<u8>,
    pub(super) bytes: u64,
}

impl<'a> PackWriter<'a> {
    pub(super) fn new(tree: &'a sled::Tree, generation: u64) -> Self {
        PackWriter {
            tree,
            generation,
            index: 0,
            buf: Vec::with_capacity(PACK_BYTES + 4096),
            bytes: 0,
        }
    }

    pub(super) fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
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

    pub(super) fn close(&mut self) -> Result<(), StorageError> {
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
    pub(super) fn finish(mut self) -> Result<u64, StorageError> {
        self.close()?;
        Ok(self.bytes)
    }
}

/// Where one entry of a pack lies in it: its key, and its value unless deleted.
pub(super) type PackEntry = (Range<usize>, Option<Range<usize>>);

/// Checks a pack and finds its entries (read in place: a merge reads every
/// live entry, and copying each cost two allocations).
pub(super) fn decode_pack(raw: &[u8]) -> Result<VecDeque<PackEntry>, StorageError> {
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
