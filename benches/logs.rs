//! What the access line costs a request: one event through `serve`'s own
//! subscriber (its filter, its line format with the request's id, the log
//! buffer), against the same event filtered out (`RUST_LOG=warn`). Each
//! iteration runs in a request's id scope, as the edge does; the buffer's
//! flusher writes to `io::sink()`, so what is measured is the process's
//! work, not the disk's. A subscriber set for this thread checks the
//! filter on every event (serve's process-wide one caches it per
//! callsite), so the figures are if anything high.
//!
//! `cargo bench --bench logs -- --warm-up-time 1 --measurement-time 3`

use axum::http::HeaderValue;
use commerce_engine::http::edge::log_access;
use commerce_engine::http::log_lines::{in_request, Lines};
use commerce_engine::http::logs::{Batching, LogBuffer};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

fn access_line(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("access_line");
    let cases = [
        ("filtered_out", "warn", Lines::text()),
        ("text", "info", Lines::text()),
        ("json", "info", Lines::json()),
    ];
    for (name, level, lines) in cases {
        let out = LogBuffer::over(std::io::sink(), Batching::STDERR);
        let subscriber = lines.subscriber(EnvFilter::new(level), false, out);
        let _default = tracing::subscriber::set_default(subscriber);
        let id = HeaderValue::from_static("3f9a12c0-1a");
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                in_request(id.clone(), async {
                    log_access(
                        "GET",
                        "/api/v1/users/{user_id}",
                        404,
                        Duration::from_micros(121),
                    );
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, access_line);
criterion_main!(benches);
