//! `bench --url` drives a real server with its own HTTP client: every
//! request is answered and timed on its own, and the invariant check
//! through the API passes. Small and short: speed lives in the benchmark.

use crate::common_http;

use commerce_engine::bench::workload::Workload;
use commerce_engine::bench::{execute, BenchArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_over_http_times_each_request_and_passes_its_invariant_check() {
    // proves the bench's HTTP client against the real server: ops succeed, each request is timed, the server's RSS is sampled, invariants hold
    let server = common_http::TestServer::start().await;
    for workload in [Workload::OrderPay, Workload::Mixed] {
        let args = BenchArgs {
            url: Some(server.base.clone()),
            admin_token: Some(common_http::TOKEN.into()),
            users: Some(100),
            products: Some(10),
            concurrency: 8,
            // over a second, so the timeline has a sample of the server's RSS
            duration_secs: 1.2,
            warmup_secs: 0.1,
            ..BenchArgs::new(workload)
        };
        let report = tokio::task::spawn_blocking(move || execute(&args))
            .await
            .expect("the bench thread")
            .expect("the run completes");
        assert!(
            report.invariants.ok(),
            "{workload:?}: {:?}",
            report.invariants
        );
        assert!(report.total.ok > 0, "{workload:?} measured nothing");
        for code in report.errors.keys() {
            assert_eq!(
                code, "COUPON_ALREADY_ISSUED",
                "{workload:?}: {:?}",
                report.errors
            );
        }
        let requests = report.http_requests.expect("requests are timed over HTTP");
        // Every request of a measured operation starts inside the window, so
        // at least the requests of the successful operations were timed.
        let of_ok_ops = (report.requests_per_sec * report.measured_secs).round() as u64;
        assert!(
            requests.ops >= of_ok_ops && requests.ok <= requests.ops,
            "{workload:?}: {} timed, {} ok, {of_ok_ops} requests of ok operations",
            requests.ops,
            requests.ok
        );
        if cfg!(target_os = "linux") {
            assert!(
                report
                    .timeline
                    .iter()
                    .any(|s| s.server_rss_mib.is_some_and(|mib| mib > 0.0)),
                "{workload:?}: the server's RSS is sampled from /metrics: {:?}",
                report.timeline
            );
        }
        assert_eq!(report.rss_drift, None, "a short run has no drift");
        if workload == Workload::OrderPay {
            // place + pay: two requests per operation, all 2xx; a few more
            // from operations begun in the warm-up and ended in the window.
            let both = 2 * report.total.ok;
            assert!(
                (both..=both + 8).contains(&requests.ok),
                "{} ok requests for {} paid orders",
                requests.ok,
                report.total.ok
            );
        }
    }
}
