//! The one place bytes are made: every record and snapshot goes through here.
//!
//! A frame is `magic (2) | version (1) | kind (1) | length (4, LE) | crc32 (4, LE) | payload`;
//! the CRC covers the payload, and from version 3 the version and kind bytes before it.
//! The payload is bincode 1.3.3 (pinned: the crate is no longer maintained;
//! 1.x's byte format is also read by wincode, so a switch stays possible and
//! only this module would change). The checksum is asserted right after a
//! frame is built and verified before any payload is decoded.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub const MAGIC: [u8; 2] = *b"CE";
/// The version every frame is written with. Frames of versions 1 to 3 are
/// still read: of the kinds whose layout changed since ([`Kind::current_since`]),
/// through [`crate::store::legacy`].
pub const FORMAT_VERSION: u8 = 4;
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
    /// A chunk of a campaign's issued set ([`IdBitmap`](crate::domain::id_bitmap::IdBitmap)).
    IssuedChunk = 10,
    /// A chunk of the archive's units sold per product.
    SoldChunk = 11,
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
            10 => Kind::IssuedChunk,
            11 => Kind::SoldChunk,
            20 => Kind::PlatformEvent,
            21 => Kind::DeadLetter,
            _ => return None,
        })
    }

    /// The format version whose layout of this kind is the current one:
    /// an older frame of it is a legacy layout (decoded by
    /// [`crate::store::legacy`], never by [`decode`]).
    pub fn current_since(self) -> u8 {
        match self {
            // Version 4: users store their counted units as varints.
            Kind::User => 4,
            // Version 3: products carry their per-user limit, campaigns and
            // held coupons their terms, users the units they hold of
            // limited products; orders hold their refunds (values holding an
            // order, such as records, keys and platform events, read an older
            // frame's order in its layout: see `legacy`).
            Kind::Product | Kind::Campaign | Kind::Order => 3,
            // Version 2: products carry their recent sales; campaigns are a
            // header plus issued chunks; the meta lost the sales window;
            // the tally is counts plus sold chunks.
            Kind::Meta | Kind::Tally => 2,
            _ => 1,
        }
    }
}

/// One frame, its header checked: what it holds and in which version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: Kind,
    pub version: u8,
    pub payload: &'a [u8],
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
    #[error("the snapshot value {key} encodes to {len} bytes, over the limit of {max}")]
    ValueTooLong { key: String, len: usize, max: usize },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("payload does not decode: {0}")]
    Payload(String),
    #[error("payload does not encode: {0}")]
    Encode(String),
    #[error("a {kind:?} frame of format version {version} is a legacy layout")]
    Legacy { kind: Kind, version: u8 },
}

/// Appends one frame holding `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(
    kind: Kind,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    encode_into_limited(kind, value, out, PAYLOAD_LEN_MAX)
}

/// [`encode_into`] with a lower payload limit than the codec's (a store
/// that wants smaller values, or a test that proves values stay small).
pub fn encode_into_limited<T: Serialize + ?Sized>(
    kind: Kind,
    value: &T,
    out: &mut Vec<u8>,
    payload_len_max: usize,
) -> Result<(), CodecError> {
    let payload_len_max = payload_len_max.min(PAYLOAD_LEN_MAX);
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    if let Err(e) = bincode::serialize_into(&mut *out, value) {
        // No partial frame is left behind for the next one to follow.
        out.truncate(start);
        return Err(CodecError::Encode(e.to_string()));
    }
    let payload_len = out.len() - start - HEADER_LEN;
    if payload_len > payload_len_max {
        out.truncate(start);
        return Err(CodecError::TooLong(payload_len));
    }
    let crc = checksum(FORMAT_VERSION, kind as u8, &out[start + HEADER_LEN..]);
    let header = &mut out[start..start + HEADER_LEN];
    header[0..2].copy_from_slice(&MAGIC);
    header[2] = FORMAT_VERSION;
    header[3] = kind as u8;
    header[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[8..12].copy_from_slice(&crc.to_le_bytes());
    // Reading the frame back checksums the payload a second time: tests
    // and debug builds do it, a release build trusts the lines above (the
    // codec's round-trip tests prove them, and every read verifies).
    debug_assert!(
        split_frame(&out[start..]).is_ok_and(|(checked, _)| checked.payload.len() == payload_len),
        "a frame just built verifies"
    );
    Ok(())
}

pub fn encode<T: Serialize + ?Sized>(kind: Kind, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    encode_into(kind, value, &mut out)?;
    Ok(out)
}

/// The CRC-32 a frame stores. From version 3 on it covers the version and
/// kind bytes too: with three versions read, a flipped bit of the version
/// byte could otherwise name another readable version and go unnoticed.
/// Frames of versions 1 and 2 keep the checksum of their payload alone.
fn checksum(version: u8, kind: u8, payload: &[u8]) -> u32 {
    if version >= 3 {
        let mut h = fresh_crc();
        h.update(&[version, kind]);
        h.update(payload);
        h.finalize()
    } else {
        crc32fast::hash(payload)
    }
}

/// A CRC-32 hasher at its start. `Hasher::new` detects the CPU's
/// instructions on every call; a clone of one made once does not.
fn fresh_crc() -> crc32fast::Hasher {
    static FRESH: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    FRESH.get_or_init(crc32fast::Hasher::new).clone()
}

/// A frame split off a run of bytes, and the rest.
pub type Split<'a> = (Frame<'a>, &'a [u8]);

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
    let computed = checksum(bytes[2], bytes[3], payload);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    let frame = Frame {
        kind,
        version: bytes[2],
        payload,
    };
    Ok((frame, &bytes[end..]))
}

