//! Shared helpers of the durability, crash, outbox and golden tests: start
//! engines on a store, drive a workload that leaves something of every
//! kind behind, and read back everything an engine shows, so that two
//! engines (before and after a restart) can be compared value for value.
#![allow(dead_code)] // each test module uses its own subset

use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{LineRequest, Order, OrderStatus};
use commerce_engine::domain::stats::TopItem;
use commerce_engine::domain::time::Timestamp;
use commerce_engine::domain::user::BalanceEntry;
use commerce_engine::domain::views::{CartView, CouponView, ProductView, UserCouponView, UserView};
use commerce_engine::domain::world::World;
use commerce_engine::engine::{
    Clock, Engine, EngineConfig, Error, IdempotencyKey, ManualClock, NewCoupon, OrderSource,
    PageRequest, PlaceOrder,
};
use commerce_engine::store::recovery::recover_store;
use commerce_engine::store::Store;
use std::sync::Arc;

/// A fixed start time: 2026-11-20T00:00:00Z.
pub const T0: Timestamp = Timestamp(1_795_132_800_000);

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
}

/// An engine configuration for tests: two actor threads, no background
/// expiry sweeps or stats refreshes that would race with the assertions.
pub fn config() -> EngineConfig {
    EngineConfig {
        arbiter_count: 2,
        expiry_sweep_interval_ms: 3_600_000,
        stats_interval_ms: 3_600_000,
        ..EngineConfig::default()
    }
}

pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

pub fn start(config: EngineConfig, store: impl Store, clock: Arc<dyn Clock>) -> Engine {
    crate::engine_support::start(config, Box::new(store), clock)
}

pub fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::new(k).expect("valid key"))
}

/// Recovers `store` the way `Engine::start` does, with the invariants asserted.
pub fn recovered(store: &dyn Store) -> World {
    recover_store(store).expect("the store recovers").0
}

pub fn items(lines: &[(u64, u64)]) -> OrderSource {
    OrderSource::Items(
        lines
            .iter()
            .map(|&(p, q)| LineRequest {
                product_id: ProductId(p),
                quantity: q,
            })
            .collect(),
    )
}

pub fn place(user: u64, lines: &[(u64, u64)], coupon: Option<u64>) -> PlaceOrder {
    PlaceOrder {
        user_id: UserId(user),
        source: items(lines),
        user_coupon_id: coupon.map(UserCouponId),
    }
}

/// Everything an engine shows through its facade.
#[derive(Debug, PartialEq)]
pub struct Observed {
    pub users: Vec<ObservedUser>,
    pub products: Vec<ProductView>,
    pub coupons: Vec<CouponView>,
    pub top: Vec<TopItem>,
    pub outbox_pending: usize,
}

#[derive(Debug, PartialEq)]
pub struct ObservedUser {
    pub user: UserView,
    pub history: Vec<BalanceEntry>,
    pub coupons: Vec<UserCouponView>,
    pub cart: CartView,
    pub orders: Vec<Order>,
}

/// Reads every user (with full balance history, coupons, cart and orders,
/// paging through every list), product and coupon, and refreshes the ranking.
pub async fn observe(engine: &Engine) -> Observed {
    let m = engine.metrics();
    let mut users = Vec::new();
    for id in 1..=m.users {
        users.push(observe_user(engine, UserId(id)).await);
    }
    let mut products = Vec::new();
    for id in 1..=m.products {
        products.push(engine.product(ProductId(id)).await.unwrap());
    }
    let mut coupons = Vec::new();
    for id in 1..=m.campaigns {
        coupons.push(engine.coupon(CouponId(id)).await.unwrap());
    }
    let top = engine.refresh_stats().await.unwrap().items;
    Observed {
        users,
        products,
        coupons,
        top,
        outbox_pending: engine.outbox_pending(),
    }
}

