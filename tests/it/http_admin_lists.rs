//! The admin lists: GET /api/v1/coupons and GET /api/v1/orders?status=,
//! paged by id, through the real server: every item exactly once across
//! pages, the status filter exact for orders in memory, archived, refunded
//! after they were archived, and after a restart, bad parameters answered 400 naming the field, and 401
//! without the admin token.

use crate::common_http;

use commerce_engine::domain::time::Timestamp;
use commerce_engine::engine::ManualClock;
use commerce_engine::http::HttpSettings;
use commerce_engine::store::{SledStore, Store};
use common_http::{assert_error, start_engine, TestServer, TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// GET with the admin token.
async fn admin_get(s: &TestServer, path: &str) -> (StatusCode, Value) {
    let auth = format!("Bearer {TOKEN}");
    s.call(Method::GET, path, None, &[("authorization", &auth)])
        .await
}

/// Every page of `path` (which has a `?`), `limit` at a time: the ids of
/// each item in page order, and the status of each.
async fn walk(s: &TestServer, path: &str, limit: u64) -> Vec<(u64, Value)> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1_000 {
        let cursor = after
            .as_ref()
            .map_or(String::new(), |a| format!("&after={a}"));
        let (st, page) = admin_get(s, &format!("{path}&limit={limit}{cursor}")).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() as u64 <= limit);
        for item in items {
            seen.push((item["id"].as_u64().expect("id"), item["status"].clone()));
        }
        match &page["next"] {
            Value::Null => return seen,
            Value::String(next) => {
                assert_eq!(items.len() as u64, limit, "a page before the last is full");
                after = Some(next.clone());
            }
            other => panic!("next is {other}"),
        }
    }
    panic!("the pages never end");
}

/// Orders of every status: ids by status, as the engine answered them.
async fn orders_of_every_status(s: &TestServer, clock: &ManualClock) -> BTreeMap<u64, String> {
    let rich = s.user("rich", 1_000_000).await;
    let poor = s.user("poor", 0).await;
    let mug = s.product("mug", 1_000, 10_000).await;
    let place = |user: u64| {
        let body = json!({"user_id": user, "items": [{"product_id": mug, "quantity": 2}]});
        async move {
            let (st, o) = s.post("/api/v1/orders", body).await;
            assert_eq!(st, StatusCode::CREATED, "{o}");
            o["id"].as_u64().unwrap()
        }
    };
    let mut want = BTreeMap::new();
    // Two expire first (a payment past their time expires them).
    let late = [place(rich).await, place(rich).await];
    clock.advance_ms(11 * 60 * 1000);
    for id in late {
        let refused = s.post_empty(&format!("/api/v1/orders/{id}/payment")).await;
        assert_error(&refused, 409, "ORDER_NOT_PAYABLE");
        want.insert(id, "expired".to_owned());
    }
    for i in 0..35u64 {
        let id = place(if i % 5 == 4 { poor } else { rich }).await;
        let status = match i % 5 {
            0 | 1 => s
                .post_empty(&format!("/api/v1/orders/{id}/payment"))
                .await
                .1["status"]
                .clone(),
            2 => s.post_empty(&format!("/api/v1/orders/{id}/cancel")).await.1["status"].clone(),
            3 => json!("pending"),
            _ => {
                let refused = s.post_empty(&format!("/api/v1/orders/{id}/payment")).await;
                assert_error(&refused, 409, "INSUFFICIENT_BALANCE");
                json!("failed")
            }
        };
        want.insert(id, status.as_str().unwrap().to_owned());
    }
    want
}

