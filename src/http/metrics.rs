//! `/metrics`: Prometheus text from the `metrics` facade.
//!
//! The recorder is process-global (`metrics` allows one), so it is installed
//! at most once per process and shared by every server in it (tests start
//! many). If another recorder was installed first, `/metrics` still answers,
//! with the engine gauges only.
//!
//! Recorded here: `http_requests_total` and `http_request_duration_seconds`
//! per method, route template and status; `http_overloaded_total` and
//! `http_outcome_unknown_total`; at each scrape, the engine's levels
//! (gauges) and running totals (counters, `*_total`) of [`EngineMetrics`],
//! the data platform's delivery, the business totals (orders by outcome, KRW paid, coupons issued: counted
//! by the journal writer as each record becomes durable), readiness, and the
//! process (memory, CPU seconds, start time, build). The journal writer
//! records `journal_flush_seconds` and `journal_batch_records` itself. Every
//! family has HELP and TYPE.

use crate::engine::{Engine, EngineMetrics, Readiness};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::{PoisonError, RwLock};

/// Bucket bounds of every `*_seconds` histogram: 50 µs to 10 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
/// Bucket bounds of `journal_batch_records`.
const RECORDS_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process; `None` if another
/// recorder was installed before.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("journal_batch_records".into()),
                        &RECORDS_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets refused; using summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            started_at_secs();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed");
                    None
                }
            }
        })
        .clone()
}

/// The labels of a request's metrics: known methods only (a label per
/// made-up method would grow without bound) and the route template.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// `http_requests_total` and `http_request_duration_seconds` per method,
/// route template and status, with each label set's handles registered
/// once and then reused: recording is two atomic updates, with no label
/// strings built or hashed into the recorder per request.
///
/// Label sets are bounded: route templates (or `unmatched`), the known
/// methods, and the statuses the API answers.
#[derive(Default)]
pub struct RequestMetrics {
    by_route: RwLock<HashMap<String, Vec<Handles>>>,
}

struct Handles {
    method: &'static str,
    status: u16,
    count: Counter,
    seconds: Histogram,
}

impl RequestMetrics {
    pub fn record(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        let read = self.by_route.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = read.get(route).and_then(|all| {
            all.iter()
                .find(|h| h.method == method && h.status == status)
        }) {
            h.count.increment(1);
            h.seconds.record(seconds);
            return;
        }
        drop(read);
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        let h = Handles {
            method,
            status,
            count: metrics::counter!("http_requests_total", &labels),
            seconds: metrics::histogram!("http_request_duration_seconds", &labels),
        };
        h.count.increment(1);
        h.seconds.record(seconds);
        let mut write = self
            .by_route
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let all = write.entry(route.to_owned()).or_default();
        // Another request may have registered the same set meanwhile: the
        // handles are the recorder's either way, so keep one.
        if !all.iter().any(|x| x.method == method && x.status == status) {
            all.push(h);
        }
    }
}

/// One metric family of the hand-written part of the page.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'static str,
}

impl Family<'_> {
    fn head(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP {} {}\n# TYPE {} {}\n",
            self.name, self.help, self.name, self.kind
        );
    }

    fn one(&self, out: &mut String, value: impl std::fmt::Display) {
        use std::fmt::Write;
        self.head(out);
        let _ = writeln!(out, "{} {value}", self.name);
    }
}

fn gauge<'a>(name: &'a str, help: &'a str) -> Family<'a> {
    Family {
        name,
        help,
        kind: "gauge",
    }
}

fn counter<'a>(name: &'a str, help: &'a str) -> Family<'a> {
    Family {
        name,
        help,
        kind: "counter",
    }
}

/// The engine's and the process's families, in Prometheus text format
/// (written by hand so they are there even when another recorder owns the
/// `metrics` facade). Levels are gauges; running totals since start are
/// counters named `*_total`.
fn engine_families(m: &EngineMetrics, readiness: &Readiness) -> String {
    let mut out = String::with_capacity(4096);
    level_families(m, readiness, &mut out);
    total_families(m, &mut out);
    process_families(&mut out);
    out
}

