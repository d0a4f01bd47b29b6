//! `bench --url` drives a real server with its own HTTP client: every
//! request is answered and timed on its own, and the invariant check
//! through the API passes. A server that goes away ends the run as
//! unreachable, never as a violation; the bench says what it writes into
//! the target before writing it. Small and short: speed lives in the
//! benchmark.

use crate::common_http;
use crate::http_serve::wait_ready;

use commerce_engine::bench::workload::{Workload, STOCK};
use commerce_engine::bench::{execute, BenchArgs};
use commerce_engine::check::Expect;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_over_http_times_each_request_and_passes_its_invariant_check() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
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
        if workload == Workload::Mixed {
            let refunds = report.kinds.iter().find(|k| k.kind == "refund");
            assert!(refunds.is_some_and(|k| k.ok > 0), "{:?}", report.kinds);
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_with_keys_sends_a_new_idempotency_key_on_every_change() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves --keys: each change request carries a key of its own, so the server keeps one key per change and replays none
    let server = common_http::TestServer::start().await;
    let args = BenchArgs {
        url: Some(server.base.clone()),
        admin_token: Some(common_http::TOKEN.into()),
        users: Some(50),
        products: Some(5),
        concurrency: 4,
        duration_secs: 0.5,
        warmup_secs: 0.0,
        keys: true,
        ..BenchArgs::new(Workload::OrderPay)
    };
    let report = tokio::task::spawn_blocking(move || execute(&args))
        .await
        .expect("the bench thread")
        .expect("the run completes");
    assert!(report.invariants.ok(), "{:?}", report.invariants);
    assert!(report.total.ok > 0);
    let page = reqwest::get(format!("{}/metrics", server.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let keys: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("engine_idempotency_keys "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the key gauge");
    // place + pay of every paid order, each under a key of its own (and the
    // users' setup charges); none replayed, or the invariant check fails.
    assert!(
        keys >= 2 * report.total.ok,
        "{keys} keys for {} paid orders",
        report.total.ok
    );
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `commerce_orders_total{outcome="paid"}` of a server's /metrics page.
async fn paid_orders(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(resp) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let page = resp.text().await.unwrap_or_default();
    page.lines()
        .find(|l| l.starts_with("commerce_orders_total{outcome=\"paid\"} "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_run_ends_the_bench_as_unreachable_not_violated() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves the CLI: a SIGKILLed server stops a 60 s run within seconds, exit code 2, the report says unreachable and lists no violation
    let dir = tempfile::tempdir().expect("tmp");
    let addr = format!("127.0.0.1:{}", closed_port());
    let base = format!("http://{addr}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_commerce-engine"))
        .args([
            "serve",
            "--empty",
            "--admin-token",
            "t",
            "--addr",
            &addr,
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("COMMERCE_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    wait_ready(&addr);
    let bench = Command::new(env!("CARGO_BIN_EXE_commerce-engine"))
        .args([
            "bench",
            "--json",
            "--workload",
            "order_pay",
            "--admin-token",
            "t",
        ])
        .args(["--users", "50", "--products", "5", "--concurrency", "8"])
        .args([
            "--duration-secs",
            "60",
            "--warmup-secs",
            "0",
            "--url",
            &base,
        ])
        .env_remove("COMMERCE_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bench starts");
    // Mid-run: once orders are being paid.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while paid_orders(&client, &base).await < 50 {
        assert!(Instant::now() < deadline, "the bench paid no orders");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill().expect("SIGKILL the server");
    let killed = Instant::now();
    server.wait().expect("server reaped");
    let out = tokio::task::spawn_blocking(move || bench.wait_with_output())
        .await
        .expect("join")
        .expect("bench ends");
    let after_kill = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        after_kill < Duration::from_secs(15),
        "took {after_kill:?} after the kill"
    );
    assert!(stderr.contains("bench: stopped: the server at"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let why = report["unreachable"]
        .as_str()
        .expect("the run says why it stopped");
    assert!(why.contains("unreachable"), "{why}");
    assert_eq!(report["invariants"]["violations"], json!([]), "{report}");
    assert_eq!(report["invariants"]["checked"], false, "{report}");
    assert!(
        report["measured_secs"].as_f64().is_some_and(|s| s < 60.0),
        "{report}"
    );
    assert!(
        report["total"]["ok"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_cannot_reach_the_server_are_unreachable_not_violations() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves the remote check's classification: every read of a dead address is listed as unreachable (bounded), none as a violation
    use commerce_engine::bench::target::{HttpTarget, Target};
    use commerce_engine::check::Acknowledged;
    use commerce_engine::domain::ids::{CouponId, OrderId, ProductId, UserId};
    let url = format!("http://127.0.0.1:{}", closed_port());
    let target = Target::Http(HttpTarget::new(&url, None, false, None).expect("target"));
    let mut acked = Acknowledged::default();
    for u in 1..=30 {
        acked.user(UserId(u));
    }
    for p in 1..=5 {
        acked.product(ProductId(p));
    }
    acked.coupon(CouponId(1)).quantity = 10;
    acked.order(OrderId(1), Expect::PAID);
    acked.order(OrderId(2), Expect::PAID);
    let checked = acked.check_api(&target, usize::MAX).await;
    assert_eq!(checked.violations, Vec::<String>::new());
    // 30 + 5 + 1 + 2 reads: 20 listed, then how many more.
    assert_eq!(checked.unreachable.len(), 21, "{:?}", checked.unreachable);
    assert!(
        checked.unreachable[20].contains("18 more"),
        "{:?}",
        checked.unreachable
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_says_what_it_writes_and_refuses_a_dead_address_at_once() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves the warning on stderr before any write (users, products), and a clear failure without setup against nothing
    let server = common_http::TestServer::start().await;
    let out = tokio::task::spawn_blocking({
        let url = server.base.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_commerce-engine"))
                .args([
                    "bench",
                    "--workload",
                    "order_pay",
                    "--admin-token",
                    common_http::TOKEN,
                ])
                .args(["--users", "5", "--products", "2", "--concurrency", "2"])
                .args([
                    "--duration-secs",
                    "0.3",
                    "--warmup-secs",
                    "0",
                    "--url",
                    &url,
                ])
                .env_remove("COMMERCE_ADMIN_TOKEN")
                .output()
                .expect("bench runs")
        }
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("bench: writing into {}", server.base)),
        "{stderr}"
    );
    assert!(stderr.contains("5 users"), "{stderr}");
    assert!(stderr.contains("2 products"), "{stderr}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("server RSS"),
        "the server's memory, from its /metrics: {table}"
    );
    server.stop().await;

    let url = format!("http://127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_commerce-engine"))
            .args(["bench", "--admin-token", "t", "--url", &url])
            .env_remove("COMMERCE_ADMIN_TOKEN")
            .output()
            .expect("bench runs")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot be reached"), "{stderr}");
    assert!(!stderr.contains("bench: writing into"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_through_the_api_catches_each_acknowledgement_the_server_lacks() {
    // proves each rule over HTTP: a missing charge, a payment not recovered, stock off by one and a lost refund each give a violation, and the truth gives none
    use commerce_engine::bench::target::{HttpTarget, Target};
    use commerce_engine::domain::ids::{OrderId, ProductId, UserId};
    // A real server holding what bench_embedded's world holds.
    let server = common_http::TestServer::start().await;
    let user = server.user("u", 10_000).await;
    let product = server.product("p", 1_000, STOCK).await;
    let body = json!({"user_id": user, "items": [{"product_id": product, "quantity": 1}]});
    let (_, order) = server.post("/api/v1/orders", body).await;
    let pay = format!("/api/v1/orders/{}/payment", order["id"]);
    assert!(server.post_empty(&pay).await.0.is_success());
    assert_eq!((user, product, order["id"].as_u64()), (1, 1, Some(1)));
    let token = Some(common_http::TOKEN.to_owned());
    let target = Target::Http(HttpTarget::new(&server.base, token, false, None).expect("target"));
    let acked = crate::bench_embedded::acknowledged_of_that_world();
    let found = acked.check_api(&target, usize::MAX).await;
    assert!(found.ok(), "{found:?}");

    let mut charge = acked.clone();
    charge.user(UserId(1)).charged += 100;
    let mut payment = acked.clone();
    payment.order(OrderId(2), Expect::PAID);
    let mut stock = acked.clone();
    stock.product(ProductId(1)).placed += 1;
    let mut refund = acked.clone();
    refund.user(UserId(1)).refunded = 1_000;
    refund.product(ProductId(1)).refunded = 1;
    refund.orders = vec![(OrderId(1), Expect::REFUNDED)];
    for (broken, wanted) in [
        (charge, vec!["user 1: balance"]),
        (payment, vec!["order 2"]),
        (stock, vec!["product 1: stock"]),
        (
            refund,
            vec!["user 1: balance", "product 1: stock", "order 1"],
        ),
    ] {
        let found = broken.check_api(&target, usize::MAX).await;
        assert!(found.unreachable.is_empty(), "{found:?}");
        for w in wanted {
            assert!(
                found.violations.iter().any(|v| v.contains(w)),
                "{w}: {found:?}"
            );
        }
    }
}
