//! Races against one hot coupon, product or wallet, with exact counts, then
//! a mixed storm with conservation checks, live and after recovery.

use crate::engine_support;

use commerce_engine::bench::target::Target;
use commerce_engine::check::{Acknowledged, Expect};
use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::ids::{CouponId, ProductId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderStatus};
use commerce_engine::engine::{Engine, Error, NewCoupon, OrderSource, PageRequest, PlaceOrder};
use engine_support::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

async fn users(engine: &Engine, count: usize) -> Vec<UserId> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        ids.push(
            engine
                .create_user(&format!("user-{i}"), None)
                .await
                .unwrap()
                .id,
        );
    }
    ids
}

async fn campaign(engine: &Engine, quantity: u64) -> CouponId {
    let new = NewCoupon {
        name: "flash".into(),
        discount: Discount::Percent { percent: 10 },
        quantity,
        expires_at: None,
        terms: Default::default(),
    };
    engine.create_coupon(new, None).await.unwrap().id
}

/// Starts one task per input at once against `engine`, and tallies the answers by code.
async fn race<I, T, F, Fut>(
    engine: &Engine,
    inputs: impl IntoIterator<Item = I>,
    call: F,
) -> HashMap<&'static str, usize>
where
    T: Send + 'static,
    F: Fn(Engine, I) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
{
    let tasks: Vec<_> = inputs
        .into_iter()
        .map(|i| tokio::spawn(call(engine.clone(), i)))
        .collect();
    let results: Vec<_> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    tally(&results)
}

fn code(r: &Result<impl Sized, Error>) -> &'static str {
    match r {
        Ok(_) => "OK",
        Err(e) => e.code(),
    }
}

