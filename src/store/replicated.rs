//! The journal in a cluster, on the store's side: what the journal writer
//! hands the replicated stream per batch ([`Replica`]), the bytes of one
//! stream message ([`encode_batch`], [`decode_batch`]), how a standby
//! applies a batch and snapshots ([`follow_batch`], [`snapshot_world`]),
//! and where a node's local store stands in the stream ([`StreamPosition`],
//! kept in a file, or found by a search of the stream: [`locate`]).
//!
//! The local store is written only after the stream has stored a batch
//! (the leader's writer publishes, then flushes locally; a standby reads
//! the stream, then writes), so it is always a prefix of the stream: a
//! node that rejoins has nothing to discard, it reads on from its position.
//! Nothing here knows NATS; `engine::cluster_node` implements [`Replica`].

use crate::domain::world::World;
use crate::store::recovery::{cut_step, replay_batch, RecoveryError};
use crate::store::{SnapshotEntries, StorageError, Store};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The journal writer's hook in a cluster, called on the writer's thread.
pub trait Replica: Send + 'static {
    /// The batch of records `first_seq..`, encoded as `frames`, before it
    /// is written locally: `Ok` once the stream has stored it. An error is
    /// what every record of the batch is answered: `NotLeader` (not
    /// stored) or `OutcomeUnknown` (maybe stored); the writer then
    /// acknowledges nothing more.
    fn publish(&mut self, first_seq: u64, frames: &[u8]) -> Result<(), StorageError>;

    /// The batch whose last record is `last_seq` is flushed locally too.
    fn written(&mut self, last_seq: u64);
}

/// Bytes before the frames in a stream message: the batch's first record
/// sequence, big-endian.
const HEADER_BYTES: usize = 8;

/// One batch as one stream message: its first record sequence, then the
/// frames as the local journal holds them.
pub fn encode_batch(first_seq: u64, frames: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + frames.len());
    bytes.extend_from_slice(&first_seq.to_be_bytes());
    bytes.extend_from_slice(frames);
    bytes
}

/// A stream message's first record sequence and frames.
pub fn decode_batch(bytes: &[u8]) -> Result<(u64, &[u8]), StorageError> {
    if bytes.len() <= HEADER_BYTES {
        return Err(StorageError::Corrupt(format!(
            "a journal message of {} bytes holds no batch",
            bytes.len()
        )));
    }
    let (head, frames) = bytes.split_at(HEADER_BYTES);
    let mut seq = [0u8; HEADER_BYTES];
    seq.copy_from_slice(head);
    Ok((u64::from_be_bytes(seq), frames))
}

/// A standby's step for one batch read from the stream: applied to `world`
/// by recovery's own code, then written to the local journal. A batch the
/// local store already holds (below its position) is skipped whole. How
/// many records it applied.
pub fn follow_batch(
    world: &mut World,
    store: &dyn Store,
    first_seq: u64,
    frames: &[u8],
) -> Result<u64, RecoveryError> {
    let applied = replay_batch(world, first_seq, frames)?;
    if applied > 0 {
        store.append(first_seq, frames)?;
    }
    Ok(applied)
}

/// Writes a snapshot of `world` (everything it holds, up to `world.seq`)
/// and lets go of what it archived, as the journal writer does between
/// batches, all at once: a standby has no requests waiting.
pub fn snapshot_world(
    world: &mut World,
    store: &dyn Store,
    value_bytes_max: usize,
) -> Result<(), StorageError> {
    let marks = world.begin_cut();
    let mut entries = SnapshotEntries::with_value_limit(value_bytes_max);
    let archiving = loop {
        match cut_step(world, &mut entries, usize::MAX) {
            Ok(Some(archiving)) => break archiving,
            Ok(None) => continue,
            Err(e) => {
                world.cut = None;
                world.snapshot_failed(marks);
                return Err(StorageError::Corrupt(e.to_string()));
            }
        }
    };
    match store.snapshot(world.seq, entries) {
        Ok(()) => {
            let mut archiving = archiving;
            world.archived_step(&mut archiving, usize::MAX);
            Ok(())
        }
        Err(e) => {
            world.snapshot_failed(marks);
            Err(e)
        }
    }
}

/// Why a local store could not be placed in the stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    /// The stream could not be read; trying again may work.
    #[error("reading the journal stream: {0}")]
    Read(String),
    /// The stream does not hold the local store's records: it is another
    /// cluster's stream, a reset one, or it was trimmed past them.
    #[error("{0}")]
    NotHeld(String),
    /// The stream was trimmed past the local store's end: the store is
    /// this cluster's, but too old to follow it.
    #[error("{0}")]
    Trimmed(String),
}

