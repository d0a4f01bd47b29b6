//! How an engine is set up. Limits live in [`Limits`]; units are in the names.

use crate::domain::limits::Limits;
use crate::engine::delivery::DeliveryConfig;
use crate::store::writer::JournalConfig;
use std::path::PathBuf;

/// Where the data platform's events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataPlatform {
    /// Nowhere: events stay in the outbox (tests that look at it).
    Off,
    /// POST batches of events, as JSON arrays, to this URL.
    Http(String),
    /// Publish each event to a NATS JetStream subject, `Nats-Msg-Id` = `event_id`.
    Nats(crate::engine::delivery::nats::NatsTarget),
    /// Append each event as a JSON line to this file.
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub limits: Limits,
    /// How long a pending order holds its stock.
    pub order_ttl_ms: u64,
    /// How often the best-seller ranking is refreshed.
    pub stats_interval_ms: u64,
    /// How often pending orders are checked for expiry.
    pub expiry_sweep_interval_ms: u64,
    /// Actor threads (one actix Arbiter each). Defaults to the core count.
    pub arbiter_count: usize,
    /// Whether the actor threads run tokio's I/O driver, which sockets served
    /// on them ([`Engine::spawn_on_engine_threads`], as `serve` does) need.
    /// Off, a thread parks on a futex instead of `epoll`, and waking it from
    /// another thread (an actor's answer, a journal acknowledgement) costs
    /// no system call while it is busy: with the driver, every such wake-up
    /// writes its eventfd (about 150,000 `write` calls per second in an
    /// embedded order_pay run at 256 in flight).
    ///
    /// [`Engine::spawn_on_engine_threads`]: crate::engine::Engine::spawn_on_engine_threads
    pub actor_threads_io: bool,
    pub journal: JournalConfig,
    pub data_platform: DataPlatform,
    /// Events per request to the data platform at most (1..=10,000).
    pub data_platform_batch: usize,
    /// Refusals after which an event becomes a dead letter (at least 1).
    pub data_platform_max_refusals: u32,
    /// A request to the data platform not answered by then failed.
    pub data_platform_request_timeout_ms: u64,
    /// Undelivered events delivery holds in memory at most (plus one
    /// outbox block); the rest of a backlog waits on disk.
    pub data_platform_window_events: usize,
    /// First retry delay of a failed delivery; doubles up to `delivery_backoff_ms_max`.
    pub delivery_backoff_ms_min: u64,
    pub delivery_backoff_ms_max: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::API,
            order_ttl_ms: 600_000,
            stats_interval_ms: 10_000,
            expiry_sweep_interval_ms: 1_000,
            arbiter_count: std::thread::available_parallelism().map_or(2, |n| n.get()),
            actor_threads_io: false,
            journal: JournalConfig::default(),
            data_platform: DataPlatform::Off,
            data_platform_batch: 500,
            data_platform_max_refusals: 20,
            data_platform_request_timeout_ms: 10_000,
            // 8 requests of 500 in flight, and as many again ready behind them.
            data_platform_window_events: 16_384,
            delivery_backoff_ms_min: 100,
            delivery_backoff_ms_max: 30_000,
        }
    }
}

impl EngineConfig {
    /// How delivery goes, from these settings (batch and refusals kept in range).
    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            batch_events_max: self.data_platform_batch.clamp(1, 10_000),
            refusals_max: self.data_platform_max_refusals.max(1),
            backoff_ms_min: self.delivery_backoff_ms_min.max(1),
            backoff_ms_max: self
                .delivery_backoff_ms_max
                .max(self.delivery_backoff_ms_min.max(1)),
            request_timeout_ms: self.data_platform_request_timeout_ms.max(1),
            window_events_max: self.data_platform_window_events.max(1),
        }
    }
}