async fn observe_user(engine: &Engine, id: UserId) -> ObservedUser {
    let user = engine.user(id).await.unwrap();
    let mut history = Vec::new();
    let mut page = PageRequest::first(7);
    loop {
        let p = engine.history(id, page).await.unwrap();
        history.extend(p.items);
        match p.next {
            Some(n) => page.after = Some(n.parse().unwrap()),
            None => break,
        }
    }
    let mut coupons = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let p = engine.user_coupons(id, page).await.unwrap();
        coupons.extend(p.items);
        match p.next {
            Some(n) => page.after = Some(n.parse().unwrap()),
            None => break,
        }
    }
    let mut orders = Vec::new();
    let mut page = PageRequest::first(5);
    loop {
        let p = engine.user_orders(id, page).await.unwrap();
        orders.extend(p.items);
        match p.next {
            Some(n) => page.after = Some(n.parse().unwrap()),
            None => break,
        }
    }
    let cart = engine.cart(id).await.unwrap();
    ObservedUser {
        user,
        history,
        coupons,
        cart,
        orders,
    }
}

/// What [`populate`] did, for the assertions that follow it.
#[derive(Debug, Clone)]
pub struct Populated {
    pub paid: Vec<OrderId>,
    pub pending: Vec<OrderId>,
    pub cancelled: OrderId,
    pub failed: OrderId,
    /// Keyed requests made, with what each answered: (key, charge amount, user).
    pub charge_key: (String, u64, UserId),
}

/// A workload that leaves every kind of state behind: users with charges
/// and payments, products restocked, a coupon campaign sold out, carts,
/// orders pending, paid (with and without a coupon), cancelled and failed,
/// and idempotency keys. Every call must succeed (or fail as planned).
pub async fn populate(engine: &Engine, tag: &str) -> Populated {
    let k = |s: &str| key(&format!("{tag}-{s}"));
    for i in 1..=4 {
        engine
            .create_user(&format!("user {i}"), k(&format!("user-{i}")))
            .await
            .unwrap();
    }
    for (i, (price, stock)) in [(1_000, 50), (2_500, 20), (40_000, 5)].iter().enumerate() {
        engine
            .create_product(&format!("product {i}"), Krw(*price), *stock, None)
            .await
            .unwrap();
    }
    engine
        .restock(ProductId(3), 7, k("restock-3"))
        .await
        .unwrap();
    let campaign = engine
        .create_coupon(
            NewCoupon {
                name: "ten percent".into(),
                discount: Discount::Percent { percent: 10 },
                quantity: 2,
                expires_at: None,
                terms: Default::default(),
            },
            None,
        )
        .await
        .unwrap();
    engine
        .create_coupon(
            NewCoupon {
                name: "fixed".into(),
                discount: Discount::Fixed { amount: Krw(500) },
                quantity: 10,
                expires_at: Some(T0.plus_ms(86_400_000 * 30)),
                terms: Default::default(),
            },
            k("coupon-2"),
        )
        .await
        .unwrap();
    let c1 = engine
        .issue_coupon(campaign.id, UserId(1), k("issue-1-1"))
        .await
        .unwrap();
    let c2 = engine
        .issue_coupon(campaign.id, UserId(2), None)
        .await
        .unwrap()
        .id;
    // Sold out: refused, changes nothing.
    assert!(engine
        .issue_coupon(campaign.id, UserId(3), None)
        .await
        .is_err());
    let fixed_u3 = engine
        .issue_coupon(CouponId(2), UserId(3), None)
        .await
        .unwrap();
    engine
        .charge(UserId(1), Krw(100_000), k("charge-1"))
        .await
        .unwrap();
    engine.charge(UserId(2), Krw(3_000), None).await.unwrap();
    engine.charge(UserId(3), Krw(250_000), None).await.unwrap();
    engine.charge(UserId(3), Krw(1_234), None).await.unwrap();

    // Paid with a percent coupon.
    let o1 = engine
        .place_order(place(1, &[(1, 3), (2, 2)], Some(c1.id.0)), k("place-1"))
        .await
        .unwrap();
    engine.pay_order(o1.id, k("pay-1")).await.unwrap();
    // Paid with a fixed coupon, from the cart.
    engine
        .set_cart_item(UserId(3), ProductId(3), 2, None)
        .await
        .unwrap();
    engine
        .set_cart_item(UserId(3), ProductId(1), 1, k("cart-3-1"))
        .await
        .unwrap();
    let o2 = engine
        .place_order(
            PlaceOrder {
                user_id: UserId(3),
                source: OrderSource::Cart,
                user_coupon_id: Some(fixed_u3.id),
            },
            None,
        )
        .await
        .unwrap();
    engine.pay_order(o2.id, None).await.unwrap();
    // Cancelled: stock and coupon come back.
    let cancelled = engine
        .place_order(place(2, &[(2, 1)], Some(c2.0)), None)
        .await
        .unwrap();
    engine
        .cancel_order(cancelled.id, k("cancel"))
        .await
        .unwrap();
    // Failed for want of balance (user 2 has 3,000 KRW).
    let failed = engine
        .place_order(place(2, &[(3, 1)], None), None)
        .await
        .unwrap();
    let refused = engine.pay_order(failed.id, k("pay-failed")).await;
    assert!(matches!(refused, Err(Error::Rejected(_))), "{refused:?}");
    // Pending, one holding a coupon.
    let p1 = engine
        .place_order(place(2, &[(1, 4)], Some(c2.0)), None)
        .await
        .unwrap();
    let p2 = engine
        .place_order(place(4, &[(2, 1), (3, 1)], None), k("place-4"))
        .await
        .unwrap();
    // A cart left behind.
    engine
        .set_cart_item(UserId(4), ProductId(1), 9, None)
        .await
        .unwrap();
    engine
        .set_cart_item(UserId(4), ProductId(2), 1, None)
        .await
        .unwrap();
    engine
        .remove_cart_item(UserId(4), ProductId(2))
        .await
        .unwrap();
    Populated {
        paid: vec![o1.id, o2.id],
        pending: vec![p1.id, p2.id],
        cancelled: cancelled.id,
        failed: failed.id,
        charge_key: (format!("{tag}-charge-1"), 100_000, UserId(1)),
    }
}

