//! The HTTP sink: batches of events as JSON arrays, up to
//! [`REQUESTS_IN_FLIGHT_MAX`] requests in flight.
//!
//! Events go out in the order they were read, in batches of up to
//! `batch_events_max`. A retryable failure (5xx, 408, 429, timeout,
//! connection) puts its batch back in front and backs off: until a request
//! succeeds again, one request at a time probes the sink, after a delay
//! that doubles per failure up to the cap. A refusal (another 4xx) splits
//! the batch in halves, each sent again at once, until the refused events
//! are alone; an event refused alone waits its own backoff (by its refusal
//! count) outside the batches, so it holds up nothing, and after
//! `refusals_max` refusals it becomes a dead letter. Refusal counts live in
//! memory: a restart gives a refused event its full count again.
//!
//! Blocks whose events are all settled are settled in the store together,
//! once [`SETTLE_BLOCKS`] are done or the oldest has waited
//! [`SETTLE_LINGER_MS`]: each settlement is one sled batch, which holds
//! sled's write lock (and so the journal's next append) while it applies.

use crate::engine::delivery::window::{EventRef, Window};
use crate::engine::delivery::{Common, PAUSE_POLL_MS, REQUESTS_IN_FLIGHT_MAX};
use crate::store::outbox::BlockKey;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::time::{Duration, Instant};

/// Done blocks settled together at most.
const SETTLE_BLOCKS: usize = 64;
/// A done block waits at most this long for others to be settled with.
const SETTLE_LINGER_MS: u64 = 20;

/// What became of one request.
#[derive(Debug)]
pub(super) enum Outcome {
    Accepted,
    /// Worth sending again as it is.
    Retry(String),
    /// Refused: the batch holds an event the sink does not take.
    Refused(String),
}

fn classify(status: reqwest::StatusCode) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        Outcome::Accepted
    } else if status.is_client_error() && code != 408 && code != 429 {
        Outcome::Refused(format!("the data platform answered {status}"))
    } else {
        Outcome::Retry(format!("the data platform answered {status}"))
    }
}

async fn post(client: reqwest::Client, url: Arc<str>, body: Vec<u8>) -> Outcome {
    let sent = client
        .post(&*url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => classify(response.status()),
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

type InFlight = Pin<Box<dyn Future<Output = (Vec<EventRef>, Outcome)> + Send>>;

/// Where batches go: POSTed as JSON arrays, or published to a JetStream
/// subject one message per event ([`super::nats`]).
pub(super) enum Transport {
    Http {
        client: reqwest::Client,
        url: Arc<str>,
    },
    Nats {
        js: Box<async_nats::jetstream::Context>,
        subject: Arc<str>,
    },
}

/// Events waiting to go: batches put back (in front) and events not yet batched.
#[derive(Default)]
struct Queue {
    batches: VecDeque<Vec<EventRef>>,
    unsent: VecDeque<EventRef>,
}

impl Queue {
    fn next(&mut self, size: usize) -> Option<Vec<EventRef>> {
        if let Some(b) = self.batches.pop_front() {
            return Some(b);
        }
        if self.unsent.is_empty() {
            return None;
        }
        let n = size.min(self.unsent.len());
        Some(self.unsent.drain(..n).collect())
    }
}

struct HttpSink {
    c: Common,
    transport: Transport,
    window: Window,
    queue: Queue,
    in_flight: FuturesUnordered<InFlight>,
    /// Retryable failures in a row; while above 0, one request at a time.
    failures: u32,
    resume_at: Option<Instant>,
    /// Events refused alone, with their refusals and last error.
    refused: HashMap<EventRef, (u32, String)>,
    /// Refused events waiting to be sent again alone, and when.
    waiting: Vec<(Instant, EventRef)>,
    /// When the done blocks are settled (set when the first is done, or
    /// after a settlement failed).
    settle_at: Option<Instant>,
    settle_failures: u32,
    /// A store read failed: try again then.
    refill_at: Option<Instant>,
}

pub(super) async fn run(c: Common, url: String) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(c.config.request_timeout_ms))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "data platform: no HTTP client; nothing is delivered");
            return;
        }
    };
    let transport = Transport::Http {
        client,
        url: url.into(),
    };
    run_with(c, transport).await;
}

