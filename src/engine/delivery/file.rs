//! The file sink: JSON lines appended to a file, each event once.
//!
//! Each round writes every event of the window at the recorded length
//! (cutting off whatever lies past it), syncs the file, then settles the
//! blocks with the new length in one atomic write, flushed. A round that
//! fails anywhere leaves the recorded length where it was: the next one
//! writes the same lines over the same place. At start the file is cut
//! back to the recorded length, so lines a crash left unrecorded are
//! written again exactly once. Rounds that were not full wait
//! [`LINGER_MS`] for more events: each costs an fsync and a flush.

use crate::engine::delivery::window::Window;
use crate::engine::delivery::{Common, PAUSE_POLL_MS};
use crate::store::outbox::{BlockKey, Settlement};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// After a round that was not full, wait this long for more events.
const LINGER_MS: u64 = 25;

/// Writes `bytes` at `len` (dropping what lies after it) and syncs the
/// file; answers the new length.
fn write_at(path: &Path, len: u64, bytes: &[u8]) -> std::io::Result<u64> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    file.set_len(len)?;
    file.seek(SeekFrom::Start(len))?;
    file.write_all(bytes)?;
    file.sync_data()?;
    Ok(len + bytes.len() as u64)
}

/// Cuts the file back to `recorded` at start. A file shorter than that
/// (cut by someone else) is left as it is: writing goes on at its end.
fn cut_back(path: &Path, recorded: u64) -> std::io::Result<u64> {
    let file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len < recorded {
        tracing::error!(
            path = %path.display(), len, recorded,
            "data platform file is shorter than recorded; writing goes on at its end"
        );
        return Ok(len);
    }
    if len > recorded {
        file.set_len(recorded)?;
        file.sync_data()?;
    }
    Ok(recorded)
}

pub(super) async fn run(c: Common, path: PathBuf, recorded: u64) {
    let Some(mut len) = cut_back_until_done(&c, &path, recorded).await else {
        return;
    };
    let mut window = Window::new(c.config.window_events_max, c.stats.clone());
    let mut failures: u32 = 0;
    let mut lines = Vec::new();
    while !c.stop.asked() {
        if c.paused() {
            c.sleep(Duration::from_millis(PAUSE_POLL_MS)).await;
            continue;
        }
        if let Err(e) = window.refill(&*c.store) {
            tracing::error!(error = %e, "data platform: reading the outbox failed");
            c.stats.failed();
            failures = failures.saturating_add(1);
            c.sleep(c.config.backoff(failures)).await;
            continue;
        }
        if window.is_empty() {
            tokio::select! {
                _ = c.stop.signal.notified() => {}
                _ = c.live.added_signal.notified() => {}
            }
            continue;
        }
        let full = !window.has_room();
        let blocks = window.all();
        match write_round(&c, &path, len, &window, &blocks, &mut lines) {
            Ok((new_len, s)) => {
                len = new_len;
                c.settled(s.delivered, s.dead_lettered);
                window.remove(&blocks);
                failures = 0;
                if !full {
                    c.sleep(Duration::from_millis(LINGER_MS)).await;
                }
            }
            Err(e) => {
                // Not recorded: the same lines go again at the same place.
                c.stats.failed();
                failures = failures.saturating_add(1);
                let wait = c.config.backoff(failures);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "data platform file write failed");
                c.sleep(wait).await;
            }
        }
    }
}

/// [`cut_back`], tried again after each failure until it is done: the
/// length writing goes on at. `None` if stopping was asked meanwhile.
async fn cut_back_until_done(c: &Common, path: &Path, recorded: u64) -> Option<u64> {
    loop {
        match cut_back(path, recorded) {
            Ok(len) => return Some(len),
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "data platform file cannot be opened");
                c.stats.failed();
                c.sleep(Duration::from_millis(c.config.backoff_ms_max))
                    .await;
                if c.stop.asked() {
                    return None;
                }
            }
        }
    }
}

/// One round: every event of `blocks` as a JSON line (in `lines`, reused)
/// written at `len`, then the blocks settled with the new length, flushed.
/// Returns the new length and the settlement.
fn write_round(
    c: &Common,
    path: &Path,
    len: u64,
    window: &Window,
    blocks: &[BlockKey],
    lines: &mut Vec<u8>,
) -> Result<(u64, Settlement), String> {
    lines.clear();
    let mut events = 0u64;
    for event in window.open_events(blocks) {
        event.write_json(lines);
        lines.push(b'\n');
        events += 1;
    }
    let new_len = write_at(path, len, lines).map_err(|e| e.to_string())?;
    let mut s = window
        .settlement(blocks, &c.live, events)
        .map_err(|e| e.to_string())?;
    s.file_len = Some(new_len);
    s.flush = true;
    c.store.settle(&s).map_err(|e| e.to_string())?;
    Ok((new_len, s))
}
