//! `/metrics`: Prometheus text from the `metrics` facade.
//!
//! The recorder is process-global (`metrics` allows one), so it is installed
//! at most once per process and shared by every server in it (tests start
//! many). If another recorder was installed first, `/metrics` still answers,
//! with the engine gauges only.
//!
//! Recorded here: `http_requests_total` and `http_request_duration_seconds`
//! per method, route template and status; `http_overloaded_total`; the
//! engine gauges of [`EngineMetrics`] set at each scrape. The journal writer
//! records `journal_flush_seconds` and `journal_batch_records` itself.

use crate::engine::{Engine, EngineMetrics};
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

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

/// Records count and latency of every routed request under its route template.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    // Known methods only: a label per made-up method would grow without bound.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m.to_owned(),
        _ => "OTHER".to_owned(),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The engine's gauges, in Prometheus text format (written by hand so they
/// are there even when another recorder owns the `metrics` facade).
fn engine_gauges(m: &EngineMetrics) -> String {
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
    ];
    let mut out = String::with_capacity(2048);
    for (name, help, value) in gauges {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
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
