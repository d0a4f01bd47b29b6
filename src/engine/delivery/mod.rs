//! Delivery of the outbox's events to the data platform, at least once,
//! with a stable `event_id`, across restarts (the outbox is on disk:
//! [`crate::store::outbox`]).
//!
//! One thread of its own runs a tokio runtime: it reads blocks of the
//! outbox into a bounded [`window`], hands their events to the sink, and
//! settles each block in the store once every event of it is accepted or
//! dead-lettered. Two sinks:
//!
//! - [`http`]: POST bodies that are JSON arrays of up to
//!   `data_platform_batch` events, up to [`REQUESTS_IN_FLIGHT_MAX`] at once.
//!   A 2xx accepts a batch; a 5xx, 408, 429, timeout or connection error is
//!   retried with backoff (doubling, capped); another 4xx splits the batch
//!   in halves until the refused events are alone, and an event refused
//!   `data_platform_max_refusals` times becomes a dead letter.
//! - [`nats`]: the same batches published to a JetStream subject, one
//!   message per event with `Nats-Msg-Id` = `event_id`, each batch
//!   accepted once every message of it is acknowledged by the stream.
//! - [`file`]: JSON lines appended to a file, each event once: the file's
//!   length is recorded (durably) with the removal of the blocks written,
//!   and every write starts at the recorded length, so lines written but
//!   not recorded before a failure or a crash are written again over.
//!
//! While the journal is poisoned (storage failing), delivery pauses: it
//! starts no request, and neither reads nor settles blocks. Stopping
//! drops whatever is in flight at once: those events are still in the
//! outbox and go again next time.

pub mod admin;
mod file;
mod http;
pub mod nats;
pub mod window;

use crate::domain::ids::OrderId;
use crate::domain::platform::order_paid_id;
use crate::engine::clock::Clock;
use crate::engine::config::DataPlatform;
use crate::store::outbox::{OutboxLive, OutboxStore};
use crate::store::writer::JournalHandle;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// HTTP requests in flight at most (`API.md`).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 8;

/// The stable id of a paid order's event: `order-paid-<order id>`.
pub fn event_id(order_id: OrderId) -> String {
    order_paid_id(order_id)
}

/// How delivery goes, units in the names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Events per HTTP request at most.
    pub batch_events_max: usize,
    /// Refusals (4xx, alone) after which an event becomes a dead letter.
    pub refusals_max: u32,
    /// First retry delay; doubles after each failure up to the max.
    pub backoff_ms_min: u64,
    pub backoff_ms_max: u64,
    /// An HTTP request not answered by then failed (and is retried).
    pub request_timeout_ms: u64,
    /// Unsettled events held in memory at most (plus one block).
    pub window_events_max: usize,
}

impl DeliveryConfig {
    /// The backoff after `failures` failures in a row (1 or more).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        let ms = self
            .backoff_ms_min
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_ms_max);
        Duration::from_millis(ms)
    }
}

/// What delivery is doing, for gauges and tests.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Events held in memory now (the window's unsettled events).
    events_in_memory: AtomicU64,
    /// The most held at once since start.
    events_in_memory_max: AtomicU64,
    /// Delivery is paused because storage is failing.
    paused: AtomicBool,
    /// Times delivery found itself paused (it looks again every
    /// [`PAUSE_POLL_MS`] until storage works).
    pause_checks: AtomicU64,
    /// Failed attempts (a request refused or failed, a file write or a
    /// settlement that failed).
    failures: AtomicU64,
}

/// How often a paused delivery looks whether storage works again.
pub const PAUSE_POLL_MS: u64 = 100;

impl DeliveryStats {
    pub(crate) fn held(&self, events: usize) {
        let events = events as u64;
        self.events_in_memory.store(events, Ordering::Relaxed);
        self.events_in_memory_max
            .fetch_max(events, Ordering::Relaxed);
    }

    pub fn events_in_memory(&self) -> u64 {
        self.events_in_memory.load(Ordering::Relaxed)
    }

