//! Every endpoint of API.md through the real server on 127.0.0.1:0: its
//! success answer and every documented error code.

use crate::common_http;

use commerce_engine::domain::time::Timestamp;
use commerce_engine::engine::{Clock, ManualClock, SystemClock};
use commerce_engine::http::HttpSettings;
use commerce_engine::store::SledStore;
use common_http::{assert_error, start_engine, TestServer, TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_created_read_charged_and_keep_a_history() {
    // proves POST/GET users, balance, charge and history with their shapes and 404s
    let s = TestServer::start().await;
    let (st, u) = s.post("/api/v1/users", json!({"name": "김민수"})).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(u, json!({"id": 1, "name": "김민수", "balance": 0}));
    assert_eq!(s.get("/api/v1/users/1").await, (StatusCode::OK, u.clone()));

    let charge = s
        .post("/api/v1/users/1/balance/charge", json!({"amount": 7000}))
        .await;
    assert_eq!(
        charge,
        (StatusCode::OK, json!({"user_id": 1, "balance": 7000}))
    );
    s.post("/api/v1/users/1/balance/charge", json!({"amount": 3000}))
        .await;
    let (st, b) = s.get("/api/v1/users/1/balance").await;
    assert_eq!(
        (st, b),
        (StatusCode::OK, json!({"user_id": 1, "balance": 10000}))
    );

    let (st, h) = s.get("/api/v1/users/1/balance/history").await;
    assert_eq!(st, StatusCode::OK);
    let items = h["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["kind"], "charge");
    assert_eq!(items[0]["amount"], 3000, "newest first");
    assert_eq!(items[0]["balance_after"], 10000);
    assert!(items[0]["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(h["next"], Value::Null);

    for path in [
        "/api/v1/users/99",
        "/api/v1/users/99/balance",
        "/api/v1/users/99/balance/history",
        "/api/v1/users/99/coupons",
        "/api/v1/users/99/cart",
        "/api/v1/users/99/orders",
    ] {
        assert_error(&s.get(path).await, 404, "USER_NOT_FOUND");
    }
    let missing = s
        .post("/api/v1/users/99/balance/charge", json!({"amount": 1}))
        .await;
    assert_error(&missing, 404, "USER_NOT_FOUND");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_are_bounded_per_request_and_by_the_balance_limit() {
    // proves INVALID_AMOUNT at 0 and 10,000,001, and BALANCE_LIMIT_EXCEEDED past 1,000,000,000
    let s = TestServer::start().await;
    let id = s.user("whale", 0).await;
    let path = format!("/api/v1/users/{id}/balance/charge");
    for bad in [json!(0), json!(10_000_001), json!(-5), json!(1.5)] {
        assert_error(
            &s.post(&path, json!({ "amount": bad })).await,
            400,
            "INVALID_AMOUNT",
        );
    }
    for _ in 0..100 {
        let (st, _) = s.post(&path, json!({"amount": 10_000_000})).await;
        assert_eq!(st, StatusCode::OK);
    }
    assert_error(
        &s.post(&path, json!({"amount": 1})).await,
        409,
        "BALANCE_LIMIT_EXCEEDED",
    );
    let (_, b) = s.get(&format!("/api/v1/users/{id}/balance")).await;
    assert_eq!(b["balance"], 1_000_000_000u64);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_are_created_by_admins_listed_by_id_and_restocked() {
    // proves POST/GET products, paging with next, restock, 404 and 401
    let s = TestServer::start().await;
    for i in 1..=3 {
        let id = s.product(&format!("상품 {i}"), 1000 * i, 10).await;
        assert_eq!(id, i);
    }
    let (st, page) = s.get("/api/v1/products?limit=2").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        page["items"][0],
        json!({"id":1,"name":"상품 1","price":1000,"stock":10,"max_per_user":null})
    );
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let next = page["next"].as_str().expect("a next cursor");
    let (_, rest) = s
        .get(&format!("/api/v1/products?limit=2&after={next}"))
        .await;
    assert_eq!(rest["items"][0]["id"], 3);
    assert_eq!(rest["next"], Value::Null);

    assert_eq!(
        s.get("/api/v1/products/2").await.1,
        json!({"id":2,"name":"상품 2","price":2000,"stock":10,"max_per_user":null})
    );
    assert_error(&s.get("/api/v1/products/9").await, 404, "PRODUCT_NOT_FOUND");

    let (st, p) = s
        .admin_post("/api/v1/products/2/restock", json!({"quantity": 5}))
        .await;
    assert_eq!((st, p["stock"].clone()), (StatusCode::OK, json!(15)));
    assert_error(
        &s.admin_post("/api/v1/products/9/restock", json!({"quantity": 5}))
            .await,
        404,
        "PRODUCT_NOT_FOUND",
    );
    let no_token = s
        .post("/api/v1/products/2/restock", json!({"quantity": 5}))
        .await;
    assert_error(&no_token, 401, "UNAUTHORIZED");
    let wrong = s
        .call(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "x", "price": 1, "stock": 1})),
            &[("authorization", "Bearer not-the-token")],
        )
        .await;
    assert_error(&wrong, 401, "UNAUTHORIZED");
    let challenge = s
        .client
        .post(s.url("/api/v1/products"))
        .send()
        .await
        .expect("sent");
    assert_eq!(challenge.headers()["www-authenticate"], "Bearer");
    assert_eq!(s.get("/api/v1/products/2").await.1["stock"], 15);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupons_are_issued_once_per_user_and_never_beyond_quantity() {
    // proves POST/GET coupons, issue, user coupons, SOLD_OUT, ALREADY_ISSUED, EXPIRED, 404s
    let s = TestServer::start().await;
    let (a, b) = (s.user("a", 0).await, s.user("b", 0).await);
    let (st, c) = s
        .admin_post(
            "/api/v1/coupons",
            json!({"name": "5천원", "discount": {"kind":"fixed","amount":5000}, "quantity": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(
        c,
        json!({"id":1,"name":"5천원","discount":{"kind":"fixed","amount":5000},
               "quantity":1,"remaining":1,"expires_at":null,"starts_at":null,
               "min_order_amount":null,"max_discount":null})
    );
    let (st, uc) = s
        .post("/api/v1/coupons/1/issue", json!({"user_id": a}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(uc["coupon_id"], 1);
    assert_eq!(uc["user_id"], a);
    assert_eq!(uc["status"], "available");
    assert_eq!(uc["discount"], json!({"kind":"fixed","amount":5000}));
    assert_eq!(s.get("/api/v1/coupons/1").await.1["remaining"], 0);

    let again = s
        .post("/api/v1/coupons/1/issue", json!({"user_id": a}))
        .await;
    assert_error(&again, 409, "COUPON_ALREADY_ISSUED");
    let other = s
        .post("/api/v1/coupons/1/issue", json!({"user_id": b}))
        .await;
    assert_error(&other, 409, "COUPON_SOLD_OUT");
    let nobody = s
        .post("/api/v1/coupons/1/issue", json!({"user_id": 99}))
        .await;
    assert_error(&nobody, 404, "USER_NOT_FOUND");
    let nothing = s
        .post("/api/v1/coupons/9/issue", json!({"user_id": a}))
        .await;
    assert_error(&nothing, 404, "COUPON_NOT_FOUND");
    assert_error(&s.get("/api/v1/coupons/9").await, 404, "COUPON_NOT_FOUND");

    let (st, expired) = s
        .admin_post(
            "/api/v1/coupons",
            json!({"name": "지난 쿠폰", "discount": {"kind":"percent","percent":10},
                   "quantity": 5, "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(expired["expires_at"], "2020-01-01T00:00:00Z");
    let late = s
        .post("/api/v1/coupons/2/issue", json!({"user_id": b}))
        .await;
    assert_error(&late, 409, "COUPON_EXPIRED");

    let (st, list) = s.get(&format!("/api/v1/users/{a}/coupons")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["items"][0]["id"], uc["id"]);
    assert_eq!(list["next"], Value::Null);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_sets_quantities_checks_stock_and_removes_lines() {
    // proves GET cart, POST items (add, set), DELETE items, OUT_OF_STOCK and 404s
    let s = TestServer::start().await;
    let u = s.user("cart", 0).await;
    let p = s.product("김치", 21500, 3).await;
    let cart = format!("/api/v1/users/{u}/cart");
    assert_eq!(
        s.get(&cart).await,
        (
            StatusCode::OK,
            json!({"user_id": u, "items": [], "total": 0})
        )
    );
    let items = format!("{cart}/items");
    s.post(&items, json!({"product_id": p, "quantity": 1}))
        .await;
    let (st, c) = s
        .post(&items, json!({"product_id": p, "quantity": 2}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        c,
        json!({"user_id": u, "items": [{"product_id": p, "name": "김치", "price": 21500,
               "quantity": 2, "subtotal": 43000}], "total": 43000})
    );
    let short = s
        .post(&items, json!({"product_id": p, "quantity": 4}))
        .await;
    assert_error(&short, 409, "OUT_OF_STOCK");
    let unknown = s
        .post(&items, json!({"product_id": 9, "quantity": 1}))
        .await;
    assert_error(&unknown, 404, "PRODUCT_NOT_FOUND");

    let (st, c) = s
        .call(Method::DELETE, &format!("{items}/{p}"), None, &[])
        .await;
    assert_eq!((st, c["items"].clone()), (StatusCode::OK, json!([])));
    let gone = s
        .call(Method::DELETE, "/api/v1/users/99/cart/items/1", None, &[])
        .await;
    assert_error(&gone, 404, "USER_NOT_FOUND");
    assert_eq!(s.get(&format!("/api/v1/products/{p}")).await.1["stock"], 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_reserve_stock_apply_coupons_and_are_paid_or_cancelled() {
    // proves POST orders (items and from_cart), GET, list, cancel, payment and their errors
    let s = TestServer::start().await;
    let u = s.user("buyer", 100_000).await;
    let p = s.product("참외", 19_900, 10).await;
    let q = s.product("우유", 2_980, 10).await;
    s.coupon(json!({"kind":"percent","percent":15}), 10).await;
    let (_, uc) = s
        .post("/api/v1/coupons/1/issue", json!({"user_id": u}))
        .await;
    let ucid = uc["id"].as_u64().expect("user coupon id");

    let body = json!({"user_id": u, "items": [{"product_id": p, "quantity": 2},
                      {"product_id": q, "quantity": 1}], "user_coupon_id": ucid});
    let (st, o) = s.post("/api/v1/orders", body).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    assert_eq!(o["status"], "pending");
    assert_eq!(o["total_amount"], 42_780);
    assert_eq!(o["discount_amount"], 6_417, "15% of 42,780 rounded down");
    assert_eq!(o["pay_amount"], 36_363);
    assert_eq!(o["user_coupon_id"], ucid);
    assert_eq!(o["paid_at"], Value::Null);
    assert_eq!(
        o["items"][0],
        json!({"product_id": p, "name": "참외", "unit_price": 19_900, "quantity": 2})
    );
    assert_eq!(s.get(&format!("/api/v1/products/{p}")).await.1["stock"], 8);
    let oid = o["id"].as_u64().expect("order id");
    assert_eq!(s.get(&format!("/api/v1/orders/{oid}")).await.1, o);

    let reuse = json!({"user_id": u, "items": [{"product_id": q, "quantity": 1}],
                       "user_coupon_id": ucid});
    assert_error(
        &s.post("/api/v1/orders", reuse).await,
        409,
        "INVALID_COUPON",
    );
    let too_many = json!({"user_id": u, "items": [{"product_id": p, "quantity": 9}]});
    assert_error(
        &s.post("/api/v1/orders", too_many).await,
        409,
        "OUT_OF_STOCK",
    );
    let no_product = json!({"user_id": u, "items": [{"product_id": 99, "quantity": 1}]});
    assert_error(
        &s.post("/api/v1/orders", no_product).await,
        404,
        "PRODUCT_NOT_FOUND",
    );
    let no_user = json!({"user_id": 99, "items": [{"product_id": p, "quantity": 1}]});
    assert_error(
        &s.post("/api/v1/orders", no_user).await,
        404,
        "USER_NOT_FOUND",
    );
    assert_eq!(s.get(&format!("/api/v1/products/{p}")).await.1["stock"], 8);

    let (st, c) = s.post_empty(&format!("/api/v1/orders/{oid}/cancel")).await;
    assert_eq!(
        (st, c["status"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
    assert_eq!(s.get(&format!("/api/v1/products/{p}")).await.1["stock"], 10);
    let (_, coupons) = s.get(&format!("/api/v1/users/{u}/coupons")).await;
    assert_eq!(coupons["items"][0]["status"], "available");
    let twice = s.post_empty(&format!("/api/v1/orders/{oid}/cancel")).await;
    assert_error(&twice, 409, "ORDER_NOT_CANCELLABLE");
    let pay_cancelled = s.post_empty(&format!("/api/v1/orders/{oid}/payment")).await;
    assert_error(&pay_cancelled, 409, "ORDER_NOT_PAYABLE");

    let items = format!("/api/v1/users/{u}/cart/items");
    s.post(&items, json!({"product_id": q, "quantity": 3}))
        .await;
    let (st, o2) = s
        .post("/api/v1/orders", json!({"user_id": u, "from_cart": true}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{o2}");
    assert_eq!(o2["total_amount"], 8_940);
    assert_eq!(
        s.get(&format!("/api/v1/users/{u}/cart")).await.1["items"],
        json!([])
    );
    let oid2 = o2["id"].as_u64().expect("order id");
    let (st, paid) = s
        .post_empty(&format!("/api/v1/orders/{oid2}/payment"))
        .await;
    assert_eq!(
        (st, paid["status"].clone()),
        (StatusCode::OK, json!("paid"))
    );
    assert!(paid["paid_at"].is_string());
    assert_eq!(
        s.get(&format!("/api/v1/users/{u}/balance")).await.1["balance"],
        91_060
    );
    let cancel_paid = s.post_empty(&format!("/api/v1/orders/{oid2}/cancel")).await;
    assert_error(&cancel_paid, 409, "ORDER_NOT_CANCELLABLE");

    let (st, list) = s.get(&format!("/api/v1/users/{u}/orders?limit=1")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["items"][0]["id"], oid2, "newest first");
    let next = list["next"].as_str().expect("next cursor");
    let (_, older) = s
        .get(&format!("/api/v1/users/{u}/orders?limit=1&after={next}"))
        .await;
    assert_eq!(older["items"][0]["id"], oid);
    assert_error(&s.get("/api/v1/orders/999").await, 404, "ORDER_NOT_FOUND");
    for action in ["cancel", "payment"] {
        let missing = s.post_empty(&format!("/api/v1/orders/999/{action}")).await;
        assert_error(&missing, 404, "ORDER_NOT_FOUND");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_without_enough_balance_fails_the_order_and_returns_everything() {
    // proves 409 INSUFFICIENT_BALANCE, order failed, stock and coupon restored, retry replays
    let s = TestServer::start().await;
    let u = s.user("poor", 1_000).await;
    let p = s.product("한우", 45_000, 5).await;
    s.coupon(json!({"kind":"fixed","amount":1000}), 5).await;
    let (_, uc) = s
        .post("/api/v1/coupons/1/issue", json!({"user_id": u}))
        .await;
    let body = json!({"user_id": u, "items": [{"product_id": p, "quantity": 1}],
                      "user_coupon_id": uc["id"]});
    let (_, o) = s.post("/api/v1/orders", body).await;
    let path = format!("/api/v1/orders/{}/payment", o["id"]);
    let key = [("idempotency-key", "pay-1")];
    let first = s.call(Method::POST, &path, None, &key).await;
    assert_error(&first, 409, "INSUFFICIENT_BALANCE");
    let replay = s.call(Method::POST, &path, None, &key).await;
    assert_eq!(replay, first, "a retry with the key gets the first answer");
    assert_eq!(
        s.get(&format!("/api/v1/orders/{}", o["id"])).await.1["status"],
        "failed"
    );
    assert_eq!(s.get(&format!("/api/v1/products/{p}")).await.1["stock"], 5);
    let (_, coupons) = s.get(&format!("/api/v1/users/{u}/coupons")).await;
    assert_eq!(coupons["items"][0]["status"], "available");
    assert_eq!(
        s.get(&format!("/api/v1/users/{u}/balance")).await.1["balance"],
        1_000
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_order_expires_after_its_time_and_cannot_be_paid() {
    // proves expiry (status expired, stock back) and ORDER_NOT_PAYABLE after it
    let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_790_000_000)));
    let engine = start_engine(
        Box::new(commerce_engine::store::memory::MemoryStore::new()),
        clock.clone() as Arc<dyn Clock>,
    );
    let s = TestServer::start_with(engine, HttpSettings::new(TOKEN)).await;
    let u = s.user("late", 50_000).await;
    let p = s.product("감귤", 24_900, 2).await;
    let body = json!({"user_id": u, "items": [{"product_id": p, "quantity": 2}]});
    let (_, o) = s.post("/api/v1/orders", body).await;
    assert_eq!(s.get(&format!("/api/v1/products/{p}")).await.1["stock"], 0);
    clock.advance_ms(600_001);
    s.engine.expire_due_orders().await.expect("sweep");
    let (_, now) = s.get(&format!("/api/v1/orders/{}", o["id"])).await;
    assert_eq!(now["status"], "expired");
    assert_eq!(s.get(&format!("/api/v1/products/{p}")).await.1["stock"], 2);
    let pay = s
        .post_empty(&format!("/api/v1/orders/{}/payment", o["id"]))
        .await;
    assert_error(&pay, 409, "ORDER_NOT_PAYABLE");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_platform_admin_endpoints_show_the_backlog_and_dead_letters() {
    // proves the status, dead-letter page and redrive routes: admin only, with their shape
    let s = TestServer::start().await;
    for path in [
        "/api/v1/admin/data-platform",
        "/api/v1/admin/data-platform/dead-letters",
    ] {
        assert_error(&s.get(path).await, 401, "UNAUTHORIZED");
    }
    let redrive = "/api/v1/admin/data-platform/dead-letters/redrive";
    assert_error(&s.post_empty(redrive).await, 401, "UNAUTHORIZED");
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    let admin_get = |path: &'static str| s.call(reqwest::Method::GET, path, None, &headers);
    let (st, status) = admin_get("/api/v1/admin/data-platform").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        status,
        json!({"pending": 0, "delivered": 0, "dead_letters": 0, "oldest_pending_at": null})
    );
    // The engine's platform is off: a paid order waits in the outbox.
    let u = s.user("buyer", 10_000).await;
    let p = s.product("mug", 1_000, 10).await;
    let body = json!({"user_id": u, "items": [{"product_id": p, "quantity": 1}]});
    let (_, o) = s.post("/api/v1/orders", body).await;
    let (_, paid) = s
        .post_empty(&format!("/api/v1/orders/{}/payment", o["id"]))
        .await;
    let (_, status) = admin_get("/api/v1/admin/data-platform").await;
    assert_eq!(status["pending"], 1);
    assert_eq!(status["oldest_pending_at"], paid["paid_at"]);
    let (st, page) = admin_get("/api/v1/admin/data-platform/dead-letters").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(page, json!({"items": [], "next": null}));
    let bad = admin_get("/api/v1/admin/data-platform/dead-letters?limit=0").await;
    assert_error(&bad, 400, "INVALID_REQUEST");
    let (st, r) = s.admin_post(redrive, json!({})).await;
    assert_eq!((st, r), (StatusCode::OK, json!({"redriven": 0})));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_products_rank_paid_units_after_a_refresh() {
    // proves GET products/top and POST admin/stats/refresh (admin only) with their shape
    let s = TestServer::start().await;
    let u = s.user("fan", 1_000_000).await;
    let a = s.product("A", 1_000, 100).await;
    let b = s.product("B", 2_000, 100).await;
    for (p, n) in [(a, 2), (b, 5)] {
        let body = json!({"user_id": u, "items": [{"product_id": p, "quantity": n}]});
        let (_, o) = s.post("/api/v1/orders", body).await;
        let (st, _) = s
            .post_empty(&format!("/api/v1/orders/{}/payment", o["id"]))
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    let denied = s.post_empty("/api/v1/admin/stats/refresh").await;
    assert_error(&denied, 401, "UNAUTHORIZED");
    let (st, top) = s.admin_post("/api/v1/admin/stats/refresh", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(top["window_days"], 3);
    assert!(top["computed_at"].is_string());
    assert_eq!(
        top["items"],
        json!([
            {"rank": 1, "product_id": b, "name": "B", "price": 2000, "sold_quantity": 5},
            {"rank": 2, "product_id": a, "name": "A", "price": 1000, "sold_quantity": 2}
        ])
    );
    let (st, got) = s.get("/api/v1/products/top").await;
    assert_eq!(
        (st, got["items"].clone()),
        (StatusCode::OK, top["items"].clone())
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    // proves replay (same status and body, applied once) and 422 IDEMPOTENCY_KEY_REUSED
    let s = TestServer::start().await;
    let key = [("idempotency-key", "create-1")];
    let body = Some(json!({"name": "once"}));
    let first = s
        .call(Method::POST, "/api/v1/users", body.clone(), &key)
        .await;
    assert_eq!(first.0, StatusCode::CREATED);
    let again = s.call(Method::POST, "/api/v1/users", body, &key).await;
    assert_eq!(again, first, "same status (201) and same body");
    let other = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "twice"})),
            &key,
        )
        .await;
    assert_error(&other, 422, "IDEMPOTENCY_KEY_REUSED");
    assert_error(&s.get("/api/v1/users/2").await, 404, "USER_NOT_FOUND");

    let charge = [("idempotency-key", "charge-1")];
    let path = "/api/v1/users/1/balance/charge";
    for _ in 0..3 {
        let (st, b) = s
            .call(Method::POST, path, Some(json!({"amount": 500})), &charge)
            .await;
        assert_eq!((st, b["balance"].clone()), (StatusCode::OK, json!(500)));
    }
    assert_eq!(s.get("/api/v1/users/1/balance").await.1["balance"], 500);
    let bad_key = s
        .call(
            Method::POST,
            path,
            Some(json!({"amount": 500})),
            &[("idempotency-key", "é")],
        )
        .await;
    assert_error(&bad_key, 400, "INVALID_REQUEST");

    // A refusal is the first answer too: replayed, same status and body.
    let over = [("idempotency-key", "too-much")];
    let big = Some(json!({"amount": 10_000_000}));
    for _ in 0..100 {
        s.call(Method::POST, path, big.clone(), &[]).await;
    }
    let refused = s.call(Method::POST, path, big.clone(), &over).await;
    assert_error(&refused, 409, "BALANCE_LIMIT_EXCEEDED");
    let balance = s.get("/api/v1/users/1/balance").await.1["balance"].clone();
    assert!(balance.as_u64().unwrap() > 990_000_000, "{balance}");
    assert_eq!(s.call(Method::POST, path, big, &over).await, refused);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_answer_health_metrics_openapi_and_docs() {
    // proves /health, /metrics (requests per route, engine gauges, process RSS), openapi.json, /docs
    let s = TestServer::start().await;
    assert_eq!(
        s.get("/health").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    s.user("m", 0).await;
    let resp = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .is_ok_and(|c| c.starts_with("text/plain")));
    let text = resp.text().await.expect("text");
    for needle in [
        "engine_users ",
        "engine_actors ",
        "engine_journal_last_batch_records ",
        "engine_journal_last_flush_microseconds ",
        r#"engine_journal_writer_seconds_total{step="writing"} "#,
        r#"engine_journal_writer_seconds_total{step="waiting"} "#,
        "engine_outbox_pending ",
        "engine_idempotency_keys ",
        "# TYPE data_platform_pending gauge\ndata_platform_pending ",
        "# TYPE data_platform_dead_letters gauge\ndata_platform_dead_letters 0\n",
        "data_platform_events_in_memory ",
        "# TYPE data_platform_delivered_total counter\ndata_platform_delivered_total 0\n",
        "# TYPE data_platform_failures_total counter\ndata_platform_failures_total 0\n",
        r#"http_requests_total{method="POST",route="/api/v1/users",status="201"}"#,
        "http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    if cfg!(target_os = "linux") {
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(rss.is_some_and(|b| b > 0), "no process RSS in\n{text}");
    }
    let (st, doc) = s.get("/api/v1/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert!(doc["paths"]["/api/v1/orders"]["post"].is_object());
    let docs = s.client.get(s.url("/docs/")).send().await.expect("docs");
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.expect("html").contains("swagger"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_json_errors() {
    // proves 404 NOT_FOUND and 405 METHOD_NOT_ALLOWED are JSON with application/json
    let s = TestServer::start().await;
    for (method, path, status, code) in [
        (Method::GET, "/api/v1/nothing-here", 404, "NOT_FOUND"),
        (Method::GET, "/", 404, "NOT_FOUND"),
        (Method::PUT, "/api/v1/users", 405, "METHOD_NOT_ALLOWED"),
        (
            Method::DELETE,
            "/api/v1/products/1",
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (Method::PUT, "/api/v1/orders", 405, "METHOD_NOT_ALLOWED"),
    ] {
        let resp = s
            .client
            .request(method.clone(), s.url(path))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let got = common_http::read(resp).await;
        assert_error(&got, status, code);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_backed_server_keeps_what_it_acknowledged_across_a_restart() {
    // proves a 2xx over HTTP on sled survives stopping and reopening the data dir
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || {
        let store = SledStore::open(dir.path()).expect("sled opens");
        start_engine(Box::new(store), Arc::new(SystemClock))
    };
    let s = TestServer::start_with(open(), HttpSettings::new(TOKEN)).await;
    let u = s.user("durable", 12_345).await;
    let p = s.product("남는 상품", 500, 7).await;
    s.stop().await;

    let s = TestServer::start_with(open(), HttpSettings::new(TOKEN)).await;
    assert_eq!(
        s.get(&format!("/api/v1/users/{u}/balance")).await.1["balance"],
        12_345
    );
    assert_eq!(s.get(&format!("/api/v1/products/{p}")).await.1["stock"], 7);
    s.stop().await;
}
