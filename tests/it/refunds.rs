//! Refunds at the engine and over HTTP: the effects of a refund, refunds of
//! archived orders, races on one order, every new code, recovery.

use crate::common_http::{assert_error, TestServer, TOKEN};
use crate::engine_support::*;

use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::ids::{ProductId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderStatus};
use commerce_engine::domain::product::ProductPatch;
use commerce_engine::domain::refund::{RefundLine, RefundRequest};
use commerce_engine::domain::user::EntryKind;
use commerce_engine::domain::views::UserCouponStatus;
use commerce_engine::engine::{
    DataPlatform, Engine, EngineConfig, Error, NewCoupon, OrderFilter, PageRequest, SystemClock,
};
use commerce_engine::store::MemoryStore;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;

fn lines(items: &[(ProductId, u64)]) -> RefundRequest {
    RefundRequest {
        items: Some(
            items
                .iter()
                .map(|&(product_id, quantity)| RefundLine {
                    product_id,
                    quantity,
                })
                .collect(),
        ),
        reason: Some("damaged".into()),
    }
}

/// A user with `balance`, two products (mug 1,000 × stock 10, tea 333 × stock 10).
async fn shop(engine: &Engine, balance: u64) -> (UserId, ProductId, ProductId) {
    let user = engine.create_user("kim", None).await.unwrap().id;
    engine.charge(user, Krw(balance), None).await.unwrap();
    let mug = engine
        .create_product("mug", Krw(1_000), 10, None)
        .await
        .unwrap()
        .id;
    let tea = engine
        .create_product("tea", Krw(333), 10, None)
        .await
        .unwrap()
        .id;
    (user, mug, tea)
}

async fn paid(engine: &Engine, user: UserId, items: &[(ProductId, u64)]) -> Order {
    let o = engine
        .place_order(order_of(user, items), None)
        .await
        .unwrap();
    engine.pay_order(o.id, None).await.unwrap()
}

async fn stock(engine: &Engine, p: ProductId) -> u64 {
    engine.product(p).await.unwrap().stock
}

