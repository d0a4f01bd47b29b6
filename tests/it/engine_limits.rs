//! Per-user purchase limits under races, product updates, and coupon
//! windows, at the engine, live and after recovery.

use crate::durability_support::{config, manual_clock, T0};
use crate::engine_support::*;

use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::coupon_terms::CouponTerms;
use commerce_engine::domain::ids::{OrderId, ProductId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::OrderStatus;
use commerce_engine::domain::product::ProductPatch;
use commerce_engine::engine::{Engine, Error, NewCoupon, PlaceOrder};
use std::collections::HashMap;

async fn user_with(engine: &Engine, name: &str, balance: u64) -> UserId {
    let id = engine.create_user(name, None).await.unwrap().id;
    if balance > 0 {
        engine.charge(id, Krw(balance), None).await.unwrap();
    }
    id
}

async fn limited(engine: &Engine, stock: u64, max: u64) -> ProductId {
    engine
        .create_limited_product("drop", Krw(1_000), stock, Some(max), None)
        .await
        .unwrap()
        .id
}

/// Places every order at once; answers the ids placed and the refusals by code.
async fn place_all(
    engine: &Engine,
    orders: Vec<PlaceOrder>,
) -> (Vec<OrderId>, HashMap<&'static str, usize>) {
    let tasks: Vec<_> = orders
        .into_iter()
        .map(|o| {
            let e = engine.clone();
            tokio::spawn(async move { e.place_order(o, None).await })
        })
        .collect();
    let mut placed = Vec::new();
    let mut refused = HashMap::new();
    for t in futures_util::future::join_all(tasks).await {
        match t.unwrap() {
            Ok(order) => placed.push(order.id),
            Err(e) => *refused.entry(e.code()).or_default() += 1,
        }
    }
    (placed, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_orders_against_a_limit_of_two_place_exactly_two_then_one_more_after_a_cancel(
) {
    // proves the limit is exact under a race of one user, and a cancel frees exactly its units
    let (engine, store) = engine();
    let user = user_with(&engine, "kim", 0).await;
    let product = limited(&engine, 1_000, 2).await;
    let orders = vec![order_of(user, &[(product, 1)]); 30];
    let (placed, refused) = place_all(&engine, orders.clone()).await;
    assert_eq!(placed.len(), 2, "{refused:?}");
    assert_eq!(refused.get("PURCHASE_LIMIT_EXCEEDED"), Some(&28));
    assert_eq!(engine.units_held(user, product).await.unwrap(), 2);
    assert_eq!(engine.product(product).await.unwrap().stock, 998);

    engine.cancel_order(placed[0], None).await.unwrap();
    assert_eq!(engine.units_held(user, product).await.unwrap(), 1);
    let (again, refused) = place_all(&engine, orders).await;
    assert_eq!(again.len(), 1, "{refused:?}");
    assert_eq!(refused.get("PURCHASE_LIMIT_EXCEEDED"), Some(&29));
    assert_eq!(engine.units_held(user, product).await.unwrap(), 2);
    assert_eq!(engine.product(product).await.unwrap().stock, 998);

    let world = stop_and_recover(engine, &store).await;
    assert_eq!(
        world.users[0].limited.of(product),
        2,
        "recovery counts the same"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_racing_for_a_limited_drop_each_get_at_most_the_limit_and_stock_is_conserved() {
    // proves per-user counts stay exact while 20 users race 5 orders of 2 units each, at most 3 per user
    let (engine, store) = engine();
    // Enough stock that only limits refuse: an order refused by its user's
    // limit held its stock for a moment, and could have refused another.
    let product = limited(&engine, 1_000, 3).await;
    let mut users = Vec::new();
    for i in 0..20 {
        users.push(user_with(&engine, &format!("u{i}"), 0).await);
    }
    let orders: Vec<PlaceOrder> = users
        .iter()
        .flat_map(|&u| std::iter::repeat_n(order_of(u, &[(product, 2)]), 5))
        .collect();
    let (placed, refused) = place_all(&engine, orders).await;
    // two units then a third would pass 3: each user places exactly one order of 2
    assert_eq!(placed.len(), 20, "{refused:?}");
    assert_eq!(refused.get("PURCHASE_LIMIT_EXCEEDED"), Some(&80));
    for &u in &users {
        assert_eq!(engine.units_held(u, product).await.unwrap(), 2);
    }
    assert_eq!(engine.product(product).await.unwrap().stock, 960);
    let world = stop_and_recover(engine, &store).await;
    for u in &world.users {
        assert_eq!(u.limited.of(product), 2, "user {}", u.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_keeps_units_held_while_failure_and_expiry_free_them() {
    // proves which ends of an order free its units: paid keeps them; failed and expired give them back
    let clock = manual_clock();
    let (engine, store) = engine_with(config(), clock.clone());
    let rich = user_with(&engine, "rich", 10_000).await;
    let poor = user_with(&engine, "poor", 0).await;
    let product = limited(&engine, 50, 2).await;

    let paid = engine
        .place_order(order_of(rich, &[(product, 2)]), None)
        .await
        .unwrap();
    engine.pay_order(paid.id, None).await.unwrap();
    assert_eq!(engine.units_held(rich, product).await.unwrap(), 2);
    let more = engine
        .place_order(order_of(rich, &[(product, 1)]), None)
        .await;
    assert_eq!(more.unwrap_err().code(), "PURCHASE_LIMIT_EXCEEDED");

    let failing = engine
        .place_order(order_of(poor, &[(product, 2)]), None)
        .await
        .unwrap();
    assert!(engine.pay_order(failing.id, None).await.is_err());
    assert_eq!(engine.units_held(poor, product).await.unwrap(), 0);

    let expiring = engine
        .place_order(order_of(poor, &[(product, 2)]), None)
        .await
        .unwrap();
    clock.advance_ms(config().order_ttl_ms + 1);
    assert_eq!(engine.expire_due_orders().await.unwrap(), 1);
    assert_eq!(
        engine.order(expiring.id).await.unwrap().status,
        OrderStatus::Expired
    );
    assert_eq!(engine.units_held(poor, product).await.unwrap(), 0);

    let world = stop_and_recover(engine, &store).await;
    assert_eq!(world.users[0].limited.of(product), 2);
    assert_eq!(world.users[1].limited.of(product), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_limit_refuses_new_units_and_a_removed_one_still_counts() {
    // proves limit changes by update: lowering keeps what is held, removing lets anything in, restoring counts all since
    let (engine, store) = engine();
    let user = user_with(&engine, "kim", 0).await;
    let product = limited(&engine, 100, 5).await;
    engine
        .place_order(order_of(user, &[(product, 4)]), None)
        .await
        .unwrap();
    let limit = |max| ProductPatch {
        max_per_user: Some(max),
        ..ProductPatch::default()
    };
    let view = engine
        .update_product(product, limit(Some(2)), None)
        .await
        .unwrap();
    assert_eq!(view.max_per_user, Some(2));
    let refused = engine
        .place_order(order_of(user, &[(product, 1)]), None)
        .await;
    assert_eq!(refused.unwrap_err().code(), "PURCHASE_LIMIT_EXCEEDED");
    assert_eq!(engine.units_held(user, product).await.unwrap(), 4);

    engine
        .update_product(product, limit(None), None)
        .await
        .unwrap();
    engine
        .place_order(order_of(user, &[(product, 10)]), None)
        .await
        .unwrap();
    assert_eq!(engine.units_held(user, product).await.unwrap(), 14);
    engine
        .update_product(product, limit(Some(15)), None)
        .await
        .unwrap();
    let refused = engine
        .place_order(order_of(user, &[(product, 2)]), None)
        .await;
    assert_eq!(refused.unwrap_err().code(), "PURCHASE_LIMIT_EXCEEDED");
    let world = stop_and_recover(engine, &store).await;
    assert_eq!(world.users[0].limited.of(product), 14);
    assert_eq!(world.products[0].max_per_user, Some(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_first_set_on_a_product_already_sold_counts_the_units_bought_before_it() {
    // proves every unit counts: 2 paid and 1 pending before any limit, then a limit of 3 refuses a fourth, live and after recovery
    let (engine, store) = engine();
    let user = user_with(&engine, "kim", 10_000).await;
    let product = engine
        .create_product("mug", Krw(1_000), 100, None)
        .await
        .unwrap()
        .id;
    let paid = engine
        .place_order(order_of(user, &[(product, 2)]), None)
        .await
        .unwrap();
    engine.pay_order(paid.id, None).await.unwrap();
    engine
        .place_order(order_of(user, &[(product, 1)]), None)
        .await
        .unwrap();
    assert_eq!(engine.units_held(user, product).await.unwrap(), 3);
    let limit = ProductPatch {
        max_per_user: Some(Some(3)),
        ..ProductPatch::default()
    };
    engine.update_product(product, limit, None).await.unwrap();
    let refused = engine
        .place_order(order_of(user, &[(product, 1)]), None)
        .await;
    assert_eq!(refused.unwrap_err().code(), "PURCHASE_LIMIT_EXCEEDED");
    let world = stop_and_recover(engine, &store).await;
    assert_eq!(world.users[0].limited.of(product), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_set_while_unlimited_orders_are_in_flight_still_counts_them() {
    // proves the switch to a limit waits for orders answered unlimited: orders begun after the limit's
    // answer are placed only while the user's units, those in flight included, stay within it (24 rounds)
    const MAX: u64 = 6;
    let spawn_orders = |engine: &Engine, user, product, n| -> Vec<_> {
        (0..n)
            .map(|_| {
                let e = engine.clone();
                tokio::spawn(async move {
                    match e.place_order(order_of(user, &[(product, 1)]), None).await {
                        Ok(_) => true,
                        Err(e) if e.code() == "PURCHASE_LIMIT_EXCEEDED" => false,
                        Err(e) => panic!("only the limit refuses: {e:?}"),
                    }
                })
            })
            .collect()
    };
    let placed = |results: Vec<Result<bool, tokio::task::JoinError>>| -> u64 {
        results.into_iter().map(|r| u64::from(r.unwrap())).sum()
    };
    for round in 0..24u64 {
        let (engine, store) = engine();
        let user = user_with(&engine, "kim", 0).await;
        let product = engine
            .create_product("drop", Krw(1_000), 1_000, None)
            .await
            .unwrap()
            .id;
        // before: 0 to 11 orders, in flight as the limit is set
        let before = spawn_orders(&engine, user, product, round % 12);
        tokio::task::yield_now().await;
        let limit = ProductPatch {
            max_per_user: Some(Some(MAX)),
            ..ProductPatch::default()
        };
        engine.update_product(product, limit, None).await.unwrap();
        let after = spawn_orders(&engine, user, product, 8);
        let tried_before = before.len() as u64;
        let before = placed(futures_util::future::join_all(before).await);
        let after = placed(futures_util::future::join_all(after).await);
        let (total, refused) = (before + after, tried_before + 8 - before - after);
        let seen =
            format!("round {round}: {before} placed before the limit of {MAX}, {after} after it");
        // Orders answered before the limit may pass it; none answered under it may.
        assert!(after == 0 || total <= MAX, "{seen}");
        // Units are never freed here, so a refusal means the limit was reached.
        assert!(refused == 0 || total >= MAX, "{seen}, {refused} refused");
        let held = engine.units_held(user, product).await.unwrap();
        assert_eq!(held, total, "{seen}: the count is every unit placed");
        let world = stop_and_recover(engine, &store).await;
        assert_eq!(world.users[0].limited.of(product), held, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_change_applies_to_orders_placed_after_it_and_carts_show_the_current_price() {
    // proves PATCH price and name: the order before keeps its price, the order after and the cart take the new one
    let (engine, store) = engine();
    let user = user_with(&engine, "kim", 0).await;
    let product = engine
        .create_product("mug", Krw(1_000), 10, None)
        .await
        .unwrap()
        .id;
    let before = engine
        .place_order(order_of(user, &[(product, 1)]), None)
        .await
        .unwrap();
    engine.set_cart_item(user, product, 2, None).await.unwrap();
    let patch = ProductPatch {
        name: Some("big mug".into()),
        price: Some(Krw(1_500)),
        max_per_user: None,
    };
    let view = engine.update_product(product, patch, None).await.unwrap();
    assert_eq!(
        (view.name.as_str(), view.price, view.stock),
        ("big mug", Krw(1_500), 9)
    );
    let after = engine
        .place_order(order_of(user, &[(product, 1)]), None)
        .await
        .unwrap();
    assert_eq!(before.items[0].unit_price, Krw(1_000));
    assert_eq!(after.items[0].unit_price, Krw(1_500));
    assert_eq!(after.items[0].name, "big mug");
    let cart = engine.cart(user).await.unwrap();
    assert_eq!(
        (cart.items[0].price, cart.items[0].name.as_str(), cart.total),
        (Krw(1_500), "big mug", Krw(3_000))
    );
    let world = stop_and_recover(engine, &store).await;
    assert_eq!(
        (world.products[0].name.as_str(), world.products[0].price),
        ("big mug", Krw(1_500))
    );
}

async fn windowed_coupon(
    engine: &Engine,
    discount: Discount,
    terms: CouponTerms,
) -> Result<u64, Error> {
    let new = NewCoupon {
        name: "window".into(),
        discount,
        quantity: 10,
        expires_at: Some(T0.plus_ms(10_000)),
        terms,
    };
    engine.create_coupon(new, None).await.map(|c| c.id.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupon_windows_start_later_require_a_minimum_and_cap_a_percent_discount() {
    // proves starts_at, min_order_amount and max_discount end to end, and that a refused order changes nothing
    let clock = manual_clock();
    let (engine, store) = engine_with(config(), clock.clone());
    let user = user_with(&engine, "kim", 0).await;
    let product = engine
        .create_product("mug", Krw(10_000), 10, None)
        .await
        .unwrap()
        .id;
    let terms = CouponTerms {
        starts_at: Some(T0.plus_ms(1_000)),
        min_order_amount: Some(Krw(20_000)),
        max_discount: Some(Krw(3_000)),
    };
    let coupon = windowed_coupon(&engine, Discount::Percent { percent: 50 }, terms)
        .await
        .unwrap();
    let coupon = commerce_engine::domain::ids::CouponId(coupon);
    let view = engine.coupon(coupon).await.unwrap();
    assert_eq!(
        (view.starts_at, view.min_order_amount, view.max_discount),
        (terms.starts_at, terms.min_order_amount, terms.max_discount)
    );
    let early = engine.issue_coupon(coupon, user, None).await;
    assert_eq!(early.unwrap_err().code(), "COUPON_NOT_STARTED");
    clock.advance_ms(1_000);
    let held = engine.issue_coupon(coupon, user, None).await.unwrap();
    assert_eq!(held.min_order_amount, Some(Krw(20_000)));

    let with_coupon = |quantity| PlaceOrder {
        user_coupon_id: Some(held.id),
        ..order_of(user, &[(product, quantity)])
    };
    let small = engine.place_order(with_coupon(1), None).await;
    assert_eq!(small.unwrap_err().code(), "INVALID_COUPON");
    assert_eq!(
        engine.product(product).await.unwrap().stock,
        10,
        "nothing reserved"
    );
    let order = engine.place_order(with_coupon(2), None).await.unwrap();
    // 50% of 20,000 is 10,000, capped at 3,000
    assert_eq!(
        (order.total_amount, order.discount_amount, order.pay_amount),
        (Krw(20_000), Krw(3_000), Krw(17_000))
    );
    let fixed_cap = windowed_coupon(
        &engine,
        Discount::Fixed { amount: Krw(100) },
        CouponTerms {
            max_discount: Some(Krw(50)),
            ..CouponTerms::default()
        },
    )
    .await;
    assert_eq!(fixed_cap.unwrap_err().code(), "INVALID_REQUEST");
    let world = stop_and_recover(engine, &store).await;
    assert_eq!(world.campaigns[0].terms, terms);
    assert_eq!(world.users[0].coupons[0].terms, terms);
}
