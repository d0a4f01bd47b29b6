//! The journal in a cluster, on the store's side: what the journal writer
//! hands the replicated stream per batch ([`Replica`]), the bytes of one
//! stream message ([`encode_batch`], [`decode_batch`]), how a standby
//! applies a batch and snapshots ([`follow_batch`], [`snapshot_world`]),
//! and where a node's local store stands in the stream ([`StreamPosition`]).
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
