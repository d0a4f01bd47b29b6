//! The one place bytes are made: every record and snapshot goes through here.
//!
//! A frame is `magic (2) | version (1) | kind (1) | length (4, LE) | crc32 (4, LE) | payload`.
//! The payload is bincode 1.3.3 (pinned: the crate is no longer maintained;
//! 1.x's byte format is also read by wincode, so a switch stays possible and
//! only this module would change). The checksum is asserted right after a
//! frame is built and verified before any payload is decoded.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub const MAGIC: [u8; 2] = *b"CE";
pub const FORMAT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 12;
/// No frame is larger than this (a record is a few KiB at most).
pub const PAYLOAD_LEN_MAX: usize = 16 * 1024 * 1024;

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Record = 1,
    User = 2,
    Product = 3,
    Campaign = 4,
    Order = 5,
    Key = 6,
    Meta = 7,
    /// A chunk of a user's balance history (snapshots write users without it).
    History = 8,
    /// The sums of the archive ([`ArchiveTally`](crate::domain::world::ArchiveTally)).
    Tally = 9,
    /// An event of the data platform's outbox
    /// ([`PlatformEvent`](crate::domain::platform::PlatformEvent)); numbered
    /// apart from the snapshot kinds, which grow from 10.
    PlatformEvent = 20,
    /// A dead letter of the outbox ([`DeadLetter`](crate::store::outbox::DeadLetter)).
    DeadLetter = 21,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Record,
            2 => Kind::User,
            3 => Kind::Product,
            4 => Kind::Campaign,
            5 => Kind::Order,
            6 => Kind::Key,
            7 => Kind::Meta,
            8 => Kind::History,
            9 => Kind::Tally,
            20 => Kind::PlatformEvent,
            21 => Kind::DeadLetter,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("frame truncated: {0} bytes left, {1} needed")]
    Truncated(usize, usize),
    #[error("bad magic {0:?}")]
    BadMagic([u8; 2]),
    #[error("format version {0} is newer than this build reads ({FORMAT_VERSION})")]
    UnknownVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("expected a {expected:?} frame, found {found:?}")]
    WrongKind { expected: Kind, found: Kind },
    #[error("payload of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("payload does not decode: {0}")]
    Payload(String),
    #[error("payload does not encode: {0}")]
    Encode(String),
}

/// Appends one frame holding `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(
    kind: Kind,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    bincode::serialize_into(&mut *out, value).map_err(|e| CodecError::Encode(e.to_string()))?;
    let payload_len = out.len() - start - HEADER_LEN;
    if payload_len > PAYLOAD_LEN_MAX {
        out.truncate(start);
        return Err(CodecError::TooLong(payload_len));
    }
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    let header = &mut out[start..start + HEADER_LEN];
    header[0..2].copy_from_slice(&MAGIC);
    header[2] = FORMAT_VERSION;
    header[3] = kind as u8;
    header[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[8..12].copy_from_slice(&crc.to_le_bytes());
    // Assert the frame right before it leaves for the disk.
    let (checked, _) = split_frame(&out[start..]).expect("a frame just built verifies");
    assert_eq!(checked.1.len(), payload_len);
    Ok(())
}

pub fn encode<T: Serialize + ?Sized>(kind: Kind, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    encode_into(kind, value, &mut out)?;
    Ok(out)
}

/// A frame split off a run of bytes: `((kind, payload), rest)`.
pub type Split<'a> = ((Kind, &'a [u8]), &'a [u8]);

/// Splits the first frame off `bytes`, verifying its header and checksum.
pub fn split_frame(bytes: &[u8]) -> Result<Split<'_>, CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::Truncated(bytes.len(), HEADER_LEN));
    }
    let magic = [bytes[0], bytes[1]];
    if magic != MAGIC {
        return Err(CodecError::BadMagic(magic));
    }
    if bytes[2] > FORMAT_VERSION || bytes[2] == 0 {
        return Err(CodecError::UnknownVersion(bytes[2]));
    }
    let kind = Kind::from_u8(bytes[3]).ok_or(CodecError::UnknownKind(bytes[3]))?;
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if len > PAYLOAD_LEN_MAX {
        return Err(CodecError::TooLong(len));
    }
    let stored = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let end = HEADER_LEN + len;
    if bytes.len() < end {
        return Err(CodecError::Truncated(bytes.len(), end));
    }
    let payload = &bytes[HEADER_LEN..end];
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    Ok(((kind, payload), &bytes[end..]))
}

/// Decodes one frame that must hold exactly one `expected` value.
pub fn decode<T: DeserializeOwned>(expected: Kind, bytes: &[u8]) -> Result<T, CodecError> {
    let ((kind, payload), rest) = split_frame(bytes)?;
    if !rest.is_empty() {
        return Err(CodecError::Payload(format!(
            "{} bytes after the frame",
            rest.len()
        )));
    }
    decode_payload(expected, kind, payload)
}

fn decode_payload<T: DeserializeOwned>(
    expected: Kind,
    found: Kind,
    payload: &[u8],
) -> Result<T, CodecError> {
    if found != expected {
        return Err(CodecError::WrongKind { expected, found });
    }
    bincode::deserialize(payload).map_err(|e| CodecError::Payload(e.to_string()))
}

/// Decodes a run of frames of one kind (a journal batch).
pub fn decode_all<T: DeserializeOwned>(
    expected: Kind,
    mut bytes: &[u8],
) -> Result<Vec<T>, CodecError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let ((kind, payload), rest) = split_frame(bytes)?;
        out.push(decode_payload(expected, kind, payload)?);
        bytes = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::coupon::Discount;
    use crate::domain::event::{Event, Record};
    use crate::domain::ids::{ProductId, UserId};
    use crate::domain::money::Krw;
    use crate::domain::time::Timestamp;

    fn record() -> Record {
        Record::new(
            Timestamp(5),
            Event::CartLineSet {
                user_id: UserId(1),
                product_id: ProductId(2),
                name: "mug".into(),
                price: Krw(3000),
                quantity: 2,
            },
        )
    }

    #[test]
    fn a_record_round_trips() {
        let bytes = encode(Kind::Record, &record()).unwrap();
        assert_eq!(decode::<Record>(Kind::Record, &bytes).unwrap(), record());
    }

    #[test]
    fn discount_uses_a_bincode_friendly_shape() {
        let d = Discount::Percent { percent: 10 };
        let bytes = encode(Kind::Meta, &d).unwrap();
        assert_eq!(decode::<Discount>(Kind::Meta, &bytes).unwrap(), d);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encode(Kind::Record, &record()).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode::<Record>(Kind::Record, &bad).is_err(),
                    "flip of bit {bit} in byte {i} went unseen"
                );
            }
        }
    }

    #[test]
    fn a_truncated_batch_is_refused() {
        let mut batch = encode(Kind::Record, &record()).unwrap();
        encode_into(Kind::Record, &record(), &mut batch).unwrap();
        assert_eq!(decode_all::<Record>(Kind::Record, &batch).unwrap().len(), 2);
        assert!(decode_all::<Record>(Kind::Record, &batch[..batch.len() - 1]).is_err());
    }

    #[test]
    fn a_newer_format_version_is_refused() {
        let mut bytes = encode(Kind::Record, &record()).unwrap();
        bytes[2] = FORMAT_VERSION + 1;
        assert_eq!(
            decode::<Record>(Kind::Record, &bytes),
            Err(CodecError::UnknownVersion(FORMAT_VERSION + 1))
        );
    }
}
