//! What a run measured: per operation kind, throughput and latency
//! percentiles (hdrhistogram, nanoseconds, 3 significant digits), errors
//! by code, and the invariant check. Printed as a table or as JSON.

use crate::bench::workload::{OpKind, Workload};
use crate::bench::ClientsOn;
use crate::store::writer::Step;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Latency percentiles in milliseconds (floats are fine here: this is time, not money).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencyMs {
    pub fn of(h: &Histogram<u64>) -> LatencyMs {
        let ms = |ns: u64| ns as f64 / 1e6;
        if h.is_empty() {
            return LatencyMs::default();
        }
        LatencyMs {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1e6,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct KindReport {
    pub kind: &'static str,
    /// Operations started in the measured window and finished.
    pub ops: u64,
    pub ok: u64,
    pub ops_per_sec: f64,
    pub ok_per_sec: f64,
    pub latency_ms: LatencyMs,
}

impl KindReport {
    pub fn new(kind: &'static str, h: &Histogram<u64>, ok: u64, secs: f64) -> KindReport {
        let ops = h.len();
        KindReport {
            kind,
            ops,
            ok,
            ops_per_sec: ops as f64 / secs,
            ok_per_sec: ok as f64 / secs,
            latency_ms: LatencyMs::of(h),
        }
    }
}

/// The journal's group commit over the measured window (embedded only).
#[derive(Clone, Debug, Default, Serialize)]
pub struct JournalReport {
    pub records: u64,
    pub batches: u64,
    pub records_per_batch: f64,
    pub records_per_sec: f64,
    pub flushes_per_sec: f64,
    /// The writer thread's time in the window by step (`Step::name`), in % of the window.
    pub writer_percent: BTreeMap<&'static str, f64>,
    /// Writing and flushing, per batch (µs).
    pub write_us_per_batch: f64,
}

/// What this process used over the measured window: embedded, the engine
/// and the load generator together; with `--url`, the load generator alone.
/// CPU per operation moves less with the machine's other tenants than
/// throughput does, so it compares builds in fewer runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessReport {
    /// CPU time in % of one core (200 is two cores busy).
    pub cpu_percent: f64,
    /// The part of it in the kernel, in % of one core.
    pub system_percent: f64,
    /// CPU time per operation finished in the window (µs; an order_pay
    /// operation is a place and its payment).
    pub cpu_us_per_op: f64,
    /// That CPU time by family of threads (a thread name without its
    /// number: `sled-io`, `actors`, `journal-writer`), in µs per operation
    /// (Linux; empty elsewhere). Threads that ended within the window are
    /// not counted, so the families may sum to a little less.
    pub cpu_us_per_op_by_thread: BTreeMap<String, f64>,
    /// Bytes sent to storage (Linux), per second...
    pub storage_write_mib_per_sec: Option<f64>,
    /// ...and per journal record (embedded).
    pub storage_write_bytes_per_record: Option<f64>,
}

/// One second of the run (warm-up included): throughput and resident memory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Second {
    /// Since the warm-up began.
    pub at_secs: f64,
    pub ops_per_sec: f64,
    /// This process's resident memory.
    pub rss_mib: Option<f64>,
    /// With `--url`: the server's, from its `/metrics`
    /// (`process_resident_memory_bytes`), when it says.
    pub server_rss_mib: Option<f64>,
    /// Embedded: the data platform's backlog (events pending).
    pub backlog: Option<u64>,
}

/// The data platform over the measured window (embedded).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DataPlatformReport {
    /// `file`, `http` or `off`.
    pub sink: &'static str,
    /// Events the data platform accepted in the window, per second.
    pub delivered_per_sec: f64,
    /// Events added to the outbox in the window (paid orders), per second.
    pub added_per_sec: f64,
    /// Events pending when the window began and when it ended.
    pub backlog_at_start: u64,
    pub backlog_at_end: u64,
    /// The most events delivery held in memory at once since start.
    pub events_in_memory_max: u64,
    /// Failed delivery attempts in the window.
    pub failures: u64,
    /// `http`: events the bench's sink accepted, and requests it refused
    /// while down, since start.
    pub sink_events: Option<u64>,
    pub sink_refused: Option<u64>,
}