/// Asserts that every list (all, and each status) pages to exactly `want`.
async fn assert_lists(s: &TestServer, want: &BTreeMap<u64, String>) {
    for limit in [1, 4, 100] {
        let all = walk(s, "/api/v1/orders?", limit).await;
        let got: Vec<(u64, String)> = all
            .iter()
            .map(|(id, st)| (*id, st.as_str().unwrap().to_owned()))
            .collect();
        let expected: Vec<(u64, String)> = want.iter().map(|(k, v)| (*k, v.clone())).collect();
        assert_eq!(got, expected, "every order once, by id (limit {limit})");
        for status in [
            "pending",
            "paid",
            "failed",
            "cancelled",
            "expired",
            "partially_refunded",
            "refunded",
        ] {
            let listed = walk(s, &format!("/api/v1/orders?status={status}"), limit).await;
            let ids: Vec<u64> = listed.iter().map(|(id, _)| *id).collect();
            let expected: Vec<u64> = want
                .iter()
                .filter(|(_, st)| *st == status)
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(ids, expected, "{status}, limit {limit}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_list_by_status_exactly_in_memory_archived_and_after_a_restart() {
    // proves each status's list and the whole list page to exactly the orders of it, by id, wherever they are held
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Box<dyn Store> { Box::new(SledStore::open(dir.path()).expect("sled opens")) };
    let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_790_000_000)));
    let s = TestServer::start_with(
        start_engine(open(), clock.clone()),
        HttpSettings::new(TOKEN),
    )
    .await;
    let mut want = orders_of_every_status(&s, &clock).await;
    assert_lists(&s, &want).await;

    // when a snapshot archives the finished ones
    s.engine.snapshot().await.unwrap();
    let held = s.engine.orders_in_memory().await.unwrap();
    let pending = want.values().filter(|st| *st == "pending").count();
    assert_eq!(held, pending, "only the pending orders stay in memory");
    assert_lists(&s, &want).await;

    // when archived paid orders are refunded, by a line's unit and whole,
    // they are listed by their new status (their archived copies are stale)
    let paid: Vec<u64> = want
        .iter()
        .filter(|(_, st)| *st == "paid")
        .map(|(id, _)| *id)
        .take(2)
        .collect();
    let (_, order) = admin_get(&s, &format!("/api/v1/orders/{}", paid[0])).await;
    let one_unit =
        json!({"items": [{"product_id": order["items"][0]["product_id"], "quantity": 1}]});
    for (id, body, status) in [
        (paid[0], one_unit, "partially_refunded"),
        (paid[1], json!({}), "refunded"),
    ] {
        let (st, o) = s
            .admin_post(&format!("/api/v1/orders/{id}/refund"), body)
            .await;
        assert_eq!(
            (st, o["status"].as_str()),
            (StatusCode::OK, Some(status)),
            "{o}"
        );
        want.insert(id, status.to_owned());
    }
    assert_lists(&s, &want).await;
    s.engine.snapshot().await.unwrap();
    assert_lists(&s, &want).await;

    // and after a restart, the archive's statuses are read again
    s.stop().await;
    let s = TestServer::start_with(
        start_engine(open(), clock.clone()),
        HttpSettings::new(TOKEN),
    )
    .await;
    assert_lists(&s, &want).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupons_list_every_campaign_once_across_pages() {
    // proves GET /api/v1/coupons pages every campaign by id with its fields, and the last page's next is null
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..9u64 {
        ids.push(
            s.coupon(json!({"kind": "fixed", "amount": 100 + i}), 10 + i)
                .await,
        );
    }
    for limit in [1, 2, 9, 100] {
        let listed: Vec<u64> = walk(&s, "/api/v1/coupons?", limit)
            .await
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(listed, ids, "limit {limit}");
    }
    let (st, page) = admin_get(&s, "/api/v1/coupons?limit=1&after=2").await;
    assert_eq!(st, StatusCode::OK);
    let c = &page["items"][0];
    assert_eq!(c["id"], 3);
    assert_eq!(c["discount"], json!({"kind": "fixed", "amount": 102}));
    assert_eq!(
        (c["quantity"].clone(), c["remaining"].clone()),
        (json!(12), json!(12))
    );
    assert_eq!(page["next"], "3");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_lists_refuse_bad_parameters_and_callers_without_the_admin_token() {
    // proves 400 naming status/limit/after, and 401 without or with a wrong token
    let s = TestServer::start().await;
    for path in [
        "/api/v1/orders?status=shipped",
        "/api/v1/orders?status=PAID",
        "/api/v1/orders?status=",
    ] {
        let got = admin_get(&s, path).await;
        assert_error(&got, 400, "INVALID_REQUEST");
        assert!(
            got.1["message"].as_str().unwrap().contains("status"),
            "{}",
            got.1
        );
    }
    for list in ["/api/v1/orders", "/api/v1/coupons"] {
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("after=x", "after"),
        ] {
            let got = admin_get(&s, &format!("{list}?{query}")).await;
            assert_error(&got, 400, "INVALID_REQUEST");
            assert!(
                got.1["message"].as_str().unwrap().contains(field),
                "{}",
                got.1
            );
        }
        assert_error(&s.get(list).await, 401, "UNAUTHORIZED");
        let wrong = s
            .call(Method::GET, list, None, &[("authorization", "Bearer nope")])
            .await;
        assert_error(&wrong, 401, "UNAUTHORIZED");
    }
    s.stop().await;
}