fn tally<T>(results: &[Result<T, Error>]) -> HashMap<&'static str, usize> {
    let mut t = HashMap::new();
    for r in results {
        *t.entry(code(r)).or_default() += 1;
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_users_racing_for_fifty_coupons_get_exactly_fifty() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves: a campaign never issues more than its quantity, whatever the concurrency
    let (engine, store) = engine();
    let ids = users(&engine, 200).await;
    let coupon = campaign(&engine, 50).await;
    let t = race(&engine, ids.clone(), move |e, u| async move {
        e.issue_coupon(coupon, u, None).await
    })
    .await;
    assert_eq!(t.get("OK"), Some(&50), "{t:?}");
    assert_eq!(t.get("COUPON_SOLD_OUT"), Some(&150), "{t:?}");
    assert_eq!(engine.coupon(coupon).await.unwrap().remaining, 0);
    let mut held = 0;
    for &u in &ids {
        held += engine
            .user_coupons(u, PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len();
    }
    assert_eq!(held, 50);
    let world = stop_and_recover(engine, &store).await;
    assert_eq!(world.campaigns[0].issued.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_asking_fifty_times_at_once_gets_exactly_one_coupon() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves: one coupon per user per campaign under concurrency
    let (engine, store) = engine();
    let user = users(&engine, 1).await[0];
    let coupon = campaign(&engine, 100).await;
    let t = race(&engine, 0..50, move |e, _| async move {
        e.issue_coupon(coupon, user, None).await
    })
    .await;
    assert_eq!(t.get("OK"), Some(&1), "{t:?}");
    assert_eq!(t.get("COUPON_ALREADY_ISSUED"), Some(&49), "{t:?}");
    assert_eq!(engine.coupon(coupon).await.unwrap().remaining, 99);
    assert_eq!(
        engine
            .user_coupons(user, PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    stop_and_recover(engine, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_orders_on_stock_of_one_hundred_place_exactly_one_hundred() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves: stock is never oversold and never negative under a race on one product
    let (engine, store) = engine();
    let ids = users(&engine, 300).await;
    let product = engine
        .create_product("hot", Krw(1000), 100, None)
        .await
        .unwrap()
        .id;
    let t = race(&engine, ids.clone(), move |e, u| async move {
        e.place_order(order_of(u, &[(product, 1)]), None).await
    })
    .await;
    assert_eq!(t.get("OK"), Some(&100), "{t:?}");
    assert_eq!(t.get("OUT_OF_STOCK"), Some(&200), "{t:?}");
    assert_eq!(engine.product(product).await.unwrap().stock, 0);
    let world = stop_and_recover(engine, &store).await;
    let p = &world.products[0];
    assert_eq!((p.stock, p.reserved, p.sold), (0, 100, 0));
    assert_eq!(world.orders.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_payments_on_a_balance_for_ten_pay_exactly_ten() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves: a balance never goes negative; refused payments fail their order and return stock
    let (engine, store) = engine();
    let user = users(&engine, 1).await[0];
    let product = engine
        .create_product("item", Krw(1000), 1000, None)
        .await
        .unwrap()
        .id;
    engine.charge(user, Krw(10_000), None).await.unwrap();
    let mut orders = Vec::new();
    for _ in 0..100 {
        orders.push(
            engine
                .place_order(order_of(user, &[(product, 1)]), None)
                .await
                .unwrap()
                .id,
        );
    }
    let t = race(&engine, orders.clone(), move |e, o| async move {
        e.pay_order(o, None).await
    })
    .await;
    assert_eq!(t.get("OK"), Some(&10), "{t:?}");
    assert_eq!(t.get("INSUFFICIENT_BALANCE"), Some(&90), "{t:?}");
    assert_eq!(engine.balance(user).await.unwrap().balance, Krw(0));
    assert_eq!(engine.product(product).await.unwrap().stock, 990);
    let mut failed = 0;
    for &o in &orders {
        if engine.order(o).await.unwrap().status == OrderStatus::Failed {
            failed += 1;
        }
    }
    assert_eq!(failed, 90);
    let world = stop_and_recover(engine, &store).await;
    let p = &world.products[0];
    assert_eq!((p.stock, p.reserved, p.sold), (990, 0, 10));
    assert_eq!(world.users[0].balance, Krw(0));
}

/// The storm's acknowledgements, to add to (a panicked worker's lock still reads).
fn told(acked: &Mutex<Acknowledged>) -> MutexGuard<'_, Acknowledged> {
    acked.lock().unwrap_or_else(|e| e.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_storm_conserves_stock_money_and_coupons() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves: under seconds of concurrent charges, orders, payments, cancels, restocks and
                                         // coupon issues over 50 users and 10 products, every conservation law holds exactly
    const USERS: usize = 50;
    const PRODUCTS: usize = 10;
    const STOCK: u64 = 200;
    let (engine, store) = engine();
    let users = users(&engine, USERS).await;
    let mut products = Vec::new();
    for i in 0..PRODUCTS {
        products.push(
            engine
                .create_product(&format!("p{i}"), Krw(100 + i as u64 * 37), STOCK, None)
                .await
                .unwrap()
                .id,
        );
    }
    let coupon = campaign(&engine, 30).await;
    // What the storm's clients saw acknowledged.
    let mut acked = Acknowledged::default();
    for u in &users {
        acked.user(*u);
    }
    for p in &products {
        acked.product(*p).stocked = STOCK;
    }
    acked.coupon(coupon).quantity = 30;
    let acked = Arc::new(Mutex::new(acked));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for worker in 0..32u64 {
        let (engine, users, products, acked) = (
            engine.clone(),
            users.clone(),
            products.clone(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(worker * 7919 + 1);
            let mut mine: Vec<Order> = Vec::new();
            while Instant::now() < deadline {
                let u = rng.below(USERS as u64) as usize;
                match rng.below(100) {
                    0..=14 => {
                        let amount = 1 + rng.below(20_000);
                        if engine.charge(users[u], Krw(amount), None).await.is_ok() {
                            told(&acked).user(users[u]).charged += amount;
                        }
                    }
                    15..=49 => {
                        let lines: Vec<(ProductId, u64)> = {
                            let first = rng.below(PRODUCTS as u64) as usize;
                            let count = 1 + rng.below(3) as usize;
                            (0..count)
                                .map(|k| (products[(first + k) % PRODUCTS], 1 + rng.below(4)))
                                .collect()
                        };
                        let source = OrderSource::Items(
                            lines
                                .iter()
                                .map(|&(product_id, quantity)| {
                                    commerce_engine::domain::order::LineRequest {
                                        product_id,
                                        quantity,
                                    }
                                })
                                .collect(),
                        );
                        if let Ok(o) = engine
                            .place_order(
                                PlaceOrder {
                                    user_id: users[u],
                                    source,
                                    user_coupon_id: None,
                                },
                                None,
                            )
                            .await
                        {
                            let mut t = told(&acked);
                            o.quantities().for_each(|(p, q)| t.product(p).placed += q);
                            mine.push(o);
                        }
                    }
                    50..=79 => {
                        if let Some(o) = mine.pop() {
                            let paid = engine.pay_order(o.id, None).await;
                            let mut t = told(&acked);
                            // Refused (too little balance), it failed and gave its units back.
                            let expect = match &paid {
                                Ok(p) => {
                                    t.user(p.user_id).paid += p.pay_amount.0;
                                    Expect::PAID
                                }
                                Err(_) => Expect::only(OrderStatus::Failed),
                            };
                            for (p, q) in o.quantities() {
                                let units = t.product(p);
                                if paid.is_ok() {
                                    units.sold += q
                                } else {
                                    units.returned += q
                                }
                            }
                            t.order(o.id, expect);
                        }
                    }
                    80..=89 => {
                        if let Some(o) = mine.pop() {
                            if engine.cancel_order(o.id, None).await.is_ok() {
                                let mut t = told(&acked);
                                o.quantities().for_each(|(p, q)| t.product(p).returned += q);
                                t.order(o.id, Expect::only(OrderStatus::Cancelled));
                            }
                        }
                    }
                    90..=94 => {
                        if engine.issue_coupon(coupon, users[u], None).await.is_ok() {
                            told(&acked).coupon(coupon).issued += 1;
                        }
                    }
                    _ => {
                        let p = rng.below(PRODUCTS as u64) as usize;
                        let q = 1 + rng.below(10);
                        if engine.restock(products[p], q, None).await.is_ok() {
                            told(&acked).product(products[p]).stocked += q;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Live through the engine's reads, then recovered: money, stock,
    // orders and coupons exactly as acknowledged.
    let acked = told(&acked).clone();
    let reads = Target::Embedded(engine.clone());
    let live = acked.check_api(&reads, usize::MAX).await;
    assert!(live.ok(), "{live:?}");
    let world = stop_and_recover(engine, &store).await;
    assert_eq!(acked.check_world(&world), Vec::<String>::new());
    assert!(acked.coupons[&coupon].issued > 0 && acked.orders.len() > 100);
}

/// A store whose every append takes a while, so the journal queue fills up.
#[derive(Clone)]
struct SlowStore(commerce_engine::store::MemoryStore);

impl commerce_engine::store::Store for SlowStore {
    fn append(
        &self,
        first_seq: u64,
        frames: &[u8],
    ) -> Result<(), commerce_engine::store::StorageError> {
        std::thread::sleep(Duration::from_millis(20));
        self.0.append(first_seq, frames)
    }
    fn snapshot(
        &self,
        seq: u64,
        entries: commerce_engine::store::SnapshotEntries,
    ) -> Result<(), commerce_engine::store::StorageError> {
        self.0.snapshot(seq, entries)
    }
    fn load(&self) -> Result<commerce_engine::store::Loaded, commerce_engine::store::StorageError> {
        self.0.load()
    }
    fn archive(&self) -> std::sync::Arc<dyn commerce_engine::store::Archive> {
        self.0.archive()
    }
    fn outbox(&self) -> std::sync::Arc<dyn commerce_engine::store::OutboxStore> {
        self.0.outbox()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_queue_answers_overloaded_and_changes_nothing() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves DESIGN guarantee 7 at the engine: the journal queue is bounded, and a
                                         // request refused for it is OVERLOADED and leaves no trace (only acknowledged charges count)
    let mut config = commerce_engine::engine::EngineConfig::default();
    config.journal.queue_records_max = 4;
    let store = SlowStore(commerce_engine::store::MemoryStore::new());
    let clock = Arc::new(commerce_engine::engine::SystemClock);
    let engine = crate::engine_support::start(config, Box::new(store.clone()), clock);
    let ids = users(&engine, 20).await;
    let t = race(&engine, ids.clone(), |e, u| async move {
        e.charge(u, Krw(1_000), None).await
    })
    .await;
    let (ok, overloaded) = (
        t.get("OK").copied().unwrap_or(0),
        t.get("OVERLOADED").copied().unwrap_or(0),
    );
    assert!(overloaded > 0, "the bounded queue refused some: {t:?}");
    assert_eq!(ok + overloaded, ids.len(), "{t:?}");
    let mut charged = 0;
    for &u in &ids {
        charged += engine.balance(u).await.unwrap().balance.0;
    }
    assert_eq!(charged, ok as u64 * 1_000);
    let world = stop_and_recover(engine, &store.0).await;
    assert_eq!(
        world.users.iter().map(|u| u.balance.0).sum::<u64>(),
        ok as u64 * 1_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_read_right_after_an_answer_sees_exactly_what_it_changed() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves: product reads (served from the actor's published shelf) see every
                                         // change an earlier answer made, including stock given back by news the
                                         // coordinator sends to the product after the fact (cancel, a refused
                                         // payment, an abandoned hold), while eight products are busy at once
    let (engine, store) = engine();
    let empty = engine
        .create_product("sold out", Krw(10), 0, None)
        .await
        .unwrap()
        .id;
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let e = engine.clone();
        let rich = e.create_user(&format!("rich-{t}"), None).await.unwrap().id;
        let poor = e.create_user(&format!("poor-{t}"), None).await.unwrap().id;
        e.charge(rich, Krw(10_000_000), None).await.unwrap();
        let mut stock = 100_000;
        let product = e
            .create_product(&format!("p{t}"), Krw(100), stock, None)
            .await
            .unwrap()
            .id;
        tasks.push(tokio::spawn(async move {
            let read = |e: Engine| async move { e.product(product).await.unwrap().stock };
            for i in 0..60u64 {
                let q = 1 + (i + t) % 3;
                let placed = e.place_order(order_of(rich, &[(product, q)]), None).await;
                let order = placed.unwrap().id;
                assert_eq!(read(e.clone()).await, stock - q, "after placing");
                e.cancel_order(order, None).await.unwrap();
                assert_eq!(read(e.clone()).await, stock, "after cancelling");

                let both = order_of(rich, &[(product, q), (empty, 1)]);
                let refused = e.place_order(both, None).await;
                assert_eq!(code(&refused), "OUT_OF_STOCK");
                assert_eq!(read(e.clone()).await, stock, "after an abandoned hold");

                let placed = e.place_order(order_of(poor, &[(product, q)]), None).await;
                let unpaid = e.pay_order(placed.unwrap().id, None).await;
                assert_eq!(code(&unpaid), "INSUFFICIENT_BALANCE");
                assert_eq!(read(e.clone()).await, stock, "after a refused payment");

                let placed = e.place_order(order_of(rich, &[(product, q)]), None).await;
                e.pay_order(placed.unwrap().id, None).await.unwrap();
                stock -= q;
                assert_eq!(read(e.clone()).await, stock, "after paying");
            }
            (product, stock)
        }));
    }
    let mut expected = HashMap::new();
    for task in tasks {
        let (product, stock) = task.await.unwrap();
        expected.insert(product, stock);
    }
    let page = engine
        .products(PageRequest {
            after: None,
            limit: 20,
        })
        .await
        .unwrap();
    for p in page.items.iter().filter(|p| p.id != empty) {
        assert_eq!(p.stock, expected[&p.id], "listing {}", p.id);
    }
    let world = stop_and_recover(engine, &store).await;
    for p in world.products.iter().filter(|p| p.id != empty) {
        assert_eq!((p.stock, p.reserved), (expected[&p.id], 0), "{}", p.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_changes_racing_orders_from_the_cart_leave_the_cart_recovery_finds() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // regression: a placed order's cart removal was applied before a cart change
                                         // journaled ahead of it, so the live cart could differ from the recovered one
    let (engine, store) = engine();
    let buyers = users(&engine, 8).await;
    let mut products = Vec::new();
    for p in 0..3 {
        let id = engine
            .create_product(&format!("p{p}"), Krw(10), 1_000_000, None)
            .await
            .unwrap()
            .id;
        products.push(id);
    }
    for &u in &buyers {
        engine.charge(u, Krw(10_000_000), None).await.unwrap();
    }
    let mut tasks = Vec::new();
    for round in 0..60u64 {
        for (i, &u) in buyers.iter().enumerate() {
            let e = engine.clone();
            let p = products[(round as usize + i) % products.len()];
            let q = products[(round as usize + i + 1) % products.len()];
            tasks.push(tokio::spawn(async move {
                let _ = e.set_cart_item(u, p, 1 + round % 5, None).await;
                let from_cart = PlaceOrder {
                    user_id: u,
                    source: OrderSource::Cart,
                    user_coupon_id: None,
                };
                let (_, _) = tokio::join!(
                    e.place_order(from_cart, None),
                    e.set_cart_item(u, q, 2 + round % 3, None)
                );
                let _ = e.remove_cart_item(u, p).await;
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut live = Vec::new();
    for &u in &buyers {
        live.push(engine.cart(u).await.unwrap());
    }
    let world = stop_and_recover(engine, &store).await;
    for (u, cart) in buyers.iter().zip(live) {
        let recovered = commerce_engine::domain::views::CartView::from(&world.users[u.index()]);
        assert_eq!(cart, recovered, "user {u}");
    }
}
