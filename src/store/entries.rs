//! Snapshot entries, their values packed into a few large blocks.
//!
//! A cut encodes 100k–500k values between batches and the snapshot thread
//! frees them all once written. As one allocation each, they would be that
//! many allocations on the journal writer and frees on another thread; in
//! blocks of up to 1 MiB they are a few dozen per snapshot, and encoding a
//! cut takes about 12% less time (`cargo bench --bench journal -- snapshot`).
//! The server's RSS drift does not depend on it (docs/performance.md,
//! "Snapshot values in a few large blocks").

use crate::store::codec::{self, CodecError, Kind};
use crate::store::SnapshotKey;
use serde::Serialize;
use std::fmt;

/// Room a block is begun with, and what it grows to (in steps, as the entries grow).
const BLOCK_FIRST: usize = 64 * 1024;
const BLOCK_MAX: usize = 1024 * 1024;
/// A new block is begun when the last has less room than this: a frame is
/// a few KiB at most, so values rarely make a block reallocate.
const BLOCK_SLACK: usize = 16 * 1024;

/// Where a value lies: a block, and a range in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    block: u32,
    start: u32,
    len: u32,
}

/// Snapshot entries to write, in the order pushed: a key and its value,
/// or `None` to delete the key.
pub struct SnapshotEntries {
    entries: Vec<(SnapshotKey, Option<Span>)>,
    blocks: Vec<Vec<u8>>,
    /// No value encoded by [`push_frame`](SnapshotEntries::push_frame) is larger.
    value_bytes_max: usize,
}

impl Default for SnapshotEntries {
    fn default() -> Self {
        SnapshotEntries::with_value_limit(codec::PAYLOAD_LEN_MAX)
    }
}

impl SnapshotEntries {
    pub fn new() -> SnapshotEntries {
        SnapshotEntries::default()
    }

    /// Entries whose encoded values are refused past `value_bytes_max`.
    pub fn with_value_limit(value_bytes_max: usize) -> SnapshotEntries {
        SnapshotEntries {
            entries: Vec::new(),
            blocks: Vec::new(),
            value_bytes_max,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends `key` with `value` encoded as a `kind` frame.
    pub fn push_frame<T: Serialize + ?Sized>(
        &mut self,
        key: SnapshotKey,
        kind: Kind,
        value: &T,
    ) -> Result<(), CodecError> {
        let block = self.block_with_room(BLOCK_SLACK);
        let buf = &mut self.blocks[block];
        let start = buf.len();
        codec::encode_into_limited(kind, value, buf, self.value_bytes_max)?;
        let len = buf.len() - start;
        self.entries.push((key, Some(span(block, start, len))));
        Ok(())
    }

    /// Appends `key` with `value` as it is, or its deletion.
    pub fn push(&mut self, key: SnapshotKey, value: Option<&[u8]>) {
        let span = value.map(|v| {
            let block = self.block_with_room(v.len());
            let buf = &mut self.blocks[block];
            let start = buf.len();
            buf.extend_from_slice(v);
            span(block, start, v.len())
        });
        self.entries.push((key, span));
    }

    /// Appends the deletion of `key`.
    pub fn delete(&mut self, key: SnapshotKey) {
        self.entries.push((key, None));
    }

    /// The entries in the order pushed.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&SnapshotKey, Option<&[u8]>)> + '_ {
        self.entries.iter().map(|(key, span)| {
            let value = span.map(|s| {
                let start = s.start as usize;
                &self.blocks[s.block as usize][start..start + s.len as usize]
            });
            (key, value)
        })
    }

    /// The last block, or a new one when it has less than `need` bytes of room left.
    fn block_with_room(&mut self, need: usize) -> usize {
        match self.blocks.last() {
            Some(b) if b.capacity() - b.len() >= need => self.blocks.len() - 1,
            _ => {
                // As big as what is written so far, within bounds: a few dozen blocks at most.
                let written: usize = self.blocks.iter().map(Vec::len).sum();
                let room = written.clamp(BLOCK_FIRST, BLOCK_MAX).max(need);
                self.blocks.push(Vec::with_capacity(room));
                self.blocks.len() - 1
            }
        }
    }
}

fn span(block: usize, start: usize, len: usize) -> Span {
    // Blocks are at most a few MiB (a frame's payload is at most 16 MiB),
    // and there are never 4 billion of them.
    let narrow = |n: usize| u32::try_from(n).expect("a snapshot block offset fits 32 bits");
    Span {
        block: narrow(block),
        start: narrow(start),
        len: narrow(len),
    }
}

impl fmt::Debug for SnapshotEntries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<(SnapshotKey, Option<Vec<u8>>)>> for SnapshotEntries {
    fn from(pairs: Vec<(SnapshotKey, Option<Vec<u8>>)>) -> SnapshotEntries {
        pairs.into_iter().collect()
    }
}

impl FromIterator<(SnapshotKey, Option<Vec<u8>>)> for SnapshotEntries {
    fn from_iter<I: IntoIterator<Item = (SnapshotKey, Option<Vec<u8>>)>>(
        pairs: I,
    ) -> SnapshotEntries {
        let mut out = SnapshotEntries::new();
        for (key, value) in pairs {
            out.push(key, value.as_deref());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_in_order_with_their_values_across_blocks() {
        let mut e = SnapshotEntries::new();
        let mut expected = Vec::new();
        for i in 0..20_000u64 {
            let key = SnapshotKey::Order(i);
            match i % 3 {
                0 => {
                    e.push_frame(key.clone(), Kind::Meta, &i).unwrap();
                    expected.push((key, Some(codec::encode(Kind::Meta, &i).unwrap())));
                }
                1 => {
                    let raw = vec![i as u8; (i % 700) as usize];
                    e.push(key.clone(), Some(&raw));
                    expected.push((key, Some(raw)));
                }
                _ => {
                    e.delete(key.clone());
                    expected.push((key, None));
                }
            }
        }
        // A value bigger than a block's slack, then more after it.
        let big = vec![7u8; 3 * BLOCK_SLACK];
        e.push(SnapshotKey::Meta, Some(&big));
        expected.push((SnapshotKey::Meta, Some(big)));
        e.push(SnapshotKey::Tally, Some(b"t"));
        expected.push((SnapshotKey::Tally, Some(b"t".to_vec())));

        assert_eq!(e.len(), expected.len());
        assert!(e.blocks.len() > 1, "the values span several blocks");
        assert!(e.blocks.iter().all(|b| b.capacity() <= BLOCK_MAX));
        let got: Vec<_> = e
            .iter()
            .map(|(k, v)| (k.clone(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(got, expected);
        let again: SnapshotEntries = expected.clone().into();
        assert_eq!(again.iter().count(), expected.len());
        assert!(again
            .iter()
            .zip(&expected)
            .all(|(a, b)| *a.0 == b.0 && a.1 == b.1.as_deref()));
    }
}
