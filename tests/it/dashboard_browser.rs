//! The operator's dashboard in a real browser (headless Chromium, see
//! [`crate::browser`]): the page served by a running server renders the
//! engine's numbers while orders are placed and paid, updates itself
//! without a reload, raises no script or console error, and asks for the
//! admin token once per tab. A screenshot is kept in
//! `target/test-artifacts/dashboard.png`.

use crate::browser::{artifacts_dir, Browser, Page};
use crate::common_http::{self, TestServer, TOKEN};

use commerce_engine::domain::ids::CouponId;
use commerce_engine::engine::SystemClock;
use commerce_engine::http::HttpSettings;
use commerce_engine::store::memory::MemoryStore;
use futures_util::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// A function of `pred` that resolves with `pred()` once it is truthy,
/// re-checked on every change of the page's DOM (no timer): the test waits
/// on the page's own events. An expression, so evaluating it again declares
/// nothing twice.
const WAIT_FOR: &str = "((pred) => new Promise((resolve) => {
  const v = pred(); if (v) return resolve(v);
  const o = new MutationObserver(() => { const v = pred(); if (v) { o.disconnect(); resolve(v); } });
  o.observe(document.documentElement, { subtree: true, childList: true, attributes: true, characterData: true });
}))";

/// What the page shows, read from its DOM.
const READ_PAGE: &str = "(() => {
  const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent : null; };
  const rows = (sel) => [...document.querySelectorAll(sel + ' tbody tr')];
  return {
    polls: Number(document.body.dataset.polls),
    login: !document.getElementById('login').hidden,
    board: !document.getElementById('board').hidden,
    readiness: text('#readiness'),
    paid: text('#orders-paid'),
    paid_krw: text('#paid-krw'),
    pending: text('#orders-pending'),
    backlog: text('#dp-pending'),
    statuses: Object.fromEntries(rows('#orders').map((tr) => [tr.dataset.status, tr.querySelector('.count').textContent])),
    top: rows('#top-products').map((tr) => ({ id: tr.dataset.productId, name: tr.querySelector('.name') && tr.querySelector('.name').textContent, sold: tr.querySelector('.sold') && tr.querySelector('.sold').textContent })),
    low: rows('#low-stock').map((tr) => ({ id: tr.dataset.productId, stock: tr.querySelector('.stock') && tr.querySelector('.stock').textContent })),
    campaigns: rows('#campaigns').map((tr) => ({ id: tr.dataset.couponId, remaining: tr.querySelector('.remaining') && tr.querySelector('.remaining').textContent })),
    chart_points: Number(document.getElementById('chart-paid').dataset.points || 0),
    errors: [...document.querySelectorAll('#page-errors li')].map((li) => li.textContent),
  };
})()";

/// A number as the page writes it (`1,234`).
fn number(v: &Value) -> Option<u64> {
    v.as_str()?.replace(',', "").trim().parse().ok()
}

/// Waits for the page's next render after the `after`th, then reads it.
async fn next_render(page: &mut Page, after: u64) -> Value {
    page.eval(&format!(
        "{WAIT_FOR}(() => Number(document.body.dataset.polls) > {after})"
    ))
    .await;
    page.eval(READ_PAGE).await
}