/// Whether resident memory stayed flat over a long run: the lowest RSS
/// of the measured window's seconds 60–90 against the lowest of its last
/// 30 s. Lowest, because snapshots add short-lived teeth; from 60 s on,
/// because caches and pools fill first. The server's RSS over HTTP, this
/// process's embedded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RssDrift {
    /// `server` or `bench` (this process, engine included when embedded).
    pub of: &'static str,
    pub early_lowest_mib: f64,
    pub late_lowest_mib: f64,
    /// `late / early - 1`, in percent.
    pub change_percent: f64,
}

impl RssDrift {
    /// Measured windows shorter than this have no drift reported.
    pub const MIN_MEASURED_SECS: f64 = 120.0;

    /// From a run's timeline; `None` if the run was too short or memory
    /// was not known in both windows.
    pub fn over(timeline: &[Second], warmup_secs: f64, measured_secs: f64) -> Option<RssDrift> {
        if measured_secs < Self::MIN_MEASURED_SECS {
            return None;
        }
        let server = timeline.iter().any(|s| s.server_rss_mib.is_some());
        let of = if server { "server" } else { "bench" };
        let lowest = |from: f64, to: f64| {
            timeline
                .iter()
                .filter(|s| (from..to).contains(&(s.at_secs - warmup_secs)))
                .filter_map(|s| if server { s.server_rss_mib } else { s.rss_mib })
                .min_by(f64::total_cmp)
        };
        let early = lowest(60.0, 90.0)?;
        let late = lowest(measured_secs - 30.0, measured_secs + 0.5)?;
        if early <= 0.0 {
            return None;
        }
        Some(RssDrift {
            of,
            early_lowest_mib: early,
            late_lowest_mib: late,
            change_percent: (late / early - 1.0) * 100.0,
        })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct InvariantReport {
    /// Every check reached its data (false when the server could not be reached).
    pub checked: bool,
    /// What contradicts the acknowledgements: a broken guarantee.
    pub violations: Vec<String>,
    /// Checks that could not reach the server: nothing is known from them,
    /// so they are neither passed nor violated.
    pub unreachable: Vec<String>,
    /// What was checked, in one sentence.
    pub summary: String,
}

impl InvariantReport {
    pub fn ok(&self) -> bool {
        self.checked && self.violations.is_empty() && self.unreachable.is_empty()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub workload: Workload,
    pub target: String,
    /// Where the workers ran: on the engine's threads or their own.
    pub clients_on: ClientsOn,
    pub concurrency: usize,
    /// The open-loop arrival rate, if any (requests per second).
    pub rate: Option<f64>,
    pub seed: u64,
    pub users: usize,
    pub products: usize,
    pub setup_secs: f64,
    /// Resident memory of this process before and after setup: embedded,
    /// the difference over the users created is the memory per user.
    pub rss_mib_before_setup: Option<f64>,
    pub rss_mib_after_setup: Option<f64>,
    pub warmup_secs: f64,
    /// The measured window (shorter than asked when the work ran out).
    pub measured_secs: f64,
    pub kinds: Vec<KindReport>,
    pub total: KindReport,
    pub requests_per_sec: f64,
    /// Over HTTP: each request on its own (an operation may be two), from
    /// writing it to having read its whole response; `ok` counts 2xx.
    pub http_requests: Option<KindReport>,
    pub errors: BTreeMap<String, u64>,
    pub unknown_outcomes: u64,
    pub journal: Option<JournalReport>,
    pub process: Option<ProcessReport>,
    pub data_platform: Option<DataPlatformReport>,
    /// Runs of 120 s or more: did resident memory stay flat?
    pub rss_drift: Option<RssDrift>,
    /// Per second, for spotting decay and memory growth (JSON only).
    pub timeline: Vec<Second>,
    /// With `--url`: why the run stopped early, when the server stopped
    /// answering (connections refused or cut off; see
    /// [`UNREACHABLE_ATTEMPTS`](crate::bench::target::UNREACHABLE_ATTEMPTS)).
    pub unreachable: Option<String>,
    pub invariants: InvariantReport,
}

/// Merges per-worker histograms of one kind.
pub fn merge(parts: &[&Histogram<u64>]) -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant digits is valid");
    for p in parts {
        h.add(*p).expect("auto-resizing histograms add");
    }
    h
}

pub fn kind_name(k: OpKind) -> &'static str {
    k.name()
}

fn row(out: &mut String, r: &KindReport) {
    let l = &r.latency_ms;
    let _ = writeln!(
        out,
        "{:<13} {:>10} {:>10} {:>11.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        r.kind, r.ops, r.ok, r.ok_per_sec, l.p50, l.p90, l.p99, l.p99_9, l.max
    );
}

impl BenchReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_latencies(&mut out);
        self.write_resources(&mut out);
        self.write_outcomes(&mut out);
        out
    }

    /// What ran, against what, and setup.
    fn write_header(&self, out: &mut String) {
        let mode = match self.rate {
            Some(r) => format!("open loop at {r:.0}/s"),
            None => "closed loop".into(),
        };
        let _ = writeln!(
            out,
            "workload {:?} on {} | workers on {} | concurrency {} | {mode} | seed {} | users {} products {}",
            self.workload,
            self.target,
            match self.clients_on {
                ClientsOn::Engine => "the engine's threads",
                ClientsOn::Own => "their own threads",
            },
            self.concurrency,
            self.seed,
            self.users,
            self.products
        );
        let _ = writeln!(
            out,
            "setup {:.1} s, warm-up {:.1} s, measured {:.2} s",
            self.setup_secs, self.warmup_secs, self.measured_secs
        );
        if let (Some(before), Some(after)) = (self.rss_mib_before_setup, self.rss_mib_after_setup) {
            // Over HTTP, the server's (from its /metrics); embedded, this process's.
            let of = if self.http_requests.is_some() {
                "server"
            } else {
                "process"
            };
            let _ = writeln!(
                out,
                "{of} RSS {before:.0} MiB before setup, {after:.0} MiB after ({:.0} bytes per user)",
                (after - before).max(0.0) * 1024.0 * 1024.0 / self.users.max(1) as f64
            );
        }
        if let Some(why) = &self.unreachable {
            let _ = writeln!(out, "UNREACHABLE: the run stopped early: {why}");
        }
    }

    /// One latency row per kind, the total, and each HTTP request.
    fn write_latencies(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "{:<13} {:>10} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "kind", "ops", "ok", "ok/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for k in &self.kinds {
            row(out, k);
        }
        if self.kinds.len() > 1 {
            row(out, &self.total);
        }
        if let Some(r) = &self.http_requests {
            row(out, r);
        }
        if self.total.ops == 0 {
            let _ = writeln!(
                out,
                "nothing was measured: the work ran out during the warm-up (give more --users)"
            );
        }
        let _ = writeln!(out, "requests/s {:.0}", self.requests_per_sec);
    }

    /// The journal, the process, the data platform and the RSS drift.
    fn write_resources(&self, out: &mut String) {
        if let Some(j) = &self.journal {
            let _ = writeln!(
                out,
                "journal: {} records in {} batches ({:.1} per batch), {:.0} records/s, {:.0} flushes/s",
                j.records, j.batches, j.records_per_batch, j.records_per_sec, j.flushes_per_sec
            );
            let w = |step: Step| j.writer_percent.get(step.name()).copied().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "journal writer: {:.0}% writing and flushing ({:.0} µs per batch), {:.0}% preparing, \
                 {:.0}% acknowledging, {:.0}% snapshotting, {:.0}% waiting for records",
                w(Step::Writing),
                j.write_us_per_batch,
                w(Step::Preparing),
                w(Step::Acknowledging),
                w(Step::Snapshotting),
                w(Step::Waiting)
            );
        }
        if let Some(p) = &self.process {
            let _ = write!(
                out,
                "process: {:.0}% CPU ({:.0}% in the kernel), {:.1} µs of CPU per operation",
                p.cpu_percent, p.system_percent, p.cpu_us_per_op
            );
            if let Some(mib) = p.storage_write_mib_per_sec {
                let _ = write!(out, "; {mib:.1} MiB/s written to storage");
            }
            if let Some(b) = p.storage_write_bytes_per_record {
                let _ = write!(out, " ({b:.0} bytes per journal record)");
            }
            let _ = writeln!(out);
            if !p.cpu_us_per_op_by_thread.is_empty() {
                let mut threads: Vec<_> = p.cpu_us_per_op_by_thread.iter().collect();
                threads.sort_by(|x, y| y.1.total_cmp(x.1));
                let threads: Vec<String> = threads
                    .iter()
                    .map(|(family, us)| format!("{family} {us:.1}"))
                    .collect();
                let _ = writeln!(out, "  µs per operation by thread: {}", threads.join(", "));
            }
        }
        if let Some(d) = &self.data_platform {
            let _ = write!(
                out,
                "data platform ({}): {:.0} events/s delivered, {:.0} events/s paid; backlog {} at the start, {} at the end; at most {} events in memory; {} failed attempts",
                d.sink,
                d.delivered_per_sec,
                d.added_per_sec,
                d.backlog_at_start,
                d.backlog_at_end,
                d.events_in_memory_max,
                d.failures
            );
            if let (Some(events), Some(refused)) = (d.sink_events, d.sink_refused) {
                let _ = write!(
                    out,
                    " (the sink took {events} events, refused {refused} requests)"
                );
            }
            let _ = writeln!(out);
        }
        if let Some(d) = &self.rss_drift {
            let _ = writeln!(
                out,
                "RSS ({}): lowest {:.0} MiB at 60–90 s, {:.0} MiB in the last 30 s ({:+.1}%)",
                d.of, d.early_lowest_mib, d.late_lowest_mib, d.change_percent
            );
        }
    }

    /// Errors by code, unknown outcomes, and the invariant check.
    fn write_outcomes(&self, out: &mut String) {
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            let _ = writeln!(out, "errors: {}", list.join(", "));
        }
        if self.unknown_outcomes > 0 {
            let _ = writeln!(
                out,
                "operations with unknown outcome: {} (exact checks relaxed)",
                self.unknown_outcomes
            );
        }
        let inv = &self.invariants;
        if !inv.unreachable.is_empty() {
            let _ = writeln!(
                out,
                "invariants: UNREACHABLE, not violated: {} check(s) could not reach the server",
                inv.unreachable.len()
            );
            for u in inv.unreachable.iter().take(5) {
                let _ = writeln!(out, "  - {u}");
            }
        }
        if !inv.checked && inv.violations.is_empty() {
            let _ = writeln!(out, "invariants: NOT CHECKED: {}", inv.summary);
        } else if inv.violations.is_empty() {
            let _ = writeln!(out, "invariants: ok ({})", inv.summary);
        } else {
            let _ = writeln!(
                out,
                "invariants: {} VIOLATION(S) ({})",
                inv.violations.len(),
                inv.summary
            );
            for v in inv.violations.iter().take(20) {
                let _ = writeln!(out, "  - {v}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second-by-second timeline after a 2 s warm-up: `f(t)` MiB at
    /// measured second `t`, with a 50 MiB tooth every 5 s.
    fn timeline(measured: u32, f: impl Fn(f64) -> f64, server: bool) -> Vec<Second> {
        (0..measured + 2)
            .map(|i| {
                let t = f64::from(i) - 2.0;
                let tooth = if i % 5 == 0 { 50.0 } else { 0.0 };
                let mib = Some(f(t) + tooth);
                Second {
                    at_secs: f64::from(i),
                    ops_per_sec: 1.0,
                    rss_mib: if server { Some(1.0) } else { mib },
                    server_rss_mib: if server { mib } else { None },
                    backlog: None,
                }
            })
            .collect()
    }

    #[test]
    fn drift_compares_the_lowest_of_seconds_60_to_90_with_the_last_30() {
        // 200 MiB, growing 0.1 MiB a second: lowest early at 60 s (206),
        // lowest late at 270 s of 300 (227)
        let grows = timeline(300, |t| 200.0 + 0.1 * t, false);
        let d = RssDrift::over(&grows, 2.0, 300.0).expect("long enough");
        assert_eq!(d.of, "bench");
        assert!((d.early_lowest_mib - 206.0).abs() < 0.2, "{d:?}");
        assert!((d.late_lowest_mib - 227.0).abs() < 0.2, "{d:?}");
        assert!((d.change_percent - (227.0 / 206.0 - 1.0) * 100.0).abs() < 0.2);

        // teeth do not count, only the level under them
        let flat = timeline(300, |_| 250.0, true);
        let d = RssDrift::over(&flat, 2.0, 300.0).expect("long enough");
        assert_eq!(d.of, "server");
        assert_eq!((d.early_lowest_mib, d.late_lowest_mib), (250.0, 250.0));
        assert_eq!(d.change_percent, 0.0);
    }

    #[test]
    fn no_drift_for_short_runs_or_unknown_memory() {
        let short = timeline(119, |_| 100.0, false);
        assert_eq!(RssDrift::over(&short, 2.0, 119.0), None);
        let mut unknown = timeline(300, |_| 100.0, false);
        for s in &mut unknown {
            s.rss_mib = None;
        }
        assert_eq!(RssDrift::over(&unknown, 2.0, 300.0), None);
    }
}
