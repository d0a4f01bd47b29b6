//! What sled 0.34.7's flush leaves unsynced, synced by the store.
//!
//! sled's flush writes its log out with `sync_file_range` and waits for
//! it: the data, but neither the drive's cache nor the file's metadata
//! (spacejam/sled#1452). Two things it writes are therefore not durable
//! when `flush` returns, and this module syncs both before the store
//! relies on a flush:
//!
//! - **Blob files.** sled keeps any message larger than a quarter of a
//!   segment (128 KiB with the default 512 KiB segments) in a file of its
//!   own under `blobs/`: a large value, or a tree node it rewrites whole.
//!   Here that is a node of snapshot packs (sixteen 64 KiB packs) or of
//!   archived orders, and under load the journal's last node. It writes
//!   the file with plain `write` calls and never syncs it, and once the
//!   log entry naming the file is flushed, the node's older copies in the
//!   log count as dead. So until the kernel writes the file back (up to
//!   half a minute by default), a power cut could lose a node the log says
//!   is durable. (Seen with `strace`: 85 blob files created in 5 s of
//!   `bench --workload order_pay`, all by the snapshot thread; at 512 in
//!   flight the journal writer creates them too.) [`BlobSync`] gives each
//!   new file `fdatasync`, then the directory `fsync` for the new names.
//! - **The log file's growth.** The log grows a segment at a time, and
//!   `sync_file_range` does not make the new length durable: until the
//!   filesystem commits its metadata (ext4: every 5 s), a power cut could
//!   cut the file back. [`LogGrowth`] gives the file `fdatasync` once it has
//!   grown since the last one: a few times a second under full load.
//!
//! [`BlobSync::sync_new`] runs before each flush the store relies on. It
//! costs one `stat` of the directory when nothing changed there, the usual
//! case, and about 0.3 ms per new file. Each of the store's two sled
//! databases has its own: the journal's flushes (on the hot path) list
//! only the journal's directory, where files are rare (the journal's last
//! node rewritten, or a node a trim rewrote), and the snapshot thread's
//! files wait for the snapshot thread's flushes.
//!
//! What is left is the drive's volatile cache, if it has one: sled's
//! flush does not empty it, though each `fdatasync` here does.
//!
//! Two threads write to the journal's database (the journal writer, and
//! the snapshot thread's trims), so a file may still be being written
//! when the other one lists it. A file counts as synced only once its
//! checksum matches (sled's header: CRC32 of the kind byte and the data,
//! little-endian, then the kind byte, then the data); an incomplete file
//! is synced anyway and looked at again next time.

use crate::store::StorageError;
use std::collections::HashSet;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The clock the kernel stamps files with (one tick coarse, 1 to 10 ms):
/// a file created after this was read has an mtime at or after it.
pub fn file_clock() -> SystemTime {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            if let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec)) {
                return SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
            }
        }
    }
    // Elsewhere, or should the call fail: earlier than any such tick.
    SystemTime::now() - Duration::from_millis(50)
}

pub struct BlobSync {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The directory's mtime when a listing found every file complete and
    /// synced, and began a clock tick after it (a file created in the
    /// same tick leaves the mtime as it is): while the mtime is still
    /// this, there is nothing new to sync.
    settled: Option<SystemTime>,
    /// Files synced whole (by name, sled's LSN).
    synced: HashSet<u64>,
}

/// What one [`BlobSync::sync_new`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Files synced whole.
    pub complete: usize,
    /// Files synced while still being written (looked at again next time).
    pub incomplete: usize,
}

impl BlobSync {
    /// For the sled database in `db_dir`.
    pub fn new(db_dir: &Path) -> BlobSync {
        BlobSync {
            dir: db_dir.join("blobs"),
            state: Mutex::new(State::default()),
        }
    }