/// The engine's gauges: its sizes, queues and backlogs, and whether it is
/// ready and its storage available.
fn level_families(m: &EngineMetrics, readiness: &Readiness, out: &mut String) {
    let gauges: [(&str, &str, u64); 12] = [
        ("engine_users", "Users known to the engine.", m.users),
        (
            "engine_products",
            "Products known to the engine.",
            m.products,
        ),
        ("engine_coupon_campaigns", "Coupon campaigns.", m.campaigns),
        ("engine_actors", "Live actors.", m.actors),
        (
            "engine_journal_last_batch_records",
            "Records in the last journal batch.",
            m.journal_last_batch_records,
        ),
        (
            "engine_journal_last_flush_microseconds",
            "Duration of the last journal flush.",
            m.journal_last_flush_us,
        ),
        (
            "engine_journal_queued",
            "Records waiting for the journal writer.",
            m.journal_queued,
        ),
        (
            "engine_outbox_pending",
            "Paid orders not yet accepted by the data platform (its backlog).",
            m.outbox_pending,
        ),
        (
            "engine_idempotency_keys",
            "Idempotency keys kept.",
            m.idempotency_keys,
        ),
        (
            "data_platform_pending",
            "Events for the data platform neither accepted nor dead letters (the backlog, on disk).",
            m.outbox_pending,
        ),
        (
            "data_platform_dead_letters",
            "Events the data platform refused too often, kept until redriven.",
            m.data_platform_dead_letters,
        ),
        (
            "data_platform_events_in_memory",
            "Undelivered events delivery holds in memory (bounded by its window).",
            m.data_platform_events_in_memory,
        ),
    ];
    for (name, help, value) in gauges {
        gauge(name, help).one(out, value);
    }
    gauge(
        "engine_ready",
        "1 while this node accepts changes (GET /ready answers 200), else 0.",
    )
    .one(out, u8::from(readiness.is_ready()));
    gauge(
        "engine_storage_available",
        "0 once storage has failed and changes are refused until restart, else 1.",
    )
    .one(
        out,
        u8::from(!matches!(readiness, Readiness::StorageUnavailable(_))),
    );
}

/// The engine's counters: running totals since start (the data
/// platform's deliveries ever), of the journal, the business and the
/// journal writer's time.
fn total_families(m: &EngineMetrics, out: &mut String) {
    let platform_counters: [(&str, &str, u64); 2] = [
        (
            "data_platform_delivered_total",
            "Events the data platform accepted, ever (kept across restarts).",
            m.data_platform_delivered,
        ),
        (
            "data_platform_failures_total",
            "Failed delivery attempts since start: requests refused or failed, file writes or settlements that failed.",
            m.data_platform_failures,
        ),
    ];
    let counters: [(&str, &str, u64); 4] = [
        (
            "engine_journal_records_total",
            "Journal records written since start.",
            m.journal_records,
        ),
        (
            "engine_journal_batches_total",
            "Journal batches (flushes) since start.",
            m.journal_batches,
        ),
        (
            "engine_snapshots_total",
            "Snapshots written since start.",
            m.snapshots,
        ),
        (
            "engine_snapshot_failures_total",
            "Snapshots that could not be cut or written since start (each is retried by the next).",
            m.snapshot_failures,
        ),
    ];
    for (name, help, value) in counters {
        counter(name, help).one(out, value);
    }
    let b = &m.business;
    let orders = counter(
        "commerce_orders_total",
        "Orders made durable since start, by outcome: placed, paid, failed (payment refused), \
         cancelled, expired.",
    );
    orders.head(out);
    for (outcome, n) in [
        ("placed", b.orders_placed),
        ("paid", b.orders_paid),
        ("failed", b.orders_failed),
        ("cancelled", b.orders_cancelled),
        ("expired", b.orders_expired),
    ] {
        out.push_str(&format!(
            "commerce_orders_total{{outcome=\"{outcome}\"}} {n}\n"
        ));
    }
    for (name, help, value) in platform_counters {
        counter(name, help).one(out, value);
    }
    counter(
        "commerce_paid_krw_total",
        "KRW debited for paid orders since start.",
    )
    .one(out, b.paid_krw);
    counter(
        "commerce_coupons_issued_total",
        "Coupons issued since start.",
    )
    .one(out, b.coupons_issued);
    let steps = counter(
        "engine_journal_writer_seconds_total",
        "The journal writer's time since start by step: waiting for records, preparing a \
         batch, writing and flushing it, acknowledging it, snapshotting.",
    );
    steps.head(out);
    for (step, us) in m.journal_steps.named() {
        out.push_str(&format!(
            "engine_journal_writer_seconds_total{{step=\"{step}\"}} {}\n",
            us as f64 / 1e6
        ));
    }
}

