//! The dashboard over plain HTTP: the page and its assets come from the
//! binary and reference nothing elsewhere; `GET /api/v1/admin/overview`
//! needs the admin token, counts orders by status from durable events,
//! bounds its lists, and reports throughput from the server's sampler.

use crate::common_http::{self, TestServer, TOKEN};

use commerce_engine::engine::SystemClock;
use commerce_engine::http::HttpSettings;
use commerce_engine::store::memory::MemoryStore;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

async fn overview(s: &TestServer) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let (st, body) = s
        .call(
            Method::GET,
            "/api/v1/admin/overview",
            None,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_from_the_binary_and_reference_only_this_origin() {
    // proves /dashboard, its script, style and icon answer 200 with their types and a this-origin-only CSP, and no asset names another host
    let s = TestServer::start().await;
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
        ("/dashboard/icon.svg", "image/svg+xml"),
    ] {
        let resp = s.client.get(s.url(path)).send().await.expect("answer");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        let header = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self'"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let text = resp.text().await.expect("body");
        assert!(!text.is_empty());
        // SVG's namespace is a name, not a place the browser fetches.
        let text = text.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
        // Nothing fetched from elsewhere: no absolute URL in any asset.
        for scheme in ["http://", "https://", "//cdn", "@import"] {
            assert!(!text.contains(scheme), "{path} mentions {scheme}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_needs_the_admin_token() {
    // proves 401 UNAUTHORIZED without a token and with a wrong one, 200 with the right one
    let s = TestServer::start().await;
    let got = s.get("/api/v1/admin/overview").await;
    common_http::assert_error(&got, 401, "UNAUTHORIZED");
    let got = s
        .call(
            Method::GET,
            "/api/v1/admin/overview",
            None,
            &[("authorization", "Bearer nope")],
        )
        .await;
    common_http::assert_error(&got, 401, "UNAUTHORIZED");
    assert_eq!(overview(&s).await["readiness"]["status"], "ready");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_orders_by_status_and_bounds_its_lists() {
    // proves statuses from durable events (placed, paid, cancelled, pending), paid KRW, the 10 lowest-stock products in order and the 50 newest campaigns
    let s = TestServer::start().await;
    let mut products = Vec::new();
    for i in 0..12u64 {
        // stock 100, 95, ..., 45: the last products have the least
        products.push(s.product(&format!("p{i}"), 1_000, 100 - 5 * i).await);
    }
    for _ in 0..55 {
        s.coupon(json!({ "kind": "fixed", "amount": 100 }), 10)
            .await;
    }
    let user = s.user("kim", 100_000).await;
    let mut orders = Vec::new();
    for p in &products[..4] {
        let body = json!({ "user_id": user, "items": [{ "product_id": p, "quantity": 2 }] });
        let (st, o) = s.post("/api/v1/orders", body).await;
        assert_eq!(st, StatusCode::CREATED, "{o}");
        orders.push(o["id"].as_u64().expect("id"));
    }
    for id in &orders[..2] {
        let (st, o) = s.post_empty(&format!("/api/v1/orders/{id}/payment")).await;
        assert_eq!(st, StatusCode::OK, "{o}");
    }
    let (st, o) = s
        .post_empty(&format!("/api/v1/orders/{}/cancel", orders[2]))
        .await;
    assert_eq!(st, StatusCode::OK, "{o}");

    let o = overview(&s).await;
    assert_eq!(
        o["orders"],
        json!({ "placed": 4, "pending": 1, "paid": 2, "failed": 0, "cancelled": 1, "expired": 0 })
    );
    assert_eq!(o["paid_krw"], 4_000);
    assert_eq!(o["users"], 1);
    let low = &o["low_stock"];
    assert_eq!(
        (low["products"].as_u64(), low["scanned"].as_u64()),
        (Some(12), Some(12))
    );
    let stocks: Vec<(u64, u64)> = low["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap_or(0),
                p["stock"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    // p11 (45) .. p2 (90), p3 (85 - 2 held by its pending order = 83) among them.
    let mut expected: Vec<(u64, u64)> = (0..12u64)
        .map(|i| {
            let held = if i == 3 { 2 } else { 0 };
            let sold = if i < 2 { 2 } else { 0 };
            (products[i as usize], 100 - 5 * i - held - sold)
        })
        .collect();
    expected.sort_by_key(|&(id, stock)| (stock, id));
    expected.truncate(10);
    assert_eq!(stocks, expected);
    let campaigns = o["campaigns"]["items"].as_array().expect("campaigns");
    assert_eq!(o["campaigns"]["campaigns"], 55);
    assert_eq!(campaigns.len(), 50);
    assert_eq!(campaigns[0]["id"], 55);
    assert_eq!(campaigns[49]["id"], 6);
    // With the data platform off, every paid order stays in its backlog.
    assert_eq!(o["data_platform"]["pending"], 2, "{o}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_reports_throughput_from_the_servers_sampler() {
    // proves the sampler started by the server: after requests are answered, the overview's rates over a non-empty interval are positive
    let engine = common_http::start_engine(Box::new(MemoryStore::new()), Arc::new(SystemClock));
    let s = TestServer::start_on_engine_threads(engine, HttpSettings::new(TOKEN)).await;
    // The sampler's first sample is taken as the server starts.
    let p = s.product("tea", 1_000, 1_000).await;
    let user = s.user("lee", 100_000).await;
    for _ in 0..5 {
        let body = json!({ "user_id": user, "items": [{ "product_id": p, "quantity": 1 }] });
        let (st, o) = s.post("/api/v1/orders", body).await;
        assert_eq!(st, StatusCode::CREATED, "{o}");
        let id = o["id"].as_u64().expect("id");
        let (st, o) = s.post_empty(&format!("/api/v1/orders/{id}/payment")).await;
        assert_eq!(st, StatusCode::OK, "{o}");
    }
    let o = overview(&s).await;
    let now = &o["throughput"]["now"];
    assert!(now["secs"].as_f64().is_some_and(|x| x > 0.0), "{o}");
    assert!(
        now["requests_per_sec"].as_f64().is_some_and(|x| x > 0.0),
        "{o}"
    );
    assert!(
        now["orders_paid_per_sec"].as_f64().is_some_and(|x| x > 0.0),
        "{o}"
    );
    assert_eq!(o["throughput"]["step_secs"], 5);
    assert!(o["throughput"]["history"].is_array(), "{o}");
    assert!(
        o["journal"]["records_total"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{o}"
    );
    assert!(
        o["journal"]["batches_total"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{o}"
    );
    assert_eq!(o["snapshots"]["failures_total"], 0);
    s.stop().await;
}