fn code<T>(r: Result<T, Error>) -> &'static str {
    match r {
        Ok(_) => "OK",
        Err(e) => e.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_credits_the_share_paid_returns_stock_and_leaves_the_ranking() {
    // proves each effect of a partial then a whole refund, live and after recovery
    let (engine, store) = engine();
    let (user, mug, tea) = shop(&engine, 100_000).await;
    let coupon = engine
        .create_coupon(
            NewCoupon {
                name: "ten".into(),
                discount: Discount::Percent { percent: 10 },
                quantity: 5,
                expires_at: None,
                terms: Default::default(),
            },
            None,
        )
        .await
        .unwrap()
        .id;
    let uc = engine.issue_coupon(coupon, user, None).await.unwrap().id;
    let mut place = order_of(user, &[(mug, 3), (tea, 2)]);
    place.user_coupon_id = Some(uc);
    let o = engine.place_order(place, None).await.unwrap();
    let o = engine.pay_order(o.id, None).await.unwrap();
    assert_eq!((o.total_amount, o.pay_amount), (Krw(3_666), Krw(3_300)));
    let balance_paid = engine.balance(user).await.unwrap().balance;
    engine.refresh_stats().await.unwrap();

    // one mug: 3,300 × 1,000 / 3,666 = 900 (rounded down)
    let r1 = engine
        .refund_order(o.id, lines(&[(mug, 1)]), None)
        .await
        .unwrap();
    assert_eq!(r1.status, OrderStatus::PartiallyRefunded);
    assert_eq!(
        (r1.refunded_amount(), r1.refunds[0].amount),
        (Krw(900), Krw(900))
    );
    assert_eq!(stock(&engine, mug).await, 8);
    let top = engine.refresh_stats().await.unwrap();
    let sold_of = |p: ProductId| {
        top.items
            .iter()
            .find(|i| i.product_id == p)
            .map_or(0, |i| i.sold_quantity)
    };
    assert_eq!((sold_of(mug), sold_of(tea)), (2, 2));
    let coupons = engine
        .user_coupons(user, PageRequest::first(20))
        .await
        .unwrap();
    assert_eq!(
        coupons.items[0].status,
        UserCouponStatus::Used,
        "a partial refund keeps the coupon used"
    );

    // the rest: exactly what is left of the payment
    let r2 = engine
        .refund_order(o.id, RefundRequest::default(), None)
        .await
        .unwrap();
    assert_eq!(r2.status, OrderStatus::Refunded);
    assert_eq!(r2.refunds[1].amount, Krw(3_300 - 900));
    assert_eq!(r2.refunded_amount(), r2.pay_amount);
    assert_eq!(
        engine.balance(user).await.unwrap().balance,
        Krw(balance_paid.0 + 3_300)
    );
    assert_eq!(
        (stock(&engine, mug).await, stock(&engine, tea).await),
        (10, 10)
    );
    let top = engine.refresh_stats().await.unwrap();
    assert!(top.items.is_empty(), "{top:?}");
    let coupons = engine
        .user_coupons(user, PageRequest::first(20))
        .await
        .unwrap();
    assert_eq!(coupons.items[0].status, UserCouponStatus::Available);
    let history = engine.history(user, PageRequest::first(20)).await.unwrap();
    let refunds: Vec<_> = history
        .items
        .iter()
        .filter(|e| e.kind == EntryKind::Refund)
        .map(|e| (e.amount, e.order_id))
        .collect();
    assert_eq!(
        refunds,
        vec![(Krw(2_400), Some(o.id)), (Krw(900), Some(o.id))]
    );
    assert_eq!(engine.order(o.id).await.unwrap(), r2);
    assert_eq!(
        code(
            engine
                .refund_order(o.id, RefundRequest::default(), None)
                .await
        ),
        "ORDER_NOT_REFUNDABLE"
    );

    let world = stop_and_recover(engine, &store).await;
    assert_eq!(world.orders[&o.id], r2);
    assert_eq!(
        world.users[user.index()].balance,
        Krw(balance_paid.0 + 3_300)
    );
    assert_eq!(world.products[mug.index()].sold, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_order_is_refunded_brought_back_and_archived_again() {
    // proves refunds of orders a snapshot archived, across snapshots and a restart
    let store = MemoryStore::new();
    let start = || {
        crate::engine_support::start(
            EngineConfig::default(),
            Box::new(store.clone()),
            Arc::new(SystemClock),
        )
    };
    let engine = start();
    let (user, mug, tea) = shop(&engine, 100_000).await;
    let a = paid(&engine, user, &[(mug, 4), (tea, 3)]).await;
    let b = paid(&engine, user, &[(mug, 1)]).await;
    engine.snapshot().await.unwrap();
    assert_eq!(engine.orders_in_memory().await.unwrap(), 0, "both archived");

    let a1 = engine
        .refund_order(a.id, lines(&[(mug, 2)]), None)
        .await
        .unwrap();
    assert_eq!(a1.status, OrderStatus::PartiallyRefunded);
    assert_eq!(engine.order(a.id).await.unwrap(), a1);
    engine.snapshot().await.unwrap();
    engine.snapshot().await.unwrap();
    assert_eq!(
        engine.order(a.id).await.unwrap(),
        a1,
        "the archive holds it as refunded"
    );
    let a2 = engine
        .refund_order(a.id, lines(&[(tea, 3)]), None)
        .await
        .unwrap();
    assert_eq!(a2.refunds.len(), 2);
    let b1 = engine
        .refund_order(b.id, RefundRequest::default(), None)
        .await
        .unwrap();
    assert_eq!(b1.status, OrderStatus::Refunded);
    // a snapshot taken while nothing is refunded archives them again
    engine.snapshot().await.unwrap();
    let mine = engine
        .user_orders(user, PageRequest::first(20))
        .await
        .unwrap();
    assert_eq!(mine.items, vec![b1.clone(), a2.clone()]);
    let paid_total = a.pay_amount.0 + b.pay_amount.0;
    let refunded = a2.refunded_amount().0 + b1.refunded_amount().0;
    assert_eq!(
        engine.balance(user).await.unwrap().balance,
        Krw(100_000 - paid_total + refunded)
    );
    tokio::task::spawn_blocking({
        let engine = engine.clone();
        move || engine.shutdown()
    })
    .await
    .unwrap();
    drop(engine);

    let engine = start();
    assert_eq!(engine.order(a.id).await.unwrap(), a2);
    assert_eq!(stock(&engine, mug).await, 10 - 4 + 2);
    let a3 = engine
        .refund_order(a.id, RefundRequest::default(), None)
        .await
        .unwrap();
    assert_eq!(a3.refunded_amount(), a.pay_amount);
    let world = stop_and_recover(engine, &store).await;
    assert_eq!(world.orders[&a.id], a3);
    assert_eq!(world.products[mug.index()].sold, 0);
    assert_eq!(world.users[user.index()].balance, Krw(100_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_racing_snapshots_never_lose_or_double_count_a_refund() {
    // proves the archive's tally and memory agree when refunds land while snapshots archive their orders
    let (engine, store) = engine();
    let (user, mug, _) = shop(&engine, 1_000_000).await;
    let mut orders = Vec::new();
    for _ in 0..10 {
        orders.push(paid(&engine, user, &[(mug, 1)]).await.id);
        engine.snapshot().await.unwrap();
    }
    let snapshots = tokio::spawn({
        let engine = engine.clone();
        async move {
            for _ in 0..20 {
                engine.snapshot().await.unwrap();
            }
        }
    });
    let refunds: Vec<_> = orders
        .iter()
        .map(|&id| {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .refund_order(id, RefundRequest::default(), None)
                    .await
            })
        })
        .collect();
    for r in refunds {
        assert_eq!(r.await.unwrap().unwrap().status, OrderStatus::Refunded);
    }
    snapshots.await.unwrap();
    engine.snapshot().await.unwrap();
    assert_eq!(stock(&engine, mug).await, 10);
    let world = stop_and_recover(engine, &store).await;
    assert_eq!(world.products[mug.index()].sold, 0);
    assert!(orders
        .iter()
        .all(|id| world.orders[id].status == OrderStatus::Refunded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_whole_refunds_of_one_order_refund_it_once() {
    // proves one durable decision at a time per order: one success, the balance credited once
    let (engine, store) = engine();
    let (user, mug, tea) = shop(&engine, 100_000).await;
    let o = paid(&engine, user, &[(mug, 2), (tea, 1)]).await;
    let before = engine.balance(user).await.unwrap().balance;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .refund_order(o.id, RefundRequest::default(), None)
                    .await
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for t in tasks {
        *codes.entry(code(t.await.unwrap())).or_insert(0) += 1;
    }
    assert_eq!(
        codes,
        [("OK", 1), ("ORDER_NOT_REFUNDABLE", 19)]
            .into_iter()
            .collect()
    );
    assert_eq!(
        engine.balance(user).await.unwrap().balance,
        Krw(before.0 + o.pay_amount.0)
    );
    assert_eq!(
        (stock(&engine, mug).await, stock(&engine, tea).await),
        (10, 10)
    );
    let world = stop_and_recover(engine, &store).await;
    assert_eq!(world.orders[&o.id].refunds.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_partial_refunds_never_refund_more_than_was_paid() {
    // proves 30 racing one-unit refunds of a 10-unit order: exactly 10 succeed and add up to pay_amount
    let (engine, store) = engine();
    let (user, _, tea) = shop(&engine, 100_000).await;
    let o = paid(&engine, user, &[(tea, 10)]).await;
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.refund_order(o.id, lines(&[(tea, 1)]), None).await })
        })
        .collect();
    let mut ok = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(order) => ok.push(order),
            Err(e) => {
                assert!(
                    matches!(e.code(), "REFUND_EXCEEDS_ORDER" | "ORDER_NOT_REFUNDABLE"),
                    "{e:?}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!((ok.len(), refused), (10, 20));
    let last = engine.order(o.id).await.unwrap();
    assert_eq!(last.status, OrderStatus::Refunded);
    let sum: u64 = last.refunds.iter().map(|r| r.amount.0).sum();
    assert_eq!(
        (sum, last.refunded_amount()),
        (o.pay_amount.0, o.pay_amount)
    );
    assert_eq!(engine.balance(user).await.unwrap().balance, Krw(100_000));
    stop_and_recover(engine, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_is_sent_to_the_data_platform_with_an_id_of_its_own() {
    // proves the order_refunded events of API.md reach the file sink, one per refund
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("data-platform.jsonl");
    let config = EngineConfig {
        data_platform: DataPlatform::File(sink.clone()),
        ..EngineConfig::default()
    };
    let (engine, _store) = engine_with(config, Arc::new(SystemClock));
    let (user, mug, _) = shop(&engine, 100_000).await;
    let o = paid(&engine, user, &[(mug, 3)]).await;
    engine
        .refund_order(o.id, lines(&[(mug, 1)]), None)
        .await
        .unwrap();
    engine
        .refund_order(o.id, RefundRequest::default(), None)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let events = loop {
        let text = std::fs::read_to_string(&sink).unwrap_or_default();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if events.len() >= 3 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let refunds: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "order_refunded")
        .collect();
    assert_eq!(refunds.len(), 2, "{events:?}");
    let ids: std::collections::BTreeSet<String> =
        refunds.iter().map(|e| e["event_id"].to_string()).collect();
    assert_eq!(ids.len(), 2);
    let amounts: u64 = refunds.iter().map(|e| e["amount"].as_u64().unwrap()).sum();
    assert_eq!(amounts, o.pay_amount.0);
    for e in &refunds {
        assert_eq!(e["order_id"], o.id.0);
        let keys: Vec<_> = e.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 6, "{e}");
    }
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refund_route_answers_every_documented_code() {
    // proves 200, 400, 401, 404, 409 ORDER_NOT_REFUNDABLE and REFUND_EXCEEDS_ORDER, and key replay
    let server = TestServer::start().await;
    let user = server.user("kim", 50_000).await;
    let mug = server.product("mug", 1_000, 10).await;
    let (s, o) = server
        .post(
            "/api/v1/orders",
            json!({"user_id": user, "items": [{"product_id": mug, "quantity": 3}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    let id = o["id"].as_u64().unwrap();
    let path = format!("/api/v1/orders/{id}/refund");

    assert_error(&server.post(&path, json!({})).await, 401, "UNAUTHORIZED");
    assert_error(
        &server.admin_post(&path, json!({})).await,
        409,
        "ORDER_NOT_REFUNDABLE",
    );
    let (s, _) = server
        .post_empty(&format!("/api/v1/orders/{id}/payment"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_error(
        &server
            .admin_post("/api/v1/orders/999/refund", json!({}))
            .await,
        404,
        "ORDER_NOT_FOUND",
    );
    for (body, field) in [
        (
            json!({"items": [{"product_id": mug, "quantity": 0}]}),
            "items[0].quantity",
        ),
        (json!({"items": []}), "items"),
        (
            json!({"items": [{"product_id": 0, "quantity": 1}]}),
            "items[0].product_id",
        ),
        (
            json!({"items": [{"product_id": mug, "quantity": 1}, {"product_id": mug, "quantity": 1}]}),
            "items[1].product_id",
        ),
        (json!({"reason": "x".repeat(201)}), "reason"),
        (
            json!({"items": [{"product_id": mug, "quantity": "a"}]}),
            "items[0].quantity",
        ),
    ] {
        let got = server.admin_post(&path, body).await;
        assert_error(&got, 400, "INVALID_REQUEST");
        assert!(
            got.1["message"].as_str().unwrap().contains(field),
            "{}",
            got.1
        );
    }
    for items in [
        json!([{"product_id": mug, "quantity": 4}]),
        json!([{"product_id": 77, "quantity": 1}]),
    ] {
        assert_error(
            &server.admin_post(&path, json!({ "items": items })).await,
            409,
            "REFUND_EXCEEDS_ORDER",
        );
    }
    let auth = format!("Bearer {TOKEN}");
    let keyed = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "refund-1"),
    ];
    let body = json!({"items": [{"product_id": mug, "quantity": 1}], "reason": "chipped"});
    let first = server
        .call(Method::POST, &path, Some(body.clone()), &keyed)
        .await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(first.1["status"], "partially_refunded");
    assert_eq!(first.1["refunded_amount"], 1_000);
    assert_eq!(first.1["refunds"][0]["reason"], "chipped");
    assert_eq!(first.1["refunds"][0]["items"][0]["quantity"], 1);
    let again = server.call(Method::POST, &path, Some(body), &keyed).await;
    assert_eq!(again, first, "a retry with the key gets the first answer");
    let reused = server
        .call(Method::POST, &path, Some(json!({})), &keyed)
        .await;
    assert_error(&reused, 422, "IDEMPOTENCY_KEY_REUSED");
    let (s, whole) = server.admin_post(&path, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{whole}");
    assert_eq!(whole["status"], "refunded");
    assert_eq!(whole["refunded_amount"], 3_000);
    let (_, b) = server.get(&format!("/api/v1/users/{user}/balance")).await;
    assert_eq!(b["balance"], 50_000);
    let (_, h) = server
        .get(&format!("/api/v1/users/{user}/balance/history"))
        .await;
    assert_eq!(h["items"][0]["kind"], "refund");
    assert_eq!(h["items"][0]["order_id"], id);
    let (_, doc) = server.get("/api/v1/openapi.json").await;
    assert!(doc["paths"]["/api/v1/orders/{order_id}/refund"]["post"].is_object());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_frees_the_units_a_purchase_limit_counts_and_moves_the_order_in_the_status_list() {
    // proves refunded units of a limited product may be ordered again (no more), and the admin list by status follows the refund
    let (engine, _store) = engine();
    let (user, mug, _tea) = shop(&engine, 100_000).await;
    let limit = ProductPatch {
        max_per_user: Some(Some(2)),
        ..ProductPatch::default()
    };
    engine.update_product(mug, limit, None).await.unwrap();
    let o = paid(&engine, user, &[(mug, 2)]).await;
    let one_more = || engine.place_order(order_of(user, &[(mug, 1)]), None);
    assert_eq!(code(one_more().await), "PURCHASE_LIMIT_EXCEEDED");

    let refunded = engine
        .refund_order(o.id, lines(&[(mug, 1)]), None)
        .await
        .unwrap();
    assert_eq!(refunded.status, OrderStatus::PartiallyRefunded);
    assert_eq!(code(one_more().await), "OK");
    assert_eq!(code(one_more().await), "PURCHASE_LIMIT_EXCEEDED");

    let listed = |status| {
        let engine = engine.clone();
        async move {
            let page = engine
                .orders(OrderFilter::Status(status), PageRequest::first(20))
                .await
                .unwrap();
            page.items.iter().map(|o| o.id).collect::<Vec<_>>()
        }
    };
    assert!(!listed(OrderStatus::Paid).await.contains(&o.id));
    assert_eq!(listed(OrderStatus::PartiallyRefunded).await, [o.id]);
}
