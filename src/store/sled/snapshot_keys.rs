//! How a [`SnapshotKey`] is stored: its bytes, which sort as its entries must.

use crate::store::{SnapshotKey, StorageError};

pub(in crate::store) const SNAPSHOT: u8 = b's';
pub(in crate::store) const KEY: u8 = b'k';

#[cfg(test)]
pub(super) fn encode_key(key: &SnapshotKey) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key_into(key, &mut out);
    out
}

/// Appends `key` as it is stored.
pub(super) fn encode_key_into(key: &SnapshotKey, out: &mut Vec<u8>) {
    let mut entity = |kind: u8, id: u64| {
        out.extend_from_slice(&[SNAPSHOT, kind]);
        out.extend_from_slice(&id.to_be_bytes());
    };
    match key {
        SnapshotKey::User(id) => entity(b'u', *id),
        SnapshotKey::Product(id) => entity(b'p', *id),
        SnapshotKey::Campaign(id) => entity(b'c', *id),
        SnapshotKey::Order(id) => entity(b'o', *id),
        SnapshotKey::History(id, chunk) => {
            entity(b'h', *id);
            out.extend_from_slice(&chunk.to_be_bytes());
        }
        SnapshotKey::Issued(id, chunk) => {
            entity(b'i', *id);
            out.extend_from_slice(&chunk.to_be_bytes());
        }
        SnapshotKey::Meta => out.extend_from_slice(&[SNAPSHOT, b'm']),
        SnapshotKey::Tally => out.extend_from_slice(&[SNAPSHOT, b't']),
        SnapshotKey::TallySold(chunk) => entity(b'T', *chunk),
        // Never in a pack: `write_snapshot` sends them to the archive tree.
        SnapshotKey::ArchivedOrder { id, .. } => entity(b'O', *id),
        SnapshotKey::ArchivedHistory(id, chunk) => {
            entity(b'H', *id);
            out.extend_from_slice(&chunk.to_be_bytes());
        }
        SnapshotKey::Key(k) => {
            out.push(KEY);
            out.extend_from_slice(k.as_bytes());
        }
        // Never in a pack: `write_snapshot` sends them to the key tables.
        SnapshotKey::IdemKey { hash, .. } => {
            out.extend_from_slice(&[SNAPSHOT, b'K']);
            out.extend_from_slice(&hash.to_be_bytes());
        }
    }
}

pub(super) fn decode_key(raw: &[u8]) -> Result<SnapshotKey, StorageError> {
    let bad = || StorageError::Corrupt(format!("unknown snapshot key {raw:?}"));
    match raw {
        [KEY, rest @ ..] => String::from_utf8(rest.to_vec())
            .map(SnapshotKey::Key)
            .map_err(|_| bad()),
        [SNAPSHOT, b'm'] => Ok(SnapshotKey::Meta),
        [SNAPSHOT, b't'] => Ok(SnapshotKey::Tally),
        [SNAPSHOT, pair @ (b'h' | b'i'), rest @ ..] if rest.len() == 16 => {
            let a = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let b = u64::from_be_bytes(rest[8..].try_into().expect("8 bytes"));
            Ok(if *pair == b'h' {
                SnapshotKey::History(a, b)
            } else {
                SnapshotKey::Issued(a, b)
            })
        }
        [SNAPSHOT, kind, id @ ..] if id.len() == 8 => {
            let id = u64::from_be_bytes(id.try_into().expect("8 bytes"));
            match kind {
                b'u' => Ok(SnapshotKey::User(id)),
                b'p' => Ok(SnapshotKey::Product(id)),
                b'c' => Ok(SnapshotKey::Campaign(id)),
                b'o' => Ok(SnapshotKey::Order(id)),
                b'T' => Ok(SnapshotKey::TallySold(id)),
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}