/// Where a local store ending at record `record_seq` stands in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub position: StreamPosition,
    /// The stream's batch that ends at `record_seq` (first record, frames),
    /// for a comparison with the local journal's; `None` when the local
    /// store ends inside a batch (the position is then just before it).
    pub batch: Option<(u64, bytes::Bytes)>,
}

/// Finds where a local store whose last record is `record_seq` stands in a
/// stream holding messages `first..=last`, reading message bodies with
/// `get`: a binary search on the first record sequence every batch message
/// starts with (term markers, empty, hold none and are stepped over). About
/// `2 log2(last - first)` reads, and one batch decoded. What a node uses
/// when its `cluster-position` file is missing (killed before the first
/// one was written) or does not fit its store.
///
/// The local store is written only after the stream stored a batch, so it
/// is a prefix of the stream: its last record is the last of some batch.
/// A store that ends inside a batch is placed before that batch (its
/// records are skipped on the read); one that holds records the stream
/// does not, or that the stream was trimmed past, is refused.
pub fn locate(
    record_seq: u64,
    bounds: Option<(u64, u64)>,
    get: &mut dyn FnMut(u64) -> Result<bytes::Bytes, LocateError>,
) -> Result<Located, LocateError> {
    if record_seq == 0 {
        return Ok(Located {
            position: StreamPosition::default(),
            batch: None,
        });
    }
    let Some((first, last)) = bounds else {
        return Err(LocateError::NotHeld(format!(
            "the local store holds records up to {record_seq} but the journal stream holds none"
        )));
    };
    let start = stream_start(record_seq, (first, last), get)?;
    if start.first_record > record_seq {
        // Trimmed up to the store's last record exactly: it reads on from
        // the stream's first batch.
        return Ok(Located::before(&start));
    }
    let holding = batch_holding(record_seq, start, (first, last), get)?;
    place_at(record_seq, holding)
}

/// A batch message of the stream, as [`locate`] reads it.
struct StreamBatch {
    stream_seq: u64,
    first_record: u64,
    body: bytes::Bytes,
}

/// The first batch message at or after `from`, up to `last`; term markers
/// (empty) are stepped over.
fn first_batch_from(
    from: u64,
    last: u64,
    get: &mut dyn FnMut(u64) -> Result<bytes::Bytes, LocateError>,
) -> Result<Option<StreamBatch>, LocateError> {
    for stream_seq in from..=last {
        let body = get(stream_seq)?;
        if body.is_empty() {
            continue; // a term marker
        }
        let (first_record, _) =
            decode_batch(&body).map_err(|e| LocateError::NotHeld(e.to_string()))?;
        return Ok(Some(StreamBatch {
            stream_seq,
            first_record,
            body,
        }));
    }
    Ok(None)
}

/// The first batch of a stream holding messages `first..=last`, if the
/// store's records reach it: it starts at or below `record_seq + 1`. A
/// stream that starts later was trimmed past the store, or, when nothing
/// was trimmed from it, never held the store's records.
fn stream_start(
    record_seq: u64,
    (first, last): (u64, u64),
    get: &mut dyn FnMut(u64) -> Result<bytes::Bytes, LocateError>,
) -> Result<StreamBatch, LocateError> {
    match first_batch_from(first, last, get)? {
        Some(b) if b.first_record <= record_seq => Ok(b),
        Some(b) if b.first_record.checked_sub(1) == Some(record_seq) => Ok(b),
        Some(StreamBatch { first_record, .. }) if first == 1 => Err(LocateError::NotHeld(format!(
            "the journal stream starts at record {first_record}, yet the local store ends at {record_seq}"
        ))),
        Some(StreamBatch { first_record, .. }) => Err(LocateError::Trimmed(format!(
            "the journal stream was trimmed to record {first_record} (message {first}), past this store's last record {record_seq}"
        ))),
        None => Err(LocateError::NotHeld(format!(
            "the local store holds records up to {record_seq} but the journal stream holds no batch"
        ))),
    }
}

/// The last batch that starts at or below `record_seq`, by a binary
/// search from `start`, the stream's first batch, which does: the largest
/// `s` whose first batch at or after it starts at or below `record_seq`
/// (monotone in `s`); that batch is the message `s` itself.
fn batch_holding(
    record_seq: u64,
    start: StreamBatch,
    (first, last): (u64, u64),
    get: &mut dyn FnMut(u64) -> Result<bytes::Bytes, LocateError>,
) -> Result<StreamBatch, LocateError> {
    let mut at = start;
    let (mut lo, mut hi) = (first, last);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match first_batch_from(mid, last, get)? {
            Some(b) if b.first_record <= record_seq => {
                lo = mid;
                at = b;
            }
            _ => hi = mid - 1,
        }
    }
    Ok(at)
}