/// The one frame `bytes` holds, checked, of any kind and version.
pub fn open(bytes: &[u8]) -> Result<Frame<'_>, CodecError> {
    let (frame, rest) = split_frame(bytes)?;
    if !rest.is_empty() {
        return Err(CodecError::Payload(format!(
            "{} bytes after the frame",
            rest.len()
        )));
    }
    Ok(frame)
}

/// Decodes one frame that must hold exactly one `expected` value in its
/// current layout.
pub fn decode<T: DeserializeOwned>(expected: Kind, bytes: &[u8]) -> Result<T, CodecError> {
    decode_frame(expected, open(bytes)?)
}

/// Decodes `frame`, which must hold an `expected` value in its current layout.
pub fn decode_frame<T: DeserializeOwned>(
    expected: Kind,
    frame: Frame<'_>,
) -> Result<T, CodecError> {
    if frame.kind != expected {
        return Err(CodecError::WrongKind {
            expected,
            found: frame.kind,
        });
    }
    if frame.version < expected.current_since() {
        return Err(CodecError::Legacy {
            kind: frame.kind,
            version: frame.version,
        });
    }
    crate::store::legacy::decoding(frame.version, || decode_payload(frame.payload))
}

/// The payload as `T`, whatever layout its frame declares (the legacy module's).
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    bincode::deserialize(payload).map_err(|e| CodecError::Payload(e.to_string()))
}

/// Decodes a run of frames of one kind (a journal batch).
pub fn decode_all<T: DeserializeOwned>(
    expected: Kind,
    mut bytes: &[u8],
) -> Result<Vec<T>, CodecError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (frame, rest) = split_frame(bytes)?;
        out.push(decode_frame(expected, frame)?);
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
    fn an_encode_error_leaves_no_partial_frame() {
        // given a value bincode fails on part way (a sequence of unknown length after a number)
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(None)?;
                seq.serialize_element(&1u8)?;
                seq.end()
            }
        }
        let mut out = encode(Kind::Record, &record()).unwrap();
        let before = out.clone();
        // when it is encoded after a good frame, then it fails and the good frame is all there is
        assert!(matches!(
            encode_into(Kind::Meta, &(5u64, Unsized), &mut out),
            Err(CodecError::Encode(_))
        ));
        assert_eq!(out, before);
    }

    #[test]
    fn a_legacy_layout_is_not_decoded_as_the_current_one() {
        // given a version 1 frame of a kind whose layout changed, then decode refuses it
        let mut bytes = encode(Kind::Meta, &7u64).unwrap();
        bytes[2] = 1;
        let crc = crc32fast::hash(&bytes[HEADER_LEN..]);
        bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode::<u64>(Kind::Meta, &bytes),
            Err(CodecError::Legacy {
                kind: Kind::Meta,
                version: 1
            })
        );
        assert_eq!(open(&bytes).unwrap().version, 1);
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
