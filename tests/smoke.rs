use commerce_engine::domain::ids::*;
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{LineRequest, OrderStatus};
use commerce_engine::engine::*;
use commerce_engine::store::MemoryStore;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let store = MemoryStore::new();
    let engine = Engine::start(
        EngineConfig::default(),
        Box::new(store.clone()),
        Arc::new(SystemClock),
    )
    .unwrap();
    eprintln!("started");
    let u = engine.create_user("kim", None).await.unwrap();
    eprintln!("user");
    assert_eq!(u.id, UserId(1));
    let b = engine.charge(u.id, Krw(10_000), None).await.unwrap();
    assert_eq!(b.balance, Krw(10_000));
    eprintln!("charged");
    let p = engine
        .create_product("mug", Krw(3000), 5, None)
        .await
        .unwrap();
    let o = engine
        .place_order(
            PlaceOrder {
                user_id: u.id,
                source: OrderSource::Items(vec![LineRequest {
                    product_id: p.id,
                    quantity: 2,
                }]),
                user_coupon_id: None,
            },
            None,
        )
        .await
        .unwrap();
    eprintln!("placed");
    assert_eq!(o.total_amount, Krw(6000));
    assert_eq!(engine.product(p.id).await.unwrap().stock, 3);
    let paid = engine.pay_order(o.id, None).await.unwrap();
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_eq!(engine.balance(u.id).await.unwrap().balance, Krw(4000));
    let top = engine.refresh_stats().await.unwrap();
    assert_eq!(top.items[0].sold_quantity, 2);
    eprintln!("paid");
    let e2 = engine.clone();
    tokio::task::spawn_blocking(move || e2.shutdown())
        .await
        .unwrap();
    let engine = Engine::start(
        EngineConfig::default(),
        Box::new(store),
        Arc::new(SystemClock),
    )
    .unwrap();
    assert_eq!(engine.balance(u.id).await.unwrap().balance, Krw(4000));
    assert_eq!(engine.order(o.id).await.unwrap().status, OrderStatus::Paid);
    assert_eq!(engine.product(p.id).await.unwrap().stock, 3);
    let h = engine.history(u.id, PageRequest::first(10)).await.unwrap();
    assert_eq!(h.items.len(), 2);
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .unwrap();
}
