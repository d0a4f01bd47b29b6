//! Whether a server still answers, so a bench against one that is gone
//! stops instead of hammering a dead address.

use crate::bench::http_client::ExchangeError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

/// Attempts in a row that could not reach the server (refused, reset, cut
/// off or unanswered within the timeout) after which it is taken for gone...
pub const UNREACHABLE_ATTEMPTS: u64 = 200;
/// ...or the time from the first such attempt with no answer since.
pub const UNREACHABLE_MS: u64 = 3_000;

/// Whether the server still answers. Any answer, whatever its status,
/// resets the count; once gone, the target stays gone and every call fails
/// at once with `UNREACHABLE`, so the bench stops instead of hammering a
/// dead address.
pub(super) struct Reach {
    base: Instant,
    failed_in_row: AtomicU64,
    /// Milliseconds after `base`, plus one, of the first failure of the
    /// current row; 0 while the server answers.
    failing_since: AtomicU64,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) gone: OnceLock<String>,
}

impl Reach {
    pub(super) fn new() -> Reach {
        Reach {
            base: Instant::now(),
            failed_in_row: AtomicU64::new(0),
            failing_since: AtomicU64::new(0),
            last_error: Mutex::new(None),
            gone: OnceLock::new(),
        }
    }

    pub(super) fn answered(&self) {
        if self.failed_in_row.load(Ordering::Relaxed) != 0 {
            self.failed_in_row.store(0, Ordering::Relaxed);
            self.failing_since.store(0, Ordering::Relaxed);
        }
    }

    pub(super) fn failed(&self, url: &str, error: &ExchangeError) {
        let text = match error {
            ExchangeError::Timeout => "no answer within the request timeout".to_owned(),
            ExchangeError::Transport(e) => e.to_string(),
        };
        let in_row = self.failed_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let _ =
            self.failing_since
                .compare_exchange(0, now_ms, Ordering::Relaxed, Ordering::Relaxed);
        let since = self.failing_since.load(Ordering::Relaxed);
        let failing_ms = now_ms.saturating_sub(since.max(1));
        if in_row >= UNREACHABLE_ATTEMPTS || (since != 0 && failing_ms >= UNREACHABLE_MS) {
            self.gone.get_or_init(|| {
                format!(
                    "the server at {url} is unreachable: {in_row} attempts in a row over {:.1} s \
                     could not reach it (last: {text})",
                    failing_ms as f64 / 1e3
                )
            });
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(text);
    }
}
