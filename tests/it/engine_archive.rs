//! The archive: once a snapshot holds them, finished orders and whole
//! chunks of balance history leave memory, and every read still answers
//! exactly as before: orders, a user's orders page by page, the history
//! page by page, refusals of paying or cancelling a finished order, and
//! all of it again after a restart.

use crate::engine_support;

use commerce_engine::domain::ids::{OrderId, ProductId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderStatus};
use commerce_engine::domain::user::BalanceEntry;
use commerce_engine::engine::{Engine, EngineConfig, PageRequest, SystemClock};
use commerce_engine::store::recovery::recover_store;
use commerce_engine::store::{MemoryStore, SledStore, Store};
use engine_support::*;
use std::sync::Arc;

/// Everything a client can read about one user and the shop's orders.
#[derive(Debug, PartialEq)]
struct Seen {
    orders: Vec<Order>,
    pages: Vec<(Vec<OrderId>, Option<String>)>,
    history: Vec<(Vec<BalanceEntry>, Option<String>)>,
}

/// Every page of a list, from the first, following each page's cursor.
async fn all_pages<T, F, Fut>(mut page: F) -> Vec<(Vec<T>, Option<String>)>
where
    F: FnMut(Option<u64>) -> Fut,
    Fut: std::future::Future<Output = (Vec<T>, Option<String>)>,
{
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let (items, next) = page(after).await;
        after = next.as_ref().map(|cursor| cursor.parse().unwrap());
        pages.push((items, next));
        if after.is_none() {
            return pages;
        }
    }
}

async fn seen(engine: &Engine, user: UserId, ids: &[OrderId]) -> Seen {
    let mut orders = Vec::new();
    for id in ids {
        orders.push(engine.order(*id).await.unwrap());
    }
    let pages = all_pages(|after| async move {
        let page = engine
            .user_orders(user, PageRequest { limit: 7, after })
            .await
            .unwrap();
        (page.items.iter().map(|o| o.id).collect(), page.next)
    })
    .await;
    let history = all_pages(|after| async move {
        let page = engine
            .history(user, PageRequest { limit: 7, after })
            .await
            .unwrap();
        (page.items, page.next)
    })
    .await;
    Seen {
        orders,
        pages,
        history,
    }
}

fn start(open: &dyn Fn() -> Box<dyn Store>) -> Engine {
    crate::engine_support::start(EngineConfig::default(), open(), Arc::new(SystemClock))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_orders_and_whole_history_chunks_leave_memory_and_read_the_same() {
    let store = MemoryStore::new();
    archive_reads_the_same(&move || Box::new(store.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sled_finished_orders_and_whole_history_chunks_leave_memory_and_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    archive_reads_the_same(&move || Box::new(SledStore::open(&path).expect("sled opens"))).await;
}

async fn archive_reads_the_same(open: &dyn Fn() -> Box<dyn Store>) {
    // given a user with 100 charges, 40 paid orders, 5 cancelled and 3 pending
    let engine = start(open);
    let user = engine.create_user("kim", None).await.unwrap().id;
    let mug = engine
        .create_product("mug", Krw(1_000), 1_000, None)
        .await
        .unwrap()
        .id;
    for amount in 1..=100 {
        engine
            .charge(user, Krw(10_000 + amount), None)
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    let (mut paid, mut cancelled, mut pending) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..48u64 {
        let o = engine
            .place_order(order_of(user, &[(mug, 1 + i % 3)]), None)
            .await
            .unwrap();
        ids.push(o.id);
        match i {
            3 | 11 | 19 | 27 | 35 => {
                engine.cancel_order(o.id, None).await.unwrap();
                cancelled.push(o.id);
            }
            7 | 23 | 47 => pending.push(o.id),
            _ => {
                engine.pay_order(o.id, None).await.unwrap();
                paid.push(o.id);
            }
        }
    }
    assert_eq!((paid.len(), cancelled.len(), pending.len()), (40, 5, 3));
    ids.push(OrderId(ids.len() as u64 + 1)); // never placed
    let missing = *ids.last().unwrap();
    ids.pop();
    let before = seen(&engine, user, &ids).await;
    let held_before = engine.orders_in_memory().await.unwrap();
    assert_eq!(held_before, 48, "nothing is archived before a snapshot");
    assert_eq!(engine.user_order_ids_in_memory().await.unwrap(), 48);
    assert_eq!(engine.history_in_memory(user).await.unwrap(), 140);

    // when a snapshot archives them
    engine.snapshot().await.unwrap();

    // then only the pending orders and the last partial chunk stay in memory
    // (their ids are all the shards still list by user)
    assert_eq!(engine.orders_in_memory().await.unwrap(), 3);
    assert_eq!(engine.user_order_ids_in_memory().await.unwrap(), 3);
    assert_eq!(engine.history_in_memory(user).await.unwrap(), 140 % 16);
    // and every read answers as before
    assert_eq!(seen(&engine, user, &ids).await, before);
    let code = |e: commerce_engine::engine::Error| e.code();
    assert_eq!(
        code(engine.pay_order(paid[0], None).await.unwrap_err()),
        "ORDER_NOT_PAYABLE"
    );
    assert_eq!(
        code(engine.cancel_order(cancelled[0], None).await.unwrap_err()),
        "ORDER_NOT_CANCELLABLE"
    );
    assert_eq!(
        code(engine.pay_order(missing, None).await.unwrap_err()),
        "ORDER_NOT_FOUND"
    );
    assert_eq!(
        code(engine.order(missing).await.unwrap_err()),
        "ORDER_NOT_FOUND"
    );
    // a pending order is still paid from memory, and archived by the next snapshot
    engine.pay_order(pending[0], None).await.unwrap();
    engine.snapshot().await.unwrap();
    assert_eq!(engine.orders_in_memory().await.unwrap(), 2);
    assert_eq!(engine.user_order_ids_in_memory().await.unwrap(), 2);
    let after_pay = seen(&engine, user, &ids).await;
    for (was, is) in before.orders.iter().zip(&after_pay.orders) {
        if is.id == pending[0] {
            assert_eq!(is.status, OrderStatus::Paid);
        } else {
            assert_eq!(is, was);
        }
    }
    assert_eq!(after_pay.history[0].0[0].order_id, Some(pending[0]));

    // and after a restart, the same (memory holds the pending orders only)
    tokio::task::spawn_blocking({
        let engine = engine.clone();
        move || engine.shutdown()
    })
    .await
    .unwrap();
    drop(engine);
    let engine = start(open);
    assert_eq!(seen(&engine, user, &ids).await, after_pay);
    assert_eq!(engine.orders_in_memory().await.unwrap(), 2);
    assert_eq!(engine.user_order_ids_in_memory().await.unwrap(), 2);
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .unwrap();
    let (world, _) = recover_store(&*open()).expect("the store recovers");
    assert!(world.violations().is_empty(), "{:?}", world.violations());
    assert_eq!(world.orders.len(), 48, "a whole recovery reads the archive");
    assert_eq!(world.users[0].history.len(), 141);
    let sold: u64 = world
        .orders
        .values()
        .filter(|o| o.status == OrderStatus::Paid)
        .map(|o| o.items[0].quantity)
        .sum();
    assert_eq!(world.products[ProductId(mug.0).index()].sold, sold);
}
