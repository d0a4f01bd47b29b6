//! Purchase limits, product updates and coupon windows over HTTP: every new
//! code, each 400 naming its field, the admin guard, and that a refusal
//! changes nothing.

use crate::common_http::{assert_error, TestServer, TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn patch(s: &TestServer, path: &str, body: Value, admin: bool) -> (StatusCode, Value) {
    let auth = format!("Bearer {TOKEN}");
    let headers: &[(&str, &str)] = if admin {
        &[("authorization", &auth)]
    } else {
        &[]
    };
    s.call(Method::PATCH, path, Some(body), headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_product_refuses_units_beyond_its_limit_with_409_and_a_cancel_frees_them() {
    // proves max_per_user at creation, PURCHASE_LIMIT_EXCEEDED changing nothing, and the units freed by a cancel
    let s = TestServer::start().await;
    let user = s.user("kim", 0).await;
    let body = json!({"name": "drop", "price": 1000, "stock": 10, "max_per_user": 2});
    let (st, p) = s.admin_post("/api/v1/products", body).await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    assert_eq!(p["max_per_user"], 2);
    let id = p["id"].as_u64().unwrap();
    let order = |q: u64| json!({"user_id": user, "items": [{"product_id": id, "quantity": q}]});
    let (st, first) = s.post("/api/v1/orders", order(2)).await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    let refused = s.post("/api/v1/orders", order(1)).await;
    assert_error(&refused, 409, "PURCHASE_LIMIT_EXCEEDED");
    assert_eq!(s.get(&format!("/api/v1/products/{id}")).await.1["stock"], 8);
    let cancel = format!("/api/v1/orders/{}/cancel", first["id"]);
    assert_eq!(s.post_empty(&cancel).await.0, StatusCode::OK);
    assert_eq!(
        s.post("/api/v1/orders", order(2)).await.0,
        StatusCode::CREATED
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_product_changes_name_price_and_limit_and_refuses_bad_input_by_field() {
    // proves PATCH: 200 with the change, null removes the limit, 400s naming fields, 401 without the token, 404
    let s = TestServer::start().await;
    let id = s.product("mug", 1000, 5).await;
    let path = format!("/api/v1/products/{id}");
    let (st, p) = patch(&s, &path, json!({"price": 1200, "max_per_user": 3}), true).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(
        (p["price"].as_u64(), p["max_per_user"].as_u64()),
        (Some(1200), Some(3))
    );
    assert_eq!(p["name"], "mug");
    let (st, p) = patch(
        &s,
        &path,
        json!({"name": "big mug", "max_per_user": null}),
        true,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(
        (p["name"].as_str(), p["max_per_user"].is_null()),
        (Some("big mug"), true)
    );
    assert_eq!(s.get(&path).await.1, p);

    for (body, field) in [
        (json!({}), "name, price, max_per_user"),
        (json!({"price": 0}), "price"),
        (json!({"price": 100_000_001u64}), "price"),
        (json!({"max_per_user": 0}), "max_per_user"),
        (json!({"max_per_user": 1001}), "max_per_user"),
        (json!({"name": ""}), "name"),
        (json!({"price": "ten"}), "price"),
    ] {
        let got = patch(&s, &path, body.clone(), true).await;
        assert_error(&got, 400, "INVALID_REQUEST");
        let message = got.1["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_error(
        &patch(&s, &path, json!({"price": 5}), false).await,
        401,
        "UNAUTHORIZED",
    );
    assert_error(
        &patch(&s, "/api/v1/products/99", json!({"price": 5}), true).await,
        404,
        "PRODUCT_NOT_FOUND",
    );
    let bad_limit = json!({"name": "x", "price": 1, "stock": 1, "max_per_user": 1001});
    let got = s.admin_post("/api/v1/products", bad_limit).await;
    assert_error(&got, 400, "INVALID_REQUEST");
    assert!(got.1["message"].as_str().unwrap().contains("max_per_user"));
    assert_eq!(
        s.get(&path).await.1["price"],
        1200,
        "refusals changed nothing"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupon_windows_answer_not_started_invalid_coupon_below_the_minimum_and_cap_the_discount() {
    // proves starts_at (409 COUPON_NOT_STARTED), min_order_amount (409 INVALID_COUPON), max_discount, and their 400s
    let s = TestServer::start().await;
    let user = s.user("kim", 0).await;
    let product = s.product("mug", 10_000, 10).await;
    let later = json!({"name": "later", "discount": {"kind": "fixed", "amount": 500},
        "quantity": 5, "starts_at": "2999-01-01T00:00:00Z"});
    let (st, c) = s.admin_post("/api/v1/coupons", later).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    assert_eq!(c["starts_at"], "2999-01-01T00:00:00Z");
    let issue = format!("/api/v1/coupons/{}/issue", c["id"]);
    assert_error(
        &s.post(&issue, json!({"user_id": user})).await,
        409,
        "COUPON_NOT_STARTED",
    );

    let capped = json!({"name": "half", "discount": {"kind": "percent", "percent": 50},
        "quantity": 5, "min_order_amount": 20000, "max_discount": 3000});
    let (st, c) = s.admin_post("/api/v1/coupons", capped).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    assert_eq!(
        (c["min_order_amount"].as_u64(), c["max_discount"].as_u64()),
        (Some(20000), Some(3000))
    );
    let issue = format!("/api/v1/coupons/{}/issue", c["id"]);
    let (st, uc) = s.post(&issue, json!({"user_id": user})).await;
    assert_eq!(st, StatusCode::CREATED, "{uc}");
    assert_eq!(uc["max_discount"], 3000);
    let order = |q: u64| {
        json!({"user_id": user, "items": [{"product_id": product, "quantity": q}],
        "user_coupon_id": uc["id"]})
    };
    assert_error(
        &s.post("/api/v1/orders", order(1)).await,
        409,
        "INVALID_COUPON",
    );
    let coupons = s.get(&format!("/api/v1/users/{user}/coupons")).await.1;
    assert_eq!(
        coupons["items"][0]["status"], "available",
        "the refusal used nothing"
    );
    let (st, o) = s.post("/api/v1/orders", order(2)).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    assert_eq!(
        (o["discount_amount"].as_u64(), o["pay_amount"].as_u64()),
        (Some(3000), Some(17000))
    );

    for (body, field) in [
        (
            json!({"kind": "fixed", "amount": 100}),
            json!({"max_discount": 50}),
        ),
        (
            json!({"kind": "percent", "percent": 10}),
            json!({"max_discount": 0}),
        ),
        (
            json!({"kind": "percent", "percent": 10}),
            json!({"min_order_amount": 0}),
        ),
        (
            json!({"kind": "percent", "percent": 10}),
            json!({"starts_at": "2999-01-02T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}),
        ),
    ] {
        let mut new = json!({"name": "bad", "discount": body, "quantity": 1});
        for (k, v) in field.as_object().unwrap() {
            new[k] = v.clone();
        }
        let got = s.admin_post("/api/v1/coupons", new.clone()).await;
        assert_error(&got, 400, "INVALID_REQUEST");
        let key = field.as_object().unwrap().keys().next().unwrap().clone();
        assert!(
            got.1["message"].as_str().unwrap().contains(&key),
            "{new}: {}",
            got.1
        );
    }
    s.stop().await;
}
