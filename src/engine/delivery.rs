//! Delivery of paid orders to the data platform, at least once, with a
//! stable `event_id`, retried with exponential backoff until the sink
//! accepts, across restarts (the outbox is durable: each `OrderPaid` record
//! is its own outbox entry until an `OutboxDelivered` record says otherwise).
//!
//! Sinks: HTTP POST of one JSON event per paid order; or JSON lines appended
//! to a file. The file sink writes each event once: on start it cuts the
//! file back to the length recorded with the last durable delivery, so lines
//! written but not recorded before a crash are written again exactly once.

use crate::domain::event::{Event, Record};
use crate::domain::ids::OrderId;
use crate::domain::order::Order;
use crate::engine::clock::Clock;
use crate::engine::config::DataPlatform;
use crate::store::outbox::PendingOutbox;
use crate::store::writer::JournalHandle;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Paid orders delivered per round at most.
const BATCH_ORDERS_MAX: usize = 4096;

/// After a round that was not full, wait this long for more paid orders:
/// each round costs a sink write (for the file sink an fsync, on the disk
/// the journal flushes to) and a journal record, so rounds of a few orders
/// at tens of thousands of payments a second cost more than they deliver.
const LINGER_MS: u64 = 25;

/// What the data platform receives for each paid order.
#[derive(Serialize)]
pub struct PaidOrderEvent<'a> {
    /// Stable across retries and restarts: `order-paid-<order id>`.
    pub event_id: String,
    pub event_type: &'static str,
    pub order: &'a Order,
}

impl<'a> PaidOrderEvent<'a> {
    pub fn new(order: &'a Order) -> Self {
        PaidOrderEvent {
            event_id: event_id(order.id),
            event_type: "order.paid",
            order,
        }
    }
}

pub fn event_id(order_id: OrderId) -> String {
    format!("order-paid-{order_id}")
}

enum Sink {
    Http {
        client: reqwest::Client,
        url: String,
    },
    File {
        path: PathBuf,
        /// Length after the last lines written.
        len: u64,
        /// Length recorded with the last durable delivery: lines past it
        /// are written again (over what is there) until they are recorded.
        recorded_len: u64,
    },
}

impl Sink {
    /// Delivers orders in order; returns how many were accepted and the file length after.
    async fn deliver(&mut self, orders: &[Order]) -> (usize, Option<u64>, Option<String>) {
        match self {
            Sink::Http { client, url } => {
                for (i, order) in orders.iter().enumerate() {
                    let sent = client
                        .post(url.as_str())
                        .json(&PaidOrderEvent::new(order))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => return (i, None, Some(format!("sink answered {}", r.status()))),
                        Err(e) => return (i, None, Some(e.to_string())),
                    }
                }
                (orders.len(), None, None)
            }
            Sink::File { path, len, .. } => match append_lines(path, *len, orders) {
                Ok(new_len) => {
                    *len = new_len;
                    (orders.len(), Some(new_len), None)
                }
                Err(e) => (0, None, Some(e.to_string())),
            },
        }
    }
}

impl Sink {
    /// The delivery just made is durable: the file is good up to here.
    fn recorded(&mut self) {
        if let Sink::File {
            len, recorded_len, ..
        } = self
        {
            *recorded_len = *len;
        }
    }

    /// The delivery just made could not be journaled: its orders stay
    /// pending, so the next try writes them again over the same lines.
    fn not_recorded(&mut self) {
        if let Sink::File {
            len, recorded_len, ..
        } = self
        {
            *len = *recorded_len;
        }
    }
}

fn append_lines(path: &PathBuf, len: u64, orders: &[Order]) -> std::io::Result<u64> {
    let mut buf = Vec::new();
    for order in orders {
        serde_json::to_writer(&mut buf, &PaidOrderEvent::new(order))?;
        buf.push(b'\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    file.set_len(len)?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(len))?;
    file.write_all(&buf)?;
    file.sync_data()?;
    Ok(len + buf.len() as u64)
}

pub struct Delivery {
    stop: Arc<AtomicBool>,
    outbox: Arc<PendingOutbox>,
    thread: Option<JoinHandle<()>>,
}

pub struct DeliverySetup {
    pub platform: DataPlatform,
    pub outbox: Arc<PendingOutbox>,
    pub journal: JournalHandle,
    pub clock: Arc<dyn Clock>,
    /// Length of the file sink recorded with the last durable delivery.
    pub sink_len: u64,
    pub backoff_ms_min: u64,
    pub backoff_ms_max: u64,
}

impl Delivery {
    /// Starts delivering, on its own thread; `None` when the platform is off.
    pub fn start(s: DeliverySetup) -> Option<Delivery> {
        let sink = match &s.platform {
            DataPlatform::Off => return None,
            DataPlatform::Http(url) => Sink::Http {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .ok()?,
                url: url.clone(),
            },
            DataPlatform::File(path) => Sink::File {
                path: path.clone(),
                len: s.sink_len,
                recorded_len: s.sink_len,
            },
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, outbox) = (stop.clone(), s.outbox.clone());
        let thread = std::thread::Builder::new()
            .name("data-platform".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("delivery runtime");
                rt.block_on(run(sink, s, stop2));
            })
            .ok()?;
        Some(Delivery {
            stop,
            outbox,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.outbox.notify.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(mut sink: Sink, s: DeliverySetup, stop: Arc<AtomicBool>) {
    let mut backoff_ms = s.backoff_ms_min;
    while !stop.load(Ordering::SeqCst) {
        let batch = s.outbox.peek(BATCH_ORDERS_MAX);
        if batch.is_empty() {
            let _ =
                tokio::time::timeout(Duration::from_millis(500), s.outbox.notify.notified()).await;
            continue;
        }
        let (accepted, sink_len, mut error) = sink.deliver(&batch).await;
        if accepted > 0 {
            let ids: Vec<OrderId> = batch[..accepted].iter().map(|o| o.id).collect();
            let record = Record::new(
                s.clock.now(),
                Event::OutboxDelivered {
                    order_ids: ids.clone(),
                    sink_len,
                },
            );
            let recorded = match s.journal.submit(record) {
                Ok(rx) => matches!(rx.await, Ok(Ok(_))),
                Err(_) => false,
            };
            if recorded {
                sink.recorded();
                s.outbox.remove(&ids);
                metrics::counter!("data_platform_delivered_total").increment(ids.len() as u64);
            } else {
                // Not recorded: the orders stay pending and go again, after
                // a backoff, and the file sink rewrites the same lines
                // rather than appending them a second time.
                sink.not_recorded();
                error.get_or_insert_with(|| "the delivery could not be journaled".into());
            }
        }
        match error {
            None => {
                backoff_ms = s.backoff_ms_min;
                if batch.len() < BATCH_ORDERS_MAX {
                    tokio::time::sleep(Duration::from_millis(LINGER_MS)).await;
                }
            }
            Some(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff_ms, "data platform delivery failed");
                metrics::counter!("data_platform_failures_total").increment(1);
                let wait = tokio::time::sleep(Duration::from_millis(backoff_ms));
                tokio::pin!(wait);
                // Wake early only to stop.
                while !stop.load(Ordering::SeqCst) {
                    tokio::select! {
                        _ = &mut wait => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
                backoff_ms = (backoff_ms * 2).min(s.backoff_ms_max);
            }
        }
    }
}