    /// For the sled database in `db_dir`, just opened: the files already
    /// there are synced without being read (a store run for a while
    /// holds hundreds of MB of them, nearly all long written back). Once
    /// sled is open, each is whole: one cut short by a crash is named only
    /// by a log entry that never became durable, and sled's recovery has
    /// removed it.
    pub fn adopt(db_dir: &Path) -> Result<BlobSync, StorageError> {
        let sync = BlobSync::new(db_dir);
        let started = file_clock();
        let Some(mtime) = sync.mtime()? else {
            return Ok(sync);
        };
        let mut state = sync.lock();
        for entry in std::fs::read_dir(&sync.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Some(lsn) = lsn_of(&entry) else {
                continue;
            };
            match File::open(entry.path()).and_then(|f| f.sync_data()) {
                Ok(()) => {
                    state.synced.insert(lsn);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        state.settled = (mtime < started).then_some(mtime);
        drop(state);
        sync.sync_dir()?;
        Ok(sync)
    }

    /// Syncs every blob file not synced whole yet, then the directory.
    pub fn sync_new(&self) -> Result<Synced, StorageError> {
        let started = file_clock();
        // sled creates it at open; none means no blob was ever written.
        let Some(mtime) = self.mtime()? else {
            return Ok(Synced::default());
        };
        let known = {
            let state = self.lock();
            if state.settled == Some(mtime) {
                return Ok(Synced::default());
            }
            state.synced.clone()
        };
        let mut done = Synced::default();
        let mut present = HashSet::new();
        let mut whole = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Some(lsn) = lsn_of(&entry) else {
                continue;
            };
            present.insert(lsn);
            if known.contains(&lsn) {
                continue;
            }
            match sync_file(&entry.path()) {
                Ok(true) => {
                    done.complete += 1;
                    whole.push(lsn);
                }
                Ok(false) => done.incomplete += 1,
                // sled removed it meanwhile (an obsolete node).
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        if done.complete + done.incomplete > 0 {
            self.sync_dir()?;
        }
        let mut state = self.lock();
        state.synced.extend(whole);
        // Forget files sled removed (a file listed after this listing
        // began and already synced by another call is synced again: harmless).
        state.synced.retain(|lsn| present.contains(lsn));
        state.settled = (done.incomplete == 0 && mtime < started).then_some(mtime);
        Ok(done)
    }

    /// `fsync` of the directory: the names of new files.
    fn sync_dir(&self) -> Result<(), StorageError> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)
    }

    fn mtime(&self) -> Result<Option<SystemTime>, StorageError> {
        match std::fs::metadata(&self.dir) {
            Ok(m) => m.modified().map(Some).map_err(io),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// sled's log file (`db`), synced whenever it has grown.
pub struct LogGrowth {
    file: File,
    /// The length at the last `fdatasync`.
    synced_len: AtomicU64,
}

impl LogGrowth {
    /// For the sled database in `db_dir`, just opened; syncs the file once.
    pub fn open(db_dir: &Path) -> Result<LogGrowth, StorageError> {
        let file = File::open(db_dir.join("db")).map_err(io)?;
        file.sync_data().map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(LogGrowth {
            file,
            synced_len: AtomicU64::new(len),
        })
    }

    /// `fdatasync` if the file grew since the last one; says whether it did.
    pub fn sync_if_grown(&self) -> Result<bool, StorageError> {
        let len = self.file.metadata().map_err(io)?.len();
        if len <= self.synced_len.load(Ordering::Acquire) {
            return Ok(false);
        }
        self.file.sync_data().map_err(io)?;
        self.synced_len.fetch_max(len, Ordering::AcqRel);
        Ok(true)
    }
}

/// sled names each file by its LSN and ignores any other name.
fn lsn_of(entry: &std::fs::DirEntry) -> Option<u64> {
    entry.file_name().to_str()?.parse().ok()
}

/// Syncs the file at `path`; says whether it held a whole blob.
fn sync_file(path: &Path) -> std::io::Result<bool> {
    let mut file = File::open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    // `fdatasync`: the data and what reading it back needs (length, extents).
    file.sync_data()?;
    Ok(is_whole(&bytes))
}

/// sled's blob layout: CRC32 (LE) of the rest, a kind byte, the data.
fn is_whole(bytes: &[u8]) -> bool {
    match bytes.split_first_chunk::<4>() {
        Some((crc, rest)) if !rest.is_empty() => crc32fast::hash(rest) == u32::from_le_bytes(*crc),
        _ => false,
    }
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut rest = vec![kind];
        rest.extend_from_slice(data);
        let mut out = crc32fast::hash(&rest).to_le_bytes().to_vec();
        out.extend_from_slice(&rest);
        out
    }

    #[test]
    fn a_blob_is_whole_only_with_its_checksum() {
        let good = blob(3, b"node bytes");
        assert!(is_whole(&good));
        assert!(!is_whole(&good[..good.len() - 1]), "cut short");
        assert!(!is_whole(&good[..5]), "header and kind only");
        assert!(!is_whole(&good[..4]), "no kind byte");
        assert!(!is_whole(&[]));
        let mut altered = good.clone();
        altered[6] ^= 1;
        assert!(!is_whole(&altered));
    }

    #[test]
    fn syncs_new_files_once_and_incomplete_ones_until_whole() {
        let dir = tempfile::tempdir().unwrap();
        let sync = BlobSync::new(dir.path());
        assert_eq!(sync.sync_new().unwrap(), Synced::default(), "no blobs/ yet");
        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("100"), blob(1, &[7; 1000])).unwrap();
        std::fs::write(blobs.join("200"), blob(1, &[8; 10])).unwrap();
        // Being written: header only.
        std::fs::write(blobs.join("300"), &blob(1, &[9; 64])[..4]).unwrap();
        std::fs::write(blobs.join("not-a-blob"), b"x").unwrap();
        assert_eq!(
            sync.sync_new().unwrap(),
            Synced {
                complete: 2,
                incomplete: 1
            }
        );
        // The incomplete one is looked at again, the whole ones are not.
        assert_eq!(
            sync.sync_new().unwrap(),
            Synced {
                complete: 0,
                incomplete: 1
            }
        );
        std::fs::write(blobs.join("300"), blob(1, &[9; 64])).unwrap();
        std::fs::remove_file(blobs.join("100")).unwrap();
        assert_eq!(
            sync.sync_new().unwrap(),
            Synced {
                complete: 1,
                incomplete: 0
            }
        );
        // A file removed and then one created under a name seen before
        // (sled never reuses an LSN, but the set must not grow stale).
        std::fs::write(blobs.join("100"), blob(2, b"again")).unwrap();
        assert_eq!(sync.sync_new().unwrap().complete, 1);
        assert_eq!(sync.sync_new().unwrap(), Synced::default());
    }

    #[test]
    fn an_unchanged_settled_directory_is_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("1"), blob(1, b"a")).unwrap();
        let past = SystemTime::now() - Duration::from_secs(10);
        let set_mtime = || File::open(&blobs).unwrap().set_modified(past).unwrap();
        set_mtime();
        let sync = BlobSync::new(dir.path());
        assert_eq!(sync.sync_new().unwrap().complete, 1);
        // A file whose creation left the mtime as it was is not seen: this
        // is the shortcut, which holds only for an mtime a tick in the past.
        std::fs::write(blobs.join("2"), blob(1, b"b")).unwrap();
        set_mtime();
        assert_eq!(sync.sync_new().unwrap(), Synced::default());
        // Once the mtime moves, it is.
        File::open(&blobs)
            .unwrap()
            .set_modified(past + Duration::from_secs(1))
            .unwrap();
        assert_eq!(sync.sync_new().unwrap().complete, 1);
    }

    #[test]
    fn files_there_at_open_are_written_out_once_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            BlobSync::adopt(dir.path()).unwrap().sync_new().unwrap(),
            Synced::default()
        );
        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("1"), blob(1, b"a")).unwrap();
        // Not read: garbage here would have been removed by sled's recovery.
        std::fs::write(blobs.join("2"), b"??").unwrap();
        let sync = BlobSync::adopt(dir.path()).unwrap();
        assert_eq!(sync.sync_new().unwrap(), Synced::default());
        std::fs::write(blobs.join("3"), blob(1, b"c")).unwrap();
        assert_eq!(sync.sync_new().unwrap().complete, 1);
    }

    #[test]
    fn the_log_file_is_synced_when_it_has_grown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), [0u8; 100]).unwrap();
        let log = LogGrowth::open(dir.path()).unwrap();
        assert!(!log.sync_if_grown().unwrap(), "synced at open");
        let mut f = File::options()
            .append(true)
            .open(dir.path().join("db"))
            .unwrap();
        std::io::Write::write_all(&mut f, &[1u8; 100]).unwrap();
        assert!(log.sync_if_grown().unwrap());
        assert!(!log.sync_if_grown().unwrap());
    }

    #[test]
    fn the_file_clock_is_never_ahead_of_file_times() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..100 {
            let before = file_clock();
            let path = dir.path().join(i.to_string());
            std::fs::write(&path, b"x").unwrap();
            let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
            assert!(mtime >= before, "{mtime:?} < {before:?}");
        }
    }
}