/// The sink's loop over `transport`.
pub(super) async fn run_with(c: Common, transport: Transport) {
    let window = Window::new(c.config.window_events_max, c.stats.clone());
    let mut sink = HttpSink {
        c,
        transport,
        window,
        queue: Queue::default(),
        in_flight: FuturesUnordered::new(),
        failures: 0,
        resume_at: None,
        refused: HashMap::new(),
        waiting: Vec::new(),
        settle_at: None,
        settle_failures: 0,
        refill_at: None,
    };
    sink.run().await;
}

impl HttpSink {
    async fn run(&mut self) {
        while !self.c.stop.asked() {
            let paused = self.c.paused();
            if !paused {
                self.refill();
                self.release_waiting();
                self.launch();
                self.settle_if_due(false);
            }
            let wake = if paused {
                Some(Instant::now() + Duration::from_millis(PAUSE_POLL_MS))
            } else {
                self.next_wake()
            };
            let listen = !paused && self.window.has_room() && self.refill_at.is_none();
            tokio::select! {
                _ = self.c.stop.signal.notified() => {}
                Some((batch, outcome)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.settle_outcome(batch, outcome);
                }
                _ = self.c.live.added_signal.notified(), if listen => {}
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
        }
        // Whatever is in flight is dropped: those events stay in the outbox.
        self.in_flight.clear();
        if !self.c.journal.is_poisoned() {
            self.settle_if_due(true);
        }
    }

    fn refill(&mut self) {
        if self.refill_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.refill_at = None;
        match self.window.refill(&*self.c.store) {
            Ok(read) => self.queue.unsent.extend(read),
            Err(e) => {
                tracing::error!(error = %e, "data platform: reading the outbox failed");
                self.c.stats.failed();
                self.refill_at = Some(Instant::now() + self.c.config.backoff(2));
            }
        }
    }

    /// Refused events whose wait is over go again, alone, in front.
    fn release_waiting(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].0 <= now {
                let (_, r) = self.waiting.swap_remove(i);
                self.queue.batches.push_front(vec![r]);
            } else {
                i += 1;
            }
        }
    }

    fn launch(&mut self) {
        if self.resume_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.resume_at = None;
        let limit = if self.failures > 0 {
            1
        } else {
            REQUESTS_IN_FLIGHT_MAX
        };
        while self.in_flight.len() < limit {
            let Some(batch) = self.queue.next(self.c.config.batch_events_max) else {
                break;
            };
            let mut sent = Vec::with_capacity(batch.len());
            let mut events = Vec::with_capacity(batch.len());
            for r in batch {
                // An event settled meanwhile (a retry of one accepted) is not sent again.
                let Some(event) = self.window.event(r) else {
                    continue;
                };
                events.push(event);
                sent.push(r);
            }
            if sent.is_empty() {
                continue;
            }
            let request: InFlight = match &self.transport {
                Transport::Http { client, url } => {
                    let mut body = Vec::with_capacity(events.len() * 512 + 2);
                    body.push(b'[');
                    for (i, event) in events.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        event.write_json(&mut body);
                    }
                    body.push(b']');
                    let (client, url) = (client.clone(), url.clone());
                    Box::pin(async move { (sent, post(client, url, body).await) })
                }
                Transport::Nats { js, subject } => {
                    let messages = events
                        .iter()
                        .map(|event| {
                            let mut json = Vec::with_capacity(512);
                            event.write_json(&mut json);
                            (event.event_id(), json)
                        })
                        .collect();
                    let (js, subject) = ((**js).clone(), subject.clone());
                    Box::pin(
                        async move { (sent, super::nats::publish(js, subject, messages).await) },
                    )
                }
            };
            self.in_flight.push(request);
        }
    }

    fn settle_outcome(&mut self, batch: Vec<EventRef>, outcome: Outcome) {
        match outcome {
            Outcome::Accepted => {
                self.failures = 0;
                for r in batch {
                    self.refused.remove(&r);
                    self.window.accept(r);
                }
                self.settle_at.get_or_insert_with(|| {
                    Instant::now() + Duration::from_millis(SETTLE_LINGER_MS)
                });
            }
            Outcome::Retry(error) => {
                self.c.stats.failed();
                self.failures = self.failures.saturating_add(1);
                let wait = self.c.config.backoff(self.failures);
                tracing::warn!(error = %error, events = batch.len(), retry_in_ms = wait.as_millis() as u64, "data platform delivery failed");
                self.resume_at = Some(Instant::now() + wait);
                self.queue.batches.push_front(batch);
            }
            Outcome::Refused(error) => {
                self.c.stats.failed();
                self.refused_batch(batch, error);
            }
        }
    }

    /// Splits a refused batch, or counts a refusal of an event alone.
    fn refused_batch(&mut self, mut batch: Vec<EventRef>, error: String) {
        if batch.len() > 1 {
            let second = batch.split_off(batch.len() / 2);
            self.queue.batches.push_front(second);
            self.queue.batches.push_front(batch);
            return;
        }
        let Some(r) = batch.pop() else { return };
        let entry = self.refused.entry(r).or_insert((0, String::new()));
        entry.0 += 1;
        entry.1 = error;
        let (count, error) = entry.clone();
        if count >= self.c.config.refusals_max {
            self.refused.remove(&r);
            tracing::warn!(error = %error, refusals = count, event = ?self.window.event(r).map(|e| e.event_id()), "data platform: event refused too often; now a dead letter");
            self.window.dead(r, error, count, self.c.clock.now());
            self.settle_at
                .get_or_insert_with(|| Instant::now() + Duration::from_millis(SETTLE_LINGER_MS));
        } else {
            let at = Instant::now() + self.c.config.backoff(count);
            self.waiting.push((at, r));
        }
    }

    /// Settles the done blocks if enough are done, or the oldest has
    /// waited long enough (or `now`).
    fn settle_if_due(&mut self, now: bool) {
        let Some(at) = self.settle_at else { return };
        let done: Vec<BlockKey> = self.window.done();
        if done.is_empty() {
            self.settle_at = None;
            return;
        }
        if !now && done.len() < SETTLE_BLOCKS && Instant::now() < at {
            return;
        }
        let settled = self
            .window
            .settlement(&done, &self.c.live, 0)
            .and_then(|s| self.c.store.settle(&s).map(|()| s));
        match settled {
            Ok(s) => {
                self.c.settled(s.delivered, s.dead_lettered);
                self.window.remove(&done);
                self.settle_at = None;
                self.settle_failures = 0;
            }
            Err(e) => {
                // Accepted events are not sent again: the blocks stay,
                // settled in memory, until the store takes the settlement.
                self.c.stats.failed();
                self.settle_failures = self.settle_failures.saturating_add(1);
                let wait = self.c.config.backoff(self.settle_failures);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "data platform: settling delivered events failed");
                self.settle_at = Some(Instant::now() + wait);
            }
        }
    }

    /// The next moment something is due without a request answering.
    fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        let work_waits = !self.queue.batches.is_empty() || !self.queue.unsent.is_empty();
        if work_waits {
            consider(self.resume_at);
        }
        consider(self.waiting.iter().map(|w| w.0).min());
        consider(self.settle_at);
        consider(self.refill_at);
        wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_accepted_retried_or_refused_as_the_contract_says() {
        // proves 2xx accepts, 5xx/408/429 retry, any other 4xx refuses
        let kind = |code: u16| match classify(reqwest::StatusCode::from_u16(code).unwrap()) {
            Outcome::Accepted => "accepted",
            Outcome::Retry(_) => "retry",
            Outcome::Refused(_) => "refused",
        };
        for (code, expected) in [
            (200, "accepted"),
            (202, "accepted"),
            (204, "accepted"),
            (400, "refused"),
            (404, "refused"),
            (413, "refused"),
            (422, "refused"),
            (408, "retry"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
            (302, "retry"),
        ] {
            assert_eq!(kind(code), expected, "{code}");
        }
    }

    #[test]
    fn a_queue_sends_batches_put_back_first_then_new_events_by_size() {
        // proves put-back batches keep their shape and new events are cut to the batch size
        let r = |i| EventRef {
            block: BlockKey {
                space: crate::store::outbox::Space::Journal,
                id: 1,
            },
            index: i,
        };
        let mut q = Queue::default();
        q.unsent.extend((0..5).map(r));
        q.batches.push_back(vec![r(9)]);
        assert_eq!(q.next(2), Some(vec![r(9)]));
        assert_eq!(q.next(2), Some(vec![r(0), r(1)]));
        assert_eq!(q.next(2), Some(vec![r(2), r(3)]));
        assert_eq!(q.next(2), Some(vec![r(4)]));
        assert_eq!(q.next(2), None);
    }
}
