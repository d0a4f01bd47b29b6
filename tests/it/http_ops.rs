//! Operations over real HTTP: `/ready` and its states, request ids, CORS,
//! the `/metrics` page's families, and request heads that come too late.

use crate::common_http;

use commerce_engine::engine::SystemClock;
use commerce_engine::http::layers::CorsOrigins;
use commerce_engine::http::HttpSettings;
use commerce_engine::store::fault::{FaultPlan, FaultyStore};
use commerce_engine::store::memory::MemoryStore;
use common_http::{start_engine, TestServer, TOKEN};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `/ready`'s status code and `status`; a 503 must say why in `detail`.
async fn ready(s: &TestServer) -> (u16, String) {
    let (st, body) = s.get("/ready").await;
    if st != StatusCode::OK {
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    (
        st.as_u16(),
        body["status"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_each_state_while_health_stays_200() {
    // proves /ready: 200 ready, 503 starting / storage_unavailable / stopping with a detail, /health 200 throughout
    let plan = FaultPlan::new();
    let store = FaultyStore::new(MemoryStore::new(), plan.clone());
    let engine = start_engine(Box::new(store), Arc::new(SystemClock));
    let s = TestServer::start_with(engine, HttpSettings::new(TOKEN)).await;
    let expect = |status: u16, state: &str| (status, state.to_owned());
    assert_eq!(ready(&s).await, expect(200, "ready"));

    s.engine.set_starting(true);
    assert_eq!(ready(&s).await, expect(503, "starting"));
    assert_eq!(s.get("/health").await.0, StatusCode::OK);
    s.engine.set_starting(false);
    assert_eq!(ready(&s).await, expect(200, "ready"));

    plan.fail_appends.store(true, Ordering::SeqCst);
    let (st, body) = s.post("/api/v1/users", json!({"name": "x"})).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(ready(&s).await, expect(503, "storage_unavailable"));
    assert_eq!(s.get("/health").await.0, StatusCode::OK);
    let (_, page) = metrics_page(&s).await;
    assert!(page.contains("\nengine_storage_available 0\n"), "{page}");
    assert!(page.contains("\nengine_ready 0\n"), "{page}");

    s.engine.begin_stopping();
    assert_eq!(ready(&s).await, expect(503, "stopping"));
    assert_eq!(s.get("/health").await.0, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id_and_the_callers_is_kept() {
    // proves X-Request-Id: generated and distinct when absent, echoed when sent, on successes and on errors alike
    let s = TestServer::start().await;
    let id_of = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut seen = Vec::new();
    for path in ["/health", "/health", "/api/v1/users/x", "/nowhere"] {
        let resp = s.client.get(s.url(path)).send().await.expect("sent");
        let id = id_of(&resp).unwrap_or_else(|| panic!("{path} has no X-Request-Id"));
        assert!(!id.is_empty());
        seen.push(id);
    }
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "{seen:?}");
    for path in ["/health", "/api/v1/users/x"] {
        let resp = s
            .client
            .get(s.url(path))
            .header("x-request-id", "caller-chosen-42")
            .send()
            .await
            .expect("sent");
        assert_eq!(id_of(&resp).as_deref(), Some("caller-chosen-42"), "{path}");
    }
    s.stop().await;
}

async fn cors_server(origins: &[&str]) -> TestServer {
    let cors = CorsOrigins::parse(&origins.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .expect("valid origins");
    let settings = HttpSettings {
        cors,
        ..HttpSettings::new(TOKEN)
    };
    let engine = start_engine(Box::new(MemoryStore::new()), Arc::new(SystemClock));
    TestServer::start_with(engine, settings).await
}

async fn preflight(s: &TestServer, origin: &str) -> reqwest::Response {
    s.client
        .request(Method::OPTIONS, s.url("/api/v1/users"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,idempotency-key",
        )
        .send()
        .await
        .expect("sent")
}

async fn simple(s: &TestServer, origin: &str) -> reqwest::Response {
    s.client
        .get(s.url("/health"))
        .header("origin", origin)
        .send()
        .await
        .expect("sent")
}

fn allowed_origin(resp: &reqwest::Response) -> Option<&HeaderValue> {
    resp.headers().get("access-control-allow-origin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_and_simple_requests_for_allowed_origins_only() {
    // proves --cors-origin: an allowed origin's preflight and request get the CORS headers, another origin gets none
    let s = cors_server(&["https://shop.example", "http://localhost:3000"]).await;
    let ok = preflight(&s, "https://shop.example").await;
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(
        allowed_origin(&ok).map(|v| v.as_bytes()),
        Some(&b"https://shop.example"[..])
    );
    let methods = ok.headers()["access-control-allow-methods"]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let headers = ok.headers()["access-control-allow-headers"]
        .to_str()
        .expect("text")
        .to_ascii_lowercase();
    assert!(headers.contains("idempotency-key"), "{headers}");
    assert_eq!(s.engine.metrics().users, 0, "a preflight changes nothing");

    let refused = preflight(&s, "https://evil.example").await;
    assert_eq!(allowed_origin(&refused), None);

    let ok = simple(&s, "http://localhost:3000").await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        allowed_origin(&ok).map(|v| v.as_bytes()),
        Some(&b"http://localhost:3000"[..])
    );
    let exposed = ok.headers()["access-control-expose-headers"]
        .to_str()
        .expect("text")
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    let refused = simple(&s, "https://evil.example").await;
    assert_eq!(refused.status(), StatusCode::OK);
    assert_eq!(allowed_origin(&refused), None);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_star_allows_any_origin_and_no_flag_sends_no_cors_headers() {
    // proves `*` answers every origin, and that without --cors-origin there is no CORS at all (preflight 405)
    let any = cors_server(&["*"]).await;
    let resp = preflight(&any, "https://anyone.example").await;
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(allowed_origin(&resp).map(|v| v.as_bytes()), Some(&b"*"[..]));
    any.stop().await;

    let none = cors_server(&[]).await;
    let resp = preflight(&none, "https://shop.example").await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allowed_origin(&resp), None);
    let resp = simple(&none, "https://shop.example").await;
    assert_eq!(allowed_origin(&resp), None);
    none.stop().await;
}

async fn metrics_page(s: &TestServer) -> (StatusCode, String) {
    let resp = s.client.get(s.url("/metrics")).send().await.expect("sent");
    let status = resp.status();
    (status, resp.text().await.expect("text"))
}

/// Each family of a Prometheus text page: its TYPE and whether it has HELP.
fn families(page: &str) -> BTreeMap<String, (Option<String>, bool)> {
    let mut out: BTreeMap<String, (Option<String>, bool)> = BTreeMap::new();
    for line in page.lines() {
        let mut words = line.splitn(4, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name)) => {
                let kind = words.next().map(str::to_owned);
                out.entry(name.to_owned()).or_default().0 = kind;
            }
            (Some("#"), Some("HELP"), Some(name)) => {
                out.entry(name.to_owned()).or_default().1 = true;
            }
            _ => {}
        }
    }
    out
}

/// The value of one sample line, `name{labels} value`.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_families_all_have_help_and_type_and_running_totals_are_counters() {
    // proves /metrics: every sample belongs to a family with HELP and TYPE, *_total families are counters, business totals count durable events
    let s = TestServer::start().await;
    let user = s.user("구매자", 100_000).await;
    let product = s.product("상품", 1_000, 10).await;
    let coupon = s.coupon(json!({"kind": "fixed", "amount": 100}), 5).await;
    let (st, _) = s
        .post(
            &format!("/api/v1/coupons/{coupon}/issue"),
            json!({"user_id": user}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let order = json!({"user_id": user, "items": [{"product_id": product, "quantity": 2}]});
    let mut orders = Vec::new();
    for _ in 0..2 {
        let (st, o) = s.post("/api/v1/orders", order.clone()).await;
        assert_eq!(st, StatusCode::CREATED, "{o}");
        orders.push(o["id"].as_u64().expect("order id"));
    }
    let (st, _) = s
        .post_empty(&format!("/api/v1/orders/{}/payment", orders[0]))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .post_empty(&format!("/api/v1/orders/{}/cancel", orders[1]))
        .await;
    assert_eq!(st, StatusCode::OK);
    let _ = s.get("/api/v1/users/x").await;

    let (st, page) = metrics_page(&s).await;
    assert_eq!(st, StatusCode::OK);
    let fams = families(&page);
    for (name, (kind, help)) in &fams {
        assert!(kind.is_some(), "{name} has no TYPE");
        assert!(help, "{name} has no HELP");
        let counter = kind.as_deref() == Some("counter");
        assert_eq!(
            name.ends_with("_total"),
            counter,
            "{name} is a {kind:?}: running totals are counters named *_total"
        );
    }
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (fams.get(base)?.0.as_deref() == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        assert!(fams.contains_key(family), "{line}: no TYPE for {family}");
    }
    for name in [
        "http_requests_total",
        "engine_journal_records_total",
        "engine_journal_batches_total",
        "engine_snapshots_total",
        "commerce_orders_total",
        "commerce_paid_krw_total",
        "commerce_coupons_issued_total",
        "process_cpu_seconds_total",
    ] {
        assert_eq!(
            fams.get(name).and_then(|f| f.0.as_deref()),
            Some("counter"),
            "{name}"
        );
    }
    for name in [
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "commerce_build_info",
        "engine_ready",
        "engine_outbox_pending",
    ] {
        assert_eq!(
            fams.get(name).and_then(|f| f.0.as_deref()),
            Some("gauge"),
            "{name}"
        );
    }
    let outcome = |o: &str| sample(&page, &format!("commerce_orders_total{{outcome=\"{o}\"}}"));
    assert_eq!(outcome("placed"), Some(2.0));
    assert_eq!(outcome("paid"), Some(1.0));
    assert_eq!(outcome("cancelled"), Some(1.0));
    assert_eq!(outcome("failed"), Some(0.0));
    assert_eq!(outcome("expired"), Some(0.0));
    let paid = sample(&page, "commerce_paid_krw_total").expect("paid KRW");
    assert_eq!(paid, 2_000.0, "one order of 2 × 1,000 KRW paid");
    assert_eq!(sample(&page, "commerce_coupons_issued_total"), Some(1.0));
    assert_eq!(sample(&page, "engine_ready"), Some(1.0));
    assert!(
        page.contains(&format!(
            "commerce_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{page}"
    );
    s.stop().await;
}

/// Reads until the peer closes (Ok(0)) or resets; true if it did within `wait`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_does_not_arrive_in_time_closes_the_connection() {
    // proves hyper's header-read timeout is on: one byte of a head then silence is cut at the limit, while a busy keep-alive client keeps its connection; served either way
    for on_engine_threads in [false, true] {
        let settings = HttpSettings {
            request_head_timeout_ms: 1_000,
            ..HttpSettings::new(TOKEN)
        };
        let engine = start_engine(Box::new(MemoryStore::new()), Arc::new(SystemClock));
        let s = if on_engine_threads {
            TestServer::start_on_engine_threads(engine, settings).await
        } else {
            TestServer::start_with(engine, settings).await
        };
        let addr = s.base.trim_start_matches("http://").to_owned();

        let mut slow = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let started = Instant::now();
        slow.write_all(b"G").await.expect("write");
        assert!(
            closed_within(&mut slow, Duration::from_secs(10)).await,
            "the server closes a connection whose head never completes"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "closed at the limit, not at once: {took:?}"
        );

        // A keep-alive client that keeps sending whole requests is served
        // on one connection for three times the limit.
        let mut kept = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let started = Instant::now();
        let mut answered = 0;
        while started.elapsed() < Duration::from_secs(3) {
            kept.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .expect("the connection is still open");
            let mut answer = Vec::new();
            while !answer.ends_with(br#"{"status":"ok"}"#) {
                let mut buf = [0u8; 1024];
                let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf))
                    .await
                    .expect("answered")
                    .expect("read");
                assert!(n > 0, "the server closed a busy keep-alive connection");
                answer.extend_from_slice(&buf[..n]);
            }
            assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
            answered += 1;
            // A client's pace between requests, well under the limit.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(answered >= 5, "{answered}");
        s.stop().await;
    }
}