/// Places and pays one order of `quantity` units of `product` for `user`.
async fn order_and_pay(s: &TestServer, user: u64, product: u64, quantity: u64) {
    let body =
        json!({ "user_id": user, "items": [{ "product_id": product, "quantity": quantity }] });
    let (st, order) = s.post("/api/v1/orders", body).await;
    assert_eq!(st, StatusCode::CREATED, "{order}");
    let id = order["id"].as_u64().expect("order id");
    let (st, paid) = s.post_empty(&format!("/api/v1/orders/{id}/payment")).await;
    assert_eq!(st, StatusCode::OK, "{paid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_the_engines_numbers_live_under_load_without_errors() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves the page in Chromium shows paid orders, statuses, the top product, low stock and a campaign's remaining exactly as the engine has them after load put on it while open, its throughput chart drawn, with no script or console error
    let started = Instant::now();
    let engine = common_http::start_engine(Box::new(MemoryStore::new()), Arc::new(SystemClock));
    let s = TestServer::start_on_engine_threads(engine, HttpSettings::new(TOKEN)).await;
    let tangerines = s.product("Jeju tangerines, 5 kg", 25_000, 10_000).await;
    let tea = s.product("Boseong green tea", 12_000, 10_000).await;
    let socks = s.product("Hallasan hiking socks", 9_000, 120).await;
    let wrapping = s.product("Gift wrapping", 1_000, 5).await;
    let welcome = s
        .coupon(json!({ "kind": "fixed", "amount": 3_000 }), 500)
        .await;
    let new_year = s
        .coupon(json!({ "kind": "percent", "percent": 10 }), 100)
        .await;
    let mut users = Vec::new();
    for i in 0..40 {
        users.push(s.user(&format!("shopper {i}"), 1_000_000).await);
    }

    let browser = Browser::launch();
    let mut page = browser.page().await;
    page.open(&s.url(&format!("/dashboard#token={TOKEN}")))
        .await;
    let before = next_render(&mut page, 0).await;
    assert_eq!(
        (before["login"].as_bool(), before["board"].as_bool()),
        (Some(false), Some(true)),
        "{before}"
    );
    assert_eq!(number(&before["paid"]), Some(0), "{before}");
    let opened = Instant::now();

    // Load while the page is open: 300 orders paid (half tangerines, 90
    // of tea, 60 of socks), 10 cancelled, 5 left pending, 40 coupons.
    let plan: Vec<(u64, u64)> = (0..300u64)
        .map(|i| {
            let product = match i % 10 {
                0..=4 => tangerines,
                5..=7 => tea,
                _ => socks,
            };
            (users[(i % 40) as usize], product)
        })
        .collect();
    stream::iter(plan)
        .for_each_concurrent(16, |(user, product)| {
            let s = &s;
            async move { order_and_pay(s, user, product, 1).await }
        })
        .await;
    for i in 0..15u64 {
        let body = json!({ "user_id": users[i as usize], "items": [{ "product_id": tea, "quantity": 1 }] });
        let (st, order) = s.post("/api/v1/orders", body).await;
        assert_eq!(st, StatusCode::CREATED, "{order}");
        if i < 10 {
            let id = order["id"].as_u64().expect("order id");
            let (st, o) = s.post_empty(&format!("/api/v1/orders/{id}/cancel")).await;
            assert_eq!(st, StatusCode::OK, "{o}");
        }
    }
    for user in &users {
        let (st, c) = s
            .post(
                &format!("/api/v1/coupons/{welcome}/issue"),
                json!({ "user_id": user }),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{c}");
    }
    let (st, _) = s
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/stats/refresh",
            None,
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let load_secs = opened.elapsed().as_secs_f64();

    // What the engine holds, checked against what was done.
    let b = s.engine.metrics().business;
    assert_eq!(
        (b.orders_placed, b.orders_paid, b.orders_cancelled),
        (315, 300, 10)
    );
    let top = s.engine.top_products().await.expect("ranking");
    assert_eq!(top.items[0].name, "Jeju tangerines, 5 kg");
    assert_eq!(top.items[0].sold_quantity, 150);
    let remaining = s
        .engine
        .coupon(CouponId(welcome))
        .await
        .expect("campaign")
        .remaining;
    assert_eq!(remaining, 460);

    // The page catches up by itself, render by render, with no reload.
    let mut shown = before.clone();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let welcome_id = welcome.to_string();
    let matches = |v: &Value| {
        number(&v["paid"]) == Some(b.orders_paid)
            // The server samples every second: the chart has a point within one.
            && v["chart_points"].as_u64() >= Some(1)
            && v["top"][0]["name"] == top.items[0].name
            && v["campaigns"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["id"] == welcome_id.as_str()))
                .is_some_and(|c| c["remaining"] == format!("{remaining} / 500"))
    };
    while !matches(&shown) {
        assert!(
            Instant::now() < deadline,
            "the page never caught up: {shown}"
        );
        let polls = shown["polls"].as_u64().unwrap_or(0);
        shown = next_render(&mut page, polls).await;
    }
    let statuses = &shown["statuses"];
    for (status, n) in [
        ("placed", b.orders_placed),
        ("pending", 5),
        ("paid", 300),
        ("cancelled", 10),
        ("failed", 0),
        ("expired", 0),
    ] {
        assert_eq!(number(&statuses[status]), Some(n), "{status}: {shown}");
    }
    assert_eq!(number(&shown["pending"]), Some(5), "{shown}");
    // 150 × 25,000 + 90 × 12,000 + 60 × 9,000 KRW
    assert_eq!(number(&shown["paid_krw"]), Some(b.paid_krw), "{shown}");
    assert_eq!(b.paid_krw, 150 * 25_000 + 90 * 12_000 + 60 * 9_000);
    assert_eq!(number(&shown["top"][0]["sold"]), Some(150), "{shown}");
    // Least stock first: the wrapping (5, unsold), then the socks (120 - 60).
    assert_eq!(shown["low"][0]["id"], wrapping.to_string(), "{shown}");
    assert_eq!(number(&shown["low"][0]["stock"]), Some(5), "{shown}");
    assert_eq!(shown["low"][1]["id"], socks.to_string(), "{shown}");
    assert_eq!(number(&shown["low"][1]["stock"]), Some(60), "{shown}");
    // Newest campaign first.
    assert_eq!(shown["campaigns"][0]["id"], new_year.to_string(), "{shown}");
    assert_eq!(shown["campaigns"][0]["remaining"], "100 / 100", "{shown}");
    assert_eq!(shown["readiness"], "ready", "{shown}");
    assert!(
        shown["polls"].as_u64() > before["polls"].as_u64(),
        "{shown}"
    );

    let png = artifacts_dir().join("dashboard.png");
    page.screenshot(&png).await;
    println!("dashboard screenshot: {}", png.display());
    // One more round trip, so every event sent so far has been read.
    page.eval("1").await;
    assert_eq!(shown["errors"], json!([]), "errors written on the page");
    assert!(page.errors.is_empty(), "browser errors: {:?}", page.errors);
    println!(
        "dashboard test: {:.1} s of load with the page open, {:.1} s in all",
        load_secs,
        started.elapsed().as_secs_f64()
    );
    drop(browser);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_the_token_once_per_tab_and_says_when_it_is_refused() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves the form: a wrong token is refused with a message, the right one opens the board and is kept across a reload of the tab, "Forget token" asks again
    let s = TestServer::start().await;
    let browser = Browser::launch();
    let mut page = browser.page().await;
    let url = s.url("/dashboard");
    page.open(&url).await;
    let first = page.eval(READ_PAGE).await;
    assert_eq!(
        (first["login"].as_bool(), first["board"].as_bool()),
        (Some(true), Some(false)),
        "{first}"
    );

    let submit = |token: &str| {
        format!(
            "document.getElementById('token').value = {}; document.getElementById('login-form').requestSubmit(); true",
            json!(token)
        )
    };
    page.eval(&submit("not-the-token")).await;
    let refused = page
        .eval(&format!(
            "{WAIT_FOR}(() => {{ const m = document.getElementById('login-message'); return !m.hidden && m.textContent; }})"
        ))
        .await;
    assert_eq!(refused, "The token was refused.");
    // The refused request is the browser's only complaint: the collector sees it.
    page.eval("1").await;
    assert!(
        !page.errors.is_empty() && page.errors.iter().all(|e| e.contains("401")),
        "{:?}",
        page.errors
    );
    page.errors.clear();
    let kept = page
        .eval("sessionStorage.getItem('commerce-engine.admin-token')")
        .await;
    assert_eq!(kept, Value::Null, "a refused token is not kept");

    page.eval(&submit(TOKEN)).await;
    let shown = next_render(&mut page, 0).await;
    assert_eq!(
        (shown["login"].as_bool(), shown["board"].as_bool()),
        (Some(false), Some(true)),
        "{shown}"
    );
    assert_eq!(
        page.eval("sessionStorage.getItem('commerce-engine.admin-token')")
            .await,
        TOKEN
    );

    // A reload of the tab keeps it: no form.
    page.open(&url).await;
    let reloaded = next_render(&mut page, 0).await;
    assert_eq!(reloaded["login"].as_bool(), Some(false), "{reloaded}");

    page.eval("document.getElementById('forget').click(); true")
        .await;
    let again = page.eval(READ_PAGE).await;
    assert_eq!(again["login"].as_bool(), Some(true), "{again}");
    assert_eq!(
        page.eval("sessionStorage.getItem('commerce-engine.admin-token')")
            .await,
        Value::Null
    );
    page.eval("1").await;
    assert!(page.errors.is_empty(), "browser errors: {:?}", page.errors);
    drop(browser);
    s.stop().await;
}