/// The process: memory, CPU, start time, build.
fn process_families(out: &mut String) {
    if let Some(bytes) = crate::process::resident_bytes() {
        gauge(
            "process_resident_memory_bytes",
            "Resident memory of the server process.",
        )
        .one(out, bytes);
    }
    if let Some(u) = crate::process::usage() {
        counter(
            "process_cpu_seconds_total",
            "CPU time of the server process, user and system, since it started.",
        )
        .one(out, u.user_secs + u.system_secs);
    }
    gauge(
        "process_start_time_seconds",
        "When the server process started, in seconds since the Unix epoch.",
    )
    .one(out, started_at_secs());
    let build = gauge(
        "commerce_build_info",
        "The running build: always 1, its version in the label.",
    );
    build.head(out);
    out.push_str(&format!(
        "commerce_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
}

/// Seconds since the epoch when the metrics were first installed or
/// rendered, which the `serve` command does first thing at start-up.
fn started_at_secs() -> f64 {
    static STARTED: OnceLock<f64> = OnceLock::new();
    *STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

/// HELP for the families recorded through the `metrics` facade.
fn describe() {
    metrics::describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status."
    );
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's arrival at the edge to its answer, by method, route template and status."
    );
    metrics::describe_counter!(
        "http_overloaded_total",
        "Requests shed at admission with 503 OVERLOADED (nothing started)."
    );
    metrics::describe_counter!(
        "http_outcome_unknown_total",
        "Requests admitted and not answered within the request timeout (504 OUTCOME_UNKNOWN)."
    );
    metrics::describe_histogram!(
        "journal_flush_seconds",
        metrics::Unit::Seconds,
        "Time to write and flush one journal batch."
    );
    metrics::describe_histogram!(
        "journal_batch_records",
        "Records per journal batch (group commit)."
    );
    metrics::describe_counter!(
        "data_platform_delivered_total",
        "Paid orders accepted by the data platform."
    );
    metrics::describe_counter!(
        "data_platform_failures_total",
        "Failed attempts to deliver to the data platform."
    );
}

/// The whole `/metrics` page.
pub fn render(engine: &Engine, handle: Option<&PrometheusHandle>) -> String {
    let mut page = engine_families(&engine.metrics(), &engine.readiness());
    if let Some(h) = handle {
        // Upkeep drains histogram buffers, so memory stays bounded between scrapes.
        h.run_upkeep();
        page.push_str(&h.render());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_metrics_count_each_method_route_and_status_apart() {
        // proves the cached handles: each record lands in its own label set's exported series, exactly
        let handle = install().expect("no other recorder in this test process");
        let m = RequestMetrics::default();
        for _ in 0..3 {
            m.record("GET", "/test/cached/{id}", 200, 0.001);
        }
        m.record("POST", "/test/cached/{id}", 409, 0.002);
        let text = handle.render();
        let count = |labels: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("http_requests_total{{{labels}}}")))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(
            count(r#"method="GET",route="/test/cached/{id}",status="200""#).as_deref(),
            Some("3"),
            "{text}"
        );
        assert_eq!(
            count(r#"method="POST",route="/test/cached/{id}",status="409""#).as_deref(),
            Some("1"),
            "{text}"
        );
    }
}