/// Asserts what [`populate`] promises, so the comparisons after a restart
/// are between meaningful states and not two empty ones.
pub fn assert_populated(o: &Observed, p: &Populated) {
    assert_eq!(o.users.len(), 4);
    assert_eq!(o.products.len(), 3);
    assert_eq!(o.coupons.len(), 2);
    let order = |id: OrderId| {
        o.users
            .iter()
            .flat_map(|u| &u.orders)
            .find(|x| x.id == id)
            .unwrap_or_else(|| panic!("order {id} is shown"))
    };
    for id in &p.paid {
        assert_eq!(order(*id).status, OrderStatus::Paid);
    }
    for id in &p.pending {
        assert_eq!(order(*id).status, OrderStatus::Pending);
    }
    assert_eq!(order(p.cancelled).status, OrderStatus::Cancelled);
    assert_eq!(order(p.failed).status, OrderStatus::Failed);
    assert!(!o.top.is_empty(), "the ranking shows the paid orders");
    assert_eq!(o.coupons[0].remaining, 0);
    assert!(!o.users[3].cart.items.is_empty());
}

/// The stored answer of idempotency key `key` in a recovered store: among
/// the keys of the journal's tail, or in the store's key tables.
pub fn stored_key(
    store: &dyn commerce_engine::store::Store,
    world: &World,
    key: &str,
) -> Option<commerce_engine::domain::world::StoredKey> {
    let hash = commerce_engine::domain::key_hash::key_hash(key);
    if let Some(k) = world.dirty.keys.iter().rev().find(|k| k.hash == hash) {
        return Some(k.key.clone());
    }
    commerce_engine::store::ArchiveReader(store.archive())
        .key(hash)
        .expect("the key tables read")
}
