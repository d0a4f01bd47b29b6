//! The load's workers: each runs operations one after another (or as they
//! fall due, open loop) and records their latencies and outcomes.

use crate::bench::ids::IdLog;
use crate::bench::options::ClientsOn;
use crate::bench::rng::Rng;
use crate::bench::target::{OpError, Target};
use crate::bench::workload::{
    self, pick, Fixture, OpKind, Outcome, Refundable, Settled, Tally, Workload,
};
use crate::check::Expect;
use crate::domain::ids::OrderId;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One worker's measurements.
pub(crate) struct WorkerOut {
    pub(crate) hists: Vec<Option<Histogram<u64>>>,
    pub(crate) ok: [u64; OpKind::ALL.len()],
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) requests: u64,
    /// Orders it saw paid, refunded, and asked a refund of with no answer.
    pub(crate) paid: IdLog,
    pub(crate) refunded: IdLog,
    pub(crate) refund_unknown: IdLog,
    pub(crate) last_done: Option<Instant>,
}

impl WorkerOut {
    fn new() -> WorkerOut {
        WorkerOut {
            hists: (0..OpKind::ALL.len()).map(|_| None).collect(),
            ok: [0; OpKind::ALL.len()],
            errors: BTreeMap::new(),
            requests: 0,
            paid: IdLog::default(),
            refunded: IdLog::default(),
            refund_unknown: IdLog::default(),
            last_done: None,
        }
    }

    fn record(&mut self, kind: OpKind, latency: Duration, result: &Result<(), OpError>) {
        let h = self.hists[kind.index()]
            .get_or_insert_with(|| Histogram::new(3).expect("3 significant digits is valid"));
        // Auto-resizing: `record` grows the histogram (`saturating_record` would clamp).
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = h.record(ns);
        match result {
            Ok(()) => {
                self.ok[kind.index()] += 1;
                self.requests += kind.requests();
            }
            Err(e) => {
                *self.errors.entry(e.code.clone()).or_default() += 1;
                // An order_pay whose payment failed still made two requests.
                self.requests += if kind == OpKind::OrderPay && !is_place_error(e) {
                    2
                } else {
                    1
                };
            }
        }
    }
}

pub(crate) fn is_place_error(e: &OpError) -> bool {
    matches!(
        e.code.as_str(),
        "OUT_OF_STOCK" | "PRODUCT_NOT_FOUND" | "USER_NOT_FOUND" | "INVALID_REQUEST"
    )
}

/// What the workers saw of the orders they paid: each worker refunds
/// only orders it paid, so its refunded ids leave its paid ones.
pub(crate) fn settled_orders(outs: &[WorkerOut]) -> Vec<(OrderId, Expect)> {
    let mut all = Vec::new();
    for o in outs {
        let refunded: HashSet<OrderId> = o.refunded.iter().collect();
        let unknown: HashSet<OrderId> = o.refund_unknown.iter().collect();
        let paid = o.paid.iter();
        let paid = paid.filter(|id| !refunded.contains(id) && !unknown.contains(id));
        all.extend(paid.map(|id| (id, Expect::PAID)));
        all.extend(refunded.into_iter().map(|id| (id, Expect::REFUNDED)));
        all.extend(unknown.into_iter().map(|id| (id, Expect::PAID_OR_REFUNDED)));
    }
    all
}

/// What every worker shares during a run.
pub(crate) struct Run {
    pub(crate) target: Target,
    pub(crate) fixture: Fixture,
    pub(crate) tally: Tally,
    pub(crate) workload: Workload,
    pub(crate) concurrency: u64,
    pub(crate) start: Instant,
    pub(crate) measure_from: Instant,
    pub(crate) end: Instant,
    /// Nanoseconds between due times (open loop).
    pub(crate) interval_ns: Option<f64>,
    pub(crate) completed: AtomicU64,
    pub(crate) exhausted: AtomicBool,
}