    pub fn events_in_memory_max(&self) -> u64 {
        self.events_in_memory_max.load(Ordering::Relaxed)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub fn pause_checks(&self) -> u64 {
        self.pause_checks.load(Ordering::SeqCst)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Asks the delivery thread to stop, and wakes it.
#[derive(Default)]
struct Stop {
    asked: AtomicBool,
    signal: tokio::sync::Notify,
}

impl Stop {
    fn asked(&self) -> bool {
        self.asked.load(Ordering::SeqCst)
    }
}

/// What both sinks share.
struct Common {
    store: Arc<dyn OutboxStore>,
    live: Arc<OutboxLive>,
    stats: Arc<DeliveryStats>,
    journal: JournalHandle,
    clock: Arc<dyn Clock>,
    config: DeliveryConfig,
    stop: Arc<Stop>,
}

impl Common {
    /// Whether to pause: storage is failing (the journal is poisoned).
    fn paused(&self) -> bool {
        let paused = self.journal.is_poisoned();
        self.stats.paused.store(paused, Ordering::SeqCst);
        if paused {
            self.stats.pause_checks.fetch_add(1, Ordering::SeqCst);
        }
        paused
    }

    /// Sleeps `d`, or less if asked to stop.
    async fn sleep(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.signal.notified() => {}
        }
    }

    /// Blocks were settled in the store with these totals.
    fn settled(&self, delivered: u64, dead_lettered: u64) {
        self.live.settled(delivered, dead_lettered);
    }
}

pub struct Delivery {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

pub struct DeliverySetup {
    pub platform: DataPlatform,
    pub store: Arc<dyn OutboxStore>,
    pub live: Arc<OutboxLive>,
    pub stats: Arc<DeliveryStats>,
    pub journal: JournalHandle,
    pub clock: Arc<dyn Clock>,
    pub config: DeliveryConfig,
    /// The file sink's length recorded with the last settled write.
    pub file_len: u64,
}

enum Sink {
    Http(String),
    Nats(nats::NatsTarget),
    File(PathBuf),
}

impl Delivery {
    /// Starts delivering, on its own thread; `None` when the platform is off.
    pub fn start(s: DeliverySetup) -> std::io::Result<Option<Delivery>> {
        let sink = match &s.platform {
            DataPlatform::Off => return Ok(None),
            DataPlatform::Http(url) => Sink::Http(url.clone()),
            DataPlatform::Nats(target) => Sink::Nats(target.clone()),
            DataPlatform::File(path) => Sink::File(path.clone()),
        };
        let stop = Arc::new(Stop::default());
        let common = Common {
            store: s.store,
            live: s.live,
            stats: s.stats,
            journal: s.journal,
            clock: s.clock,
            config: s.config,
            stop: stop.clone(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let file_len = s.file_len;
        let thread = std::thread::Builder::new()
            .name("data-platform".into())
            .spawn(move || match sink {
                Sink::Http(url) => rt.block_on(http::run(common, url)),
                Sink::Nats(target) => rt.block_on(async move {
                    let timeout = Duration::from_millis(common.config.request_timeout_ms);
                    match nats::connect(&target, timeout).await {
                        Ok(js) => {
                            let subject = target.subject.as_str().into();
                            let js = Box::new(js);
                            http::run_with(common, http::Transport::Nats { js, subject }).await
                        }
                        Err(e) => tracing::error!(error = %e, server = %target.server, "data platform: no NATS connection; nothing is delivered"),
                    }
                }),
                Sink::File(path) => rt.block_on(file::run(common, path, file_len)),
            })?;
        Ok(Some(Delivery {
            stop,
            thread: Some(thread),
        }))
    }

    /// Stops at once: requests in flight are dropped (their events stay in
    /// the outbox). Waits for the thread to end.
    pub fn stop(mut self) {
        self.stop.asked.store(true, Ordering::SeqCst);
        self.stop.signal.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_minimum_and_stops_at_the_cap() {
        // proves the retry schedule, including far past the cap without overflow
        let c = DeliveryConfig {
            batch_events_max: 500,
            refusals_max: 20,
            backoff_ms_min: 100,
            backoff_ms_max: 30_000,
            request_timeout_ms: 10_000,
            window_events_max: 16_384,
        };
        let ms = |n| c.backoff(n).as_millis() as u64;
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(9), ms(10)],
            [100, 200, 400, 25_600, 30_000]
        );
        assert_eq!(ms(1_000), 30_000);
        assert_eq!(ms(0), 100);
    }
}
