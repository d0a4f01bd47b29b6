//! Engine flows with a moved clock: expiry, the 3-day ranking window, coupon
//! expiry, every compensation, carts, and idempotency keys.

use crate::engine_support;

use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::ids::{ProductId, UserCouponId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::OrderStatus;
use commerce_engine::domain::time::{Timestamp, MS_PER_DAY};
use commerce_engine::domain::views::UserCouponStatus;
use commerce_engine::engine::{
    Engine, EngineConfig, IdempotencyKey, ManualClock, NewCoupon, OrderSource, PageRequest,
    PlaceOrder,
};
use commerce_engine::store::MemoryStore;
use engine_support::*;
use std::sync::Arc;

const TTL_MS: u64 = 60_000;
const T0: Timestamp = Timestamp(1_800_000_000_000);

fn clocked() -> (Engine, MemoryStore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let config = EngineConfig {
        order_ttl_ms: TTL_MS,
        expiry_sweep_interval_ms: 3_600_000,
        ..EngineConfig::default()
    };
    let (engine, store) = engine_with(config, clock.clone());
    (engine, store, clock)
}

struct Shop {
    user: UserId,
    mug: ProductId,
    pen: ProductId,
}

async fn shop(engine: &Engine) -> Shop {
    let user = engine.create_user("kim", None).await.unwrap().id;
    engine.charge(user, Krw(100_000), None).await.unwrap();
    let mug = engine
        .create_product("mug", Krw(12_000), 10, None)
        .await
        .unwrap()
        .id;
    let pen = engine
        .create_product("pen", Krw(1_500), 10, None)
        .await
        .unwrap()
        .id;
    Shop { user, mug, pen }
}

async fn coupon_for(
    engine: &Engine,
    user: UserId,
    discount: Discount,
    expires_at: Option<Timestamp>,
) -> UserCouponId {
    let c = engine
        .create_coupon(
            NewCoupon {
                name: "c".into(),
                discount,
                quantity: 10,
                expires_at,
                terms: Default::default(),
            },
            None,
        )
        .await
        .unwrap();
    engine.issue_coupon(c.id, user, None).await.unwrap().id
}

fn with_coupon(mut order: PlaceOrder, coupon: UserCouponId) -> PlaceOrder {
    order.user_coupon_id = Some(coupon);
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_order_expires_after_its_ttl_and_gives_back_stock_and_coupon() {
    // proves: expiry of unpaid orders on a moved clock, with exact returns
    let (engine, store, clock) = clocked();
    let s = shop(&engine).await;
    let coupon = coupon_for(
        &engine,
        s.user,
        Discount::Fixed { amount: Krw(1_000) },
        None,
    )
    .await;
    let order = engine
        .place_order(with_coupon(order_of(s.user, &[(s.mug, 3)]), coupon), None)
        .await
        .unwrap();
    assert_eq!(order.expires_at, T0.plus_ms(TTL_MS));
    clock.advance_ms(TTL_MS - 1);
    assert_eq!(engine.expire_due_orders().await.unwrap(), 0);
    clock.advance_ms(1);
    assert_eq!(engine.expire_due_orders().await.unwrap(), 1);
    assert_eq!(
        engine.order(order.id).await.unwrap().status,
        OrderStatus::Expired
    );
    assert_eq!(engine.product(s.mug).await.unwrap().stock, 10);
    let coupons = engine
        .user_coupons(s.user, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(coupons.items[0].status, UserCouponStatus::Available);
    stop_and_recover(engine, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_or_cancelling_after_the_ttl_expires_the_order_and_is_refused() {
    // proves: the answer does not depend on whether the expiry sweep already ran
    let (engine, _store, clock) = clocked();
    let s = shop(&engine).await;
    let a = engine
        .place_order(order_of(s.user, &[(s.mug, 1)]), None)
        .await
        .unwrap();
    let b = engine
        .place_order(order_of(s.user, &[(s.pen, 1)]), None)
        .await
        .unwrap();
    clock.advance_ms(TTL_MS);
    assert_eq!(
        engine.pay_order(a.id, None).await.unwrap_err().code(),
        "ORDER_NOT_PAYABLE"
    );
    assert_eq!(
        engine.cancel_order(b.id, None).await.unwrap_err().code(),
        "ORDER_NOT_CANCELLABLE"
    );
    for id in [a.id, b.id] {
        assert_eq!(engine.order(id).await.unwrap().status, OrderStatus::Expired);
    }
    assert_eq!(engine.balance(s.user).await.unwrap().balance, Krw(100_000));
    assert_eq!(engine.product(s.mug).await.unwrap().stock, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_returns_stock_and_makes_the_coupon_available_again() {
    // proves: cancellation compensates exactly; a cancelled order cannot be cancelled or paid
    let (engine, store, _clock) = clocked();
    let s = shop(&engine).await;
    let coupon = coupon_for(&engine, s.user, Discount::Percent { percent: 10 }, None).await;
    let order = engine
        .place_order(
            with_coupon(order_of(s.user, &[(s.mug, 2), (s.pen, 3)]), coupon),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (order.total_amount, order.discount_amount, order.pay_amount),
        (Krw(28_500), Krw(2_850), Krw(25_650))
    );
    assert_eq!(engine.product(s.pen).await.unwrap().stock, 7);
    let used = engine
        .user_coupons(s.user, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(used.items[0].status, UserCouponStatus::Used);
    let cancelled = engine.cancel_order(order.id, None).await.unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(engine.product(s.pen).await.unwrap().stock, 10);
    assert_eq!(engine.product(s.mug).await.unwrap().stock, 10);
    let back = engine
        .user_coupons(s.user, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(back.items[0].status, UserCouponStatus::Available);
    assert_eq!(
        engine
            .cancel_order(order.id, None)
            .await
            .unwrap_err()
            .code(),
        "ORDER_NOT_CANCELLABLE"
    );
    assert_eq!(
        engine.pay_order(order.id, None).await.unwrap_err().code(),
        "ORDER_NOT_PAYABLE"
    );
    // the coupon can be used again
    engine
        .place_order(with_coupon(order_of(s.user, &[(s.pen, 1)]), coupon), None)
        .await
        .unwrap();
    stop_and_recover(engine, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_short_of_balance_fails_the_order_and_returns_everything() {
    // proves: failed payment compensation: order failed, stock back, coupon back, balance untouched
    let (engine, store, _clock) = clocked();
    let s = shop(&engine).await;
    let coupon = coupon_for(&engine, s.user, Discount::Fixed { amount: Krw(500) }, None).await;
    let order = engine
        .place_order(with_coupon(order_of(s.user, &[(s.mug, 9)]), coupon), None)
        .await
        .unwrap();
    assert_eq!(order.pay_amount, Krw(107_500));
    assert_eq!(
        engine.pay_order(order.id, None).await.unwrap_err().code(),
        "INSUFFICIENT_BALANCE"
    );
    assert_eq!(
        engine.order(order.id).await.unwrap().status,
        OrderStatus::Failed
    );
    assert_eq!(engine.product(s.mug).await.unwrap().stock, 10);
    assert_eq!(engine.balance(s.user).await.unwrap().balance, Krw(100_000));
    let c = engine
        .user_coupons(s.user, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(c.items[0].status, UserCouponStatus::Available);
    assert_eq!(
        engine.pay_order(order.id, None).await.unwrap_err().code(),
        "ORDER_NOT_PAYABLE"
    );
    stop_and_recover(engine, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_is_all_or_nothing() {
    // proves: one short line, an unknown product or a bad coupon leaves every stock and coupon untouched
    let (engine, _store, _clock) = clocked();
    let s = shop(&engine).await;
    let coupon = coupon_for(&engine, s.user, Discount::Fixed { amount: Krw(500) }, None).await;
    let short = with_coupon(order_of(s.user, &[(s.pen, 2), (s.mug, 11)]), coupon);
    assert_eq!(
        engine.place_order(short, None).await.unwrap_err().code(),
        "OUT_OF_STOCK"
    );
    let unknown = order_of(s.user, &[(s.pen, 2), (ProductId(99), 1)]);
    assert_eq!(
        engine.place_order(unknown, None).await.unwrap_err().code(),
        "PRODUCT_NOT_FOUND"
    );
    let bad_coupon = with_coupon(order_of(s.user, &[(s.pen, 2)]), UserCouponId(77));
    assert_eq!(
        engine
            .place_order(bad_coupon, None)
            .await
            .unwrap_err()
            .code(),
        "INVALID_COUPON"
    );
    let no_user = order_of(UserId(42), &[(s.pen, 1)]);
    assert_eq!(
        engine.place_order(no_user, None).await.unwrap_err().code(),
        "USER_NOT_FOUND"
    );
    assert_eq!(engine.product(s.pen).await.unwrap().stock, 10);
    assert_eq!(engine.product(s.mug).await.unwrap().stock, 10);
    let c = engine
        .user_coupons(s.user, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(c.items[0].status, UserCouponStatus::Available);
    assert!(engine
        .user_orders(s.user, PageRequest::first(10))
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_coupon_cannot_be_issued_nor_used_and_shows_expired() {
    // proves: coupon expiry on a moved clock
    let (engine, _store, clock) = clocked();
    let s = shop(&engine).await;
    let expires_at = T0.plus_ms(10_000);
    let coupon = coupon_for(
        &engine,
        s.user,
        Discount::Fixed { amount: Krw(500) },
        Some(expires_at),
    )
    .await;
    let other = engine.create_user("lee", None).await.unwrap().id;
    clock.set(expires_at);
    assert_eq!(
        engine
            .issue_coupon(commerce_engine::domain::ids::CouponId(1), other, None)
            .await
            .unwrap_err()
            .code(),
        "COUPON_EXPIRED"
    );
    let c = engine
        .user_coupons(s.user, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(c.items[0].status, UserCouponStatus::Expired);
    let order = with_coupon(order_of(s.user, &[(s.pen, 1)]), coupon);
    assert_eq!(
        engine.place_order(order, None).await.unwrap_err().code(),
        "INVALID_COUPON"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ranking_counts_paid_units_of_the_last_three_days_only() {
    // proves: top 5 by units with ties to the lower id, over a rolling 3-day window
    let (engine, _store, clock) = clocked();
    let user = engine.create_user("kim", None).await.unwrap().id;
    engine.charge(user, Krw(10_000_000), None).await.unwrap();
    let mut products = Vec::new();
    for i in 0..7 {
        products.push(
            engine
                .create_product(&format!("p{i}"), Krw(100), 1000, None)
                .await
                .unwrap()
                .id,
        );
    }
    let buy = |p: ProductId, q: u64| {
        let engine = engine.clone();
        async move {
            let o = engine
                .place_order(order_of(user, &[(p, q)]), None)
                .await
                .unwrap();
            engine.pay_order(o.id, None).await.unwrap();
        }
    };
    buy(products[0], 50).await; // day 0: only this one leaves the window later
    clock.advance_ms(MS_PER_DAY);
    for (i, q) in [(1, 5), (2, 9), (3, 5), (4, 1), (5, 7), (6, 5)] {
        buy(products[i], q).await;
    }
    // before a refresh the ranking is as of the last refresh
    let top = engine.refresh_stats().await.unwrap();
    let ids: Vec<u64> = top.items.iter().map(|i| i.product_id.0).collect();
    assert_eq!(ids, vec![1, 3, 6, 2, 4]);
    assert_eq!(top.window_days, 3);
    clock.advance_ms(2 * MS_PER_DAY); // day 3: day 0 is out
    let top = engine.refresh_stats().await.unwrap();
    let ranked: Vec<(u64, u64)> = top
        .items
        .iter()
        .map(|i| (i.product_id.0, i.sold_quantity))
        .collect();
    assert_eq!(ranked, vec![(3, 9), (6, 7), (2, 5), (4, 5), (7, 5)]);
    assert_eq!(engine.top_products().await.unwrap(), top);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_lines_are_set_removed_and_emptied_by_an_order_from_the_cart() {
    // proves: cart semantics of API.md: set, remove, stock check, cleared by ordering
    let (engine, store, _clock) = clocked();
    let s = shop(&engine).await;
    engine.set_cart_item(s.user, s.mug, 2, None).await.unwrap();
    let cart = engine.set_cart_item(s.user, s.mug, 3, None).await.unwrap();
    assert_eq!(
        (cart.items.len(), cart.items[0].quantity, cart.total),
        (1, 3, Krw(36_000))
    );
    assert_eq!(
        engine
            .set_cart_item(s.user, s.pen, 11, None)
            .await
            .unwrap_err()
            .code(),
        "OUT_OF_STOCK"
    );
    engine.set_cart_item(s.user, s.pen, 4, None).await.unwrap();
    let cart = engine.remove_cart_item(s.user, s.pen).await.unwrap();
    assert_eq!(cart.items.len(), 1);
    engine.set_cart_item(s.user, s.pen, 1, None).await.unwrap();
    let source = PlaceOrder {
        user_id: s.user,
        source: OrderSource::Cart,
        user_coupon_id: None,
    };
    let order = engine.place_order(source.clone(), None).await.unwrap();
    assert_eq!(order.total_amount, Krw(37_500));
    assert!(engine.cart(s.user).await.unwrap().items.is_empty());
    assert_eq!(
        engine.place_order(source, None).await.unwrap_err().code(),
        "INVALID_REQUEST"
    );
    stop_and_recover(engine, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_key_gets_the_first_answer_and_changes_nothing() {
    // proves: idempotency keys (Stripe's semantics) on the engine, HTTP and embedded alike
    let (engine, _store, _clock) = clocked();
    let s = shop(&engine).await;
    let key = || Some(IdempotencyKey::new("charge-1").unwrap());
    let first = engine.charge(s.user, Krw(5_000), key()).await.unwrap();
    let again = engine.charge(s.user, Krw(5_000), key()).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(engine.balance(s.user).await.unwrap().balance, Krw(105_000));
    let other = engine.charge(s.user, Krw(6_000), key()).await.unwrap_err();
    assert_eq!(other.code(), "IDEMPOTENCY_KEY_REUSED");
    // concurrent requests with one key apply once
    let order_key = || Some(IdempotencyKey::new("order-7").unwrap());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let e = engine.clone();
            let o = order_of(s.user, &[(s.pen, 1)]);
            tokio::spawn(async move { e.place_order(o, order_key()).await.unwrap().id })
        })
        .collect();
    let ids: Vec<_> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert_eq!(engine.product(s.pen).await.unwrap().stock, 9);
    // a refused payment keeps its answer: the retry gets INSUFFICIENT_BALANCE again
    let big = engine
        .place_order(order_of(s.user, &[(s.mug, 10)]), None)
        .await
        .unwrap();
    let pay_key = || Some(IdempotencyKey::new("pay-big").unwrap());
    assert_eq!(
        engine
            .pay_order(big.id, pay_key())
            .await
            .unwrap_err()
            .code(),
        "INSUFFICIENT_BALANCE"
    );
    assert_eq!(
        engine
            .pay_order(big.id, pay_key())
            .await
            .unwrap_err()
            .code(),
        "INSUFFICIENT_BALANCE"
    );
    assert!(IdempotencyKey::new("").is_err());
    assert!(IdempotencyKey::new("x".repeat(129)).is_err());
    assert!(IdempotencyKey::new("tab\tkey").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_replayed_under_its_key_even_once_the_request_would_succeed() {
    // regression: a refused order retried with the same key was run again and answered 201
    let (engine, store, _clock) = clocked();
    let s = shop(&engine).await;
    let key = || Some(IdempotencyKey::new("too-many-mugs").unwrap());
    let order = || order_of(s.user, &[(s.mug, 11)]);
    let first = engine.place_order(order(), key()).await.unwrap_err();
    assert_eq!(first.code(), "OUT_OF_STOCK");
    engine.restock(s.mug, 5, None).await.unwrap();
    assert_eq!(
        engine.place_order(order(), key()).await.unwrap_err(),
        first,
        "the first answer, though stock would now do"
    );
    assert_eq!(engine.product(s.mug).await.unwrap().stock, 15);
    // after a snapshot moved the key to the key tables, and after a restart
    engine.snapshot().await.unwrap();
    assert_eq!(engine.place_order(order(), key()).await.unwrap_err(), first);
    let world = stop_and_recover(engine, &store).await;
    assert_eq!(world.products[s.mug.index()].reserved, 0);
    let engine = crate::engine_support::start(
        EngineConfig::default(),
        Box::new(store.clone()),
        Arc::new(commerce_engine::engine::SystemClock),
    );
    assert_eq!(engine.place_order(order(), key()).await.unwrap_err(), first);
    let other = engine
        .place_order(order_of(s.user, &[(s.mug, 1)]), key())
        .await
        .unwrap_err();
    assert_eq!(other.code(), "IDEMPOTENCY_KEY_REUSED");
    stop_and_recover(engine, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_leave_memory_with_each_snapshot_and_still_answer_from_the_store() {
    // proves: memory holds the keys of one snapshot interval; older ones answer from the key tables
    let (engine, store, _clock) = clocked();
    let s = shop(&engine).await;
    let key = |n: u64| Some(IdempotencyKey::new(format!("charge-{n}")).unwrap());
    let mut first = Vec::new();
    for n in 0..300 {
        first.push(engine.charge(s.user, Krw(1), key(n)).await.unwrap());
    }
    assert!(engine.metrics().idempotency_keys >= 300);
    engine.snapshot().await.unwrap();
    assert_eq!(
        engine.metrics().idempotency_keys,
        0,
        "moved to the key tables"
    );
    for n in [0, 150, 299] {
        let again = engine.charge(s.user, Krw(1), key(n)).await.unwrap();
        assert_eq!(again, first[n as usize], "key {n}");
    }
    assert_eq!(
        engine
            .charge(s.user, Krw(2), key(7))
            .await
            .unwrap_err()
            .code(),
        "IDEMPOTENCY_KEY_REUSED"
    );
    assert_eq!(
        engine.balance(s.user).await.unwrap().balance,
        Krw(100_300),
        "charged once each"
    );
    stop_and_recover(engine, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_does_not_leave_its_key_running() {
    // regression: a keyed request whose caller dropped it mid-way left its key
    // marked running forever, so every retry with that key waited forever
    let (engine, _store, _clock) = clocked();
    let s = shop(&engine).await;
    let key = || Some(IdempotencyKey::new("given-up").unwrap());
    for _ in 0..20 {
        let _ = tokio::time::timeout(
            std::time::Duration::from_micros(1),
            engine.charge(s.user, Krw(100), key()),
        )
        .await;
    }
    let retry = engine.charge(s.user, Krw(100), key());
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), retry)
        .await
        .expect("the retry answers");
    assert_eq!(answer.unwrap().balance, Krw(100_100));
    assert_eq!(engine.balance(s.user).await.unwrap().balance, Krw(100_100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_caller_gives_up_still_places_or_holds_nothing() {
    // regression: placing runs on the caller's task; a caller that dropped its
    // future after stock was held but before the order was journaled left that
    // stock held forever, with no order to release it
    let (engine, store, _clock) = clocked();
    let s = shop(&engine).await;
    for _ in 0..40 {
        // Polled once: the reservation is sent.
        let mut placing = Box::pin(engine.place_order(order_of(s.user, &[(s.pen, 1)]), None));
        let _ = futures_util::poll!(&mut placing);
        // Let the product take its hold, then give up before the order is journaled.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        drop(placing);
    }
    // Every saga runs to its end: wait (bounded) until each unit is either in stock or in an order.
    let mut accounted = 0;
    for _ in 0..1000 {
        let stock = engine.product(s.pen).await.unwrap().stock;
        let ordered = engine
            .user_orders(s.user, PageRequest::first(100))
            .await
            .unwrap()
            .items
            .len() as u64;
        accounted = stock + ordered;
        if accounted == 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(accounted, 10, "every unit is in stock or in a placed order");
    stop_and_recover(engine, &store).await;
}