pub(crate) async fn worker(run: Arc<Run>, index: u64, seed: u64) -> WorkerOut {
    let mut rng = Rng::stream(seed, index);
    let mut out = WorkerOut::new();
    let mut refundable = Refundable::default();
    let mut sent: u64 = 0;
    // Over HTTP, a server taken for gone ends the run: no more attempts.
    while !run.exhausted.load(Ordering::Relaxed) && !run.target.is_gone() {
        let due = match run.interval_ns {
            Some(ns) => {
                let slot = index + sent * run.concurrency;
                run.start + Duration::from_nanos((slot as f64 * ns) as u64)
            }
            None => Instant::now(),
        };
        sent += 1;
        if due >= run.end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let kind = pick(run.workload, &mut rng);
        let outcome = workload::execute(
            &run.target,
            &run.fixture,
            &run.tally,
            run.workload,
            kind,
            &mut rng,
            &mut refundable,
        )
        .await;
        let Outcome::Done {
            kind,
            result,
            settled,
        } = outcome
        else {
            run.exhausted.store(true, Ordering::Relaxed);
            break;
        };

        let done = Instant::now();
        match settled {
            Some(Settled::Paid(id)) => out.paid.push(id),
            Some(Settled::Refunded(id)) => out.refunded.push(id),
            Some(Settled::RefundUnknown(id)) => out.refund_unknown.push(id),
            None => {}
        }
        if due >= run.measure_from {
            out.record(kind, done - due, &result);
            out.last_done = Some(done);
        }
        run.completed.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// A run's workers, on the bench's runtime or on the engine's threads.
pub(crate) enum Workers {
    Own(Vec<tokio::task::JoinHandle<WorkerOut>>),
    /// One batch of workers per engine thread, each sending back its
    /// results once; the channel closes when every batch has ended (or
    /// been dropped by a panic).
    Engine {
        results: tokio::sync::mpsc::UnboundedReceiver<Vec<WorkerOut>>,
        batches: usize,
    },
}

impl Workers {
    /// Starts `run.concurrency` workers, worker `i` on engine thread
    /// `i % threads` when they go on the engine's threads.
    pub(crate) fn spawn(
        run: &Arc<Run>,
        on: ClientsOn,
        seed: u64,
    ) -> Result<Workers, crate::CliError> {
        let engine = match (&run.target, on) {
            (Target::Embedded(engine), ClientsOn::Engine) => engine,
            _ => {
                return Ok(Workers::Own(
                    (0..run.concurrency)
                        .map(|i| tokio::spawn(worker(run.clone(), i, seed)))
                        .collect(),
                ))
            }
        };
        let threads = engine.engine_threads().max(1);
        let (tx, results) = tokio::sync::mpsc::unbounded_channel();
        engine
            .spawn_on_engine_threads(|t| {
                let (run, tx) = (run.clone(), tx.clone());
                async move {
                    // Polled as each is woken, not all on every wake-up.
                    let batch: FuturesUnordered<_> = (t as u64..run.concurrency)
                        .step_by(threads)
                        .map(|i| worker(run.clone(), i, seed))
                        .collect();
                    let _ = tx.send(batch.collect().await);
                }
            })
            .map_err(|e| format!("starting the workers on the engine's threads: {e}"))?;
        Ok(Workers::Engine {
            results,
            batches: threads,
        })
    }

    pub(crate) fn finished(&self) -> bool {
        match self {
            Workers::Own(handles) => handles.iter().all(|h| h.is_finished()),
            Workers::Engine { results, .. } => results.is_closed(),
        }
    }

    pub(crate) async fn join(self) -> Result<Vec<WorkerOut>, crate::CliError> {
        let mut outs = Vec::new();
        match self {
            Workers::Own(handles) => {
                for h in handles {
                    outs.push(h.await?);
                }
            }
            Workers::Engine {
                mut results,
                batches,
            } => {
                let mut ended = 0;
                while let Some(batch) = results.recv().await {
                    outs.extend(batch);
                    ended += 1;
                }
                if ended < batches {
                    return Err("workers on an engine thread stopped early".into());
                }
            }
        }
        Ok(outs)
    }
}
