//! `/metrics`: Prometheus text from the `metrics` facade.
//!
//! The recorder is process-global (`metrics` allows one), so it is installed
//! at most once per process and shared by every server in it (tests start
//! many). If another recorder was installed first, `/metrics` still answers,
//! with the engine gauges only.
//!
//! Recorded here: `http_requests_total` and `http_request_duration_seconds`
//! per method, route template and status; `http_overloaded_total`; the
//! engine gauges of [`EngineMetrics`] set at each scrape, the data
//! platform's among them. The journal writer records
//! `journal_flush_seconds` and `journal_batch_records` itself.

use crate::engine::{Engine, EngineMetrics};
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
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
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

/// The engine's gauges, in Prometheus text format (written by hand so they
/// are there even when another recorder owns the `metrics` facade).
fn engine_gauges(m: &EngineMetrics) -> String {
    let gauges: [(&str, &str, u64); 15] = [
        ("engine_users", "Users known to the engine.", m.users),
        (
            "engine_products",
            "Products known to the engine.",
            m.products,
        ),
        ("engine_coupon_campaigns", "Coupon campaigns.", m.campaigns),
        ("engine_actors", "Live actors.", m.actors),
        (
            "engine_journal_records",
            "Journal records written since start.",
            m.journal_records,
        ),
        (
            "engine_journal_batches",
            "Journal batches (flushes) since start.",
            m.journal_batches,
        ),
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
            "engine_snapshots",
            "Snapshots written since start.",
            m.snapshots,
        ),
        (
            "engine_outbox_pending",
            "Paid orders not yet accepted by the data platform.",
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
    let counters: [(&str, &str, u64); 2] = [
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
    let mut out = String::with_capacity(2048);
    for (name, help, value) in gauges {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
    for (name, help, value) in counters {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    }
    if let Some(bytes) = crate::process::resident_bytes() {
        let name = "process_resident_memory_bytes";
        out.push_str(&format!(
            "# HELP {name} Resident memory of the server process.\n# TYPE {name} gauge\n{name} {bytes}\n"
        ));
    }
    let name = "engine_journal_writer_seconds_total";
    out.push_str(&format!(
        "# HELP {name} The journal writer's time since start by step: waiting for records, \
         preparing a batch, writing and flushing it, acknowledging it, snapshotting.\n\
         # TYPE {name} counter\n"
    ));
    for (step, us) in m.journal_steps.named() {
        out.push_str(&format!("{name}{{step=\"{step}\"}} {}\n", us as f64 / 1e6));
    }
    out
}

/// The whole `/metrics` page.
pub fn render(engine: &Engine, handle: Option<&PrometheusHandle>) -> String {
    let mut page = engine_gauges(&engine.metrics());
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