/// Where a store ending at `record_seq` stands, given `holding`, the last
/// batch that starts at or below it: after that batch when it ends at
/// `record_seq`, before it when the store ends inside it; refused when it
/// ends below `record_seq` (the stream holds less than the store).
fn place_at(record_seq: u64, holding: StreamBatch) -> Result<Located, LocateError> {
    let (stream_seq, first_record) = (holding.stream_seq, holding.first_record);
    let (_, frames) =
        decode_batch(&holding.body).map_err(|e| LocateError::NotHeld(e.to_string()))?;
    let count = crate::store::recovery::batch_records(frames)
        .map_err(|e| LocateError::NotHeld(format!("stream message {stream_seq}: {e}")))?;
    let last_record = first_record + count.saturating_sub(1);
    if last_record < record_seq {
        return Err(LocateError::NotHeld(format!(
            "the local store holds records up to {record_seq} but the journal stream only up to {last_record} (message {stream_seq}): another or a reset NATS cluster"
        )));
    }
    if last_record == record_seq {
        return Ok(Located {
            position: StreamPosition {
                record_seq,
                stream_seq,
            },
            batch: Some((first_record, holding.body.slice(HEADER_BYTES..))),
        });
    }
    Ok(Located::before(&holding))
}

impl Located {
    /// Just before `batch`: the store reads it (again) first.
    fn before(batch: &StreamBatch) -> Located {
        Located {
            position: StreamPosition {
                record_seq: batch.first_record.saturating_sub(1),
                stream_seq: batch.stream_seq - 1,
            },
            batch: None,
        }
    }
}

/// Where a local store stands in the stream: the batch ending at record
/// `record_seq` is the stream's message `stream_seq`. Kept in
/// `<data-dir>/cluster-position` and written only after that batch is
/// flushed locally, so the store always holds at least `record_seq`; a
/// node that starts reads the stream on from `stream_seq + 1`, skipping
/// what it holds already. An older position only costs a longer read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamPosition {
    pub record_seq: u64,
    pub stream_seq: u64,
}

impl StreamPosition {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("cluster-position")
    }

    /// The position kept in `data_dir`; `None` if none was ever kept.
    pub fn load(data_dir: &Path) -> Result<Option<StreamPosition>, StorageError> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::Io(format!("{}: {e}", path.display()))),
        };
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next(), fields.next()) {
            (Some(Ok(record_seq)), Some(Ok(stream_seq)), None) => Ok(Some(StreamPosition {
                record_seq,
                stream_seq,
            })),
            _ => Err(StorageError::Corrupt(format!(
                "{} does not hold two numbers: {text:?}",
                path.display()
            ))),
        }
    }

    /// Keeps this position in `data_dir`, atomically (a new file, synced,
    /// renamed over the old one).
    pub fn save(&self, data_dir: &Path) -> Result<(), StorageError> {
        let path = Self::path(data_dir);
        let tmp = data_dir.join("cluster-position.tmp");
        let io = |e: std::io::Error| StorageError::Io(format!("{}: {e}", path.display()));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        writeln!(file, "{} {}", self.record_seq, self.stream_seq).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(dir) = std::fs::File::open(data_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_message_gives_back_its_first_sequence_and_frames() {
        // proves the message layout round-trips and that a message too short to hold a batch is refused
        let bytes = encode_batch(42, b"frames");
        assert_eq!(decode_batch(&bytes), Ok((42, &b"frames"[..])));
        assert!(decode_batch(&bytes[..8]).is_err());
        assert!(decode_batch(&[]).is_err());
    }

    /// A batch of `count` records from `first`, as a stream message body.
    fn batch(first: u64, count: u64) -> bytes::Bytes {
        use crate::domain::event::{Event, Record};
        use crate::domain::ids::{ProductId, UserId};
        use crate::domain::money::Krw;
        use crate::domain::time::Timestamp;
        use crate::store::codec::{self, Kind};
        let mut frames = Vec::new();
        for i in 0..count {
            let record = Record::new(
                Timestamp(i),
                Event::CartLineSet {
                    user_id: UserId(1),
                    product_id: ProductId(2),
                    name: "mug".into(),
                    price: Krw(3000),
                    quantity: 1,
                },
            );
            codec::encode_into(Kind::Record, &record, &mut frames).unwrap();
        }
        bytes::Bytes::from(encode_batch(first, &frames))
    }

    /// A stream of `messages` (stream sequence `first` on); every read counted.
    struct FakeStream {
        first: u64,
        messages: Vec<bytes::Bytes>,
        reads: usize,
    }

    impl FakeStream {
        /// Batches of `sizes` records, one after the other from record 1,
        /// with a term marker before the batches whose index `markers` holds.
        fn new(sizes: &[u64], markers: &[usize]) -> FakeStream {
            let (mut messages, mut next) = (Vec::new(), 1);
            for (i, &n) in sizes.iter().enumerate() {
                if markers.contains(&i) {
                    messages.push(bytes::Bytes::new());
                }
                messages.push(batch(next, n));
                next += n;
            }
            FakeStream {
                first: 1,
                messages,
                reads: 0,
            }
        }

        /// Drops the first `n` messages (a purge).
        fn purge(mut self, n: usize) -> FakeStream {
            self.messages.drain(..n);
            self.first += n as u64;
            self
        }

        fn locate(&mut self, record_seq: u64) -> Result<Located, LocateError> {
            let bounds = (!self.messages.is_empty())
                .then(|| (self.first, self.first + self.messages.len() as u64 - 1));
            let (first, messages, reads) = (self.first, &self.messages, &mut self.reads);
            locate(record_seq, bounds, &mut |seq| {
                *reads += 1;
                messages
                    .get((seq - first) as usize)
                    .cloned()
                    .ok_or_else(|| LocateError::Read(format!("no message {seq}")))
            })
        }
    }

    #[test]
    fn a_store_ending_at_any_batch_end_is_placed_after_that_batch() {
        // proves the search finds, for every batch boundary, the message that ends there, over term markers anywhere (first, between, last)
        let sizes = [3, 1, 5, 2, 2, 7, 1, 4, 3];
        let mut stream = FakeStream::new(&sizes, &[0, 3, 4, 8]);
        stream.messages.push(bytes::Bytes::new()); // a marker last
        let (mut end, mut seq) = (0, 0);
        for (i, &n) in sizes.iter().enumerate() {
            seq += 1 + u64::from([0, 3, 4, 8].contains(&i));
            end += n;
            let found = stream.locate(end).unwrap();
            assert_eq!(
                found.position,
                StreamPosition {
                    record_seq: end,
                    stream_seq: seq
                },
                "store ending at record {end}"
            );
            let (first, frames) = found.batch.unwrap();
            assert_eq!(first, end - n + 1);
            assert_eq!(&frames[..], &stream.messages[(seq - 1) as usize][8..]);
        }
        assert_eq!(
            stream.locate(0).unwrap().position,
            StreamPosition::default()
        );
    }

    #[test]
    fn a_store_ending_inside_a_batch_is_placed_before_it() {
        // proves a store that ends mid-batch reads that batch again (its held records are skipped by replay) rather than miss its tail
        let mut stream = FakeStream::new(&[3, 5, 2], &[1]);
        let found = stream.locate(5).unwrap();
        assert_eq!(
            found.position,
            StreamPosition {
                record_seq: 3,
                stream_seq: 2
            }
        );
        assert_eq!(found.batch, None);
    }

    #[test]
    fn a_store_the_stream_does_not_hold_is_refused() {
        // proves records beyond the stream's end, a stream trimmed past the store, and an empty stream are each refused, never placed; a store ending just before a trimmed stream's first batch reads on
        let mut stream = FakeStream::new(&[3, 5, 2], &[]);
        assert!(matches!(stream.locate(11), Err(LocateError::NotHeld(_))));
        let mut trimmed = FakeStream::new(&[3, 5, 2], &[]).purge(2);
        assert!(matches!(trimmed.locate(3), Err(LocateError::Trimmed(m)) if m.contains("trimmed")));
        assert_eq!(
            trimmed.locate(8).unwrap().position,
            StreamPosition {
                record_seq: 8,
                stream_seq: 2
            },
            "a store that ends where the trimmed stream starts reads on"
        );
        assert_eq!(
            trimmed.locate(10).unwrap().position,
            StreamPosition {
                record_seq: 10,
                stream_seq: 3
            }
        );
        let mut empty = FakeStream::new(&[], &[]);
        assert!(matches!(empty.locate(1), Err(LocateError::NotHeld(_))));
    }

    #[test]
    fn the_search_reads_about_twice_log2_of_the_stream() {
        // proves the cost bound: a stream of 100,000 batches is searched in under 60 reads
        let sizes = vec![2; 100_000];
        let mut stream = FakeStream::new(&sizes, &[50_000]);
        let found = stream.locate(2 * 77_777).unwrap();
        assert_eq!(found.position.stream_seq, 77_778);
        assert!(stream.reads < 60, "{} reads", stream.reads);
    }

    #[test]
    fn a_kept_position_is_read_back_and_a_garbled_one_is_refused() {
        // proves the position file round-trips, is absent before the first save, and is never misread
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(StreamPosition::load(dir.path()), Ok(None));
        let p = StreamPosition {
            record_seq: 1_000,
            stream_seq: 17,
        };
        p.save(dir.path()).unwrap();
        assert_eq!(StreamPosition::load(dir.path()), Ok(Some(p)));
        std::fs::write(StreamPosition::path(dir.path()), "12 x").unwrap();
        assert!(StreamPosition::load(dir.path()).is_err());
    }
}
