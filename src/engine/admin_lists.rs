//! The operator's lists (admin): every coupon campaign, and every order or
//! those of one status, by id, paged as every list.
//!
//! Reads only. Campaigns are few and each has its actor: a page asks the
//! `limit` actors from its cursor on. Orders are many and live in two
//! places: those not yet archived in the coordinator shards' books, finished
//! ones in the store's archive by block of ids, with a mask of the statuses
//! each block holds ([`crate::store::archive_statuses`]). A page asks each
//! shard for its first `limit + 1` orders above the cursor with the status,
//! then reads the archive's blocks that have the status, from the cursor's
//! block, until it has `limit + 1`: at most `limit + 1` block reads, however
//! many orders there are. In that order, an order archived meanwhile is
//! found in one or the other (a shard marks it in the masks before it lets
//! go of it). An archived order a refund brings back into a book meanwhile
//! is found too: of the archived orders read, those a book holds again are
//! listed as the book holds them now, if they still match.
//!
//! A book keeps no index by status: one cost four B-tree updates on every
//! order placed and paid, for a list an operator reads now and then. A shard
//! scans its book by id from the cursor instead, [`SCAN_CHUNK`] orders per
//! message, so a shard holding many orders of other statuses goes on with
//! its payments between chunks. An order that leaves the book between two
//! chunks is in the archive's masks by then, and the archive is read after
//! every shard.

use crate::domain::coupon::Campaign;
use crate::domain::ids::OrderId;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::views::{CouponView, Page};
use crate::engine::actor::Read;
use crate::engine::coordinator::{Coordinator, OrderBook};
use crate::engine::error::{Error, Result};
use crate::engine::facade::{blocking, Engine, PageRequest};
use crate::store::archive_statuses::{archived_orders_after, status_bit};
use actix::Addr;

/// Which orders the admin list of orders shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderFilter {
    /// Every order.
    All,
    /// Orders of one status.
    Status(OrderStatus),
}

/// The statuses `?status=` takes: those of API.md.
pub const ORDER_STATUSES: [&str; 7] = [
    "pending",
    "paid",
    "failed",
    "cancelled",
    "expired",
    "partially_refunded",
    "refunded",
];

impl OrderFilter {
    /// `?status=` as given: absent is every order; otherwise one of
    /// [`ORDER_STATUSES`], or 400 naming `status`.
    pub fn parse(status: Option<&str>) -> Result<OrderFilter> {
        let Some(name) = status else {
            return Ok(OrderFilter::All);
        };
        if let Ok(status) = serde_json::from_value::<OrderStatus>(name.into()) {
            return Ok(OrderFilter::Status(status));
        }
        Err(Error::invalid(format!(
            "status must be one of {}",
            ORDER_STATUSES.join(", ")
        )))
    }

    fn matches(self, status: OrderStatus) -> bool {
        match self {
            OrderFilter::All => true,
            OrderFilter::Status(s) => s == status,
        }
    }

    /// The status bits it matches (see `store::archive_statuses`).
    fn bits(self) -> u16 {
        match self {
            OrderFilter::All => u16::MAX,
            OrderFilter::Status(s) => status_bit(s),
        }
    }
}

/// A page's `next`: the last id listed, if there is more.
fn next_of(more: bool, last: Option<u64>) -> Option<String> {
    more.then_some(last).flatten().map(|id| id.to_string())
}

impl Engine {
    /// Every coupon campaign by id; the cursor is the last id of the page.
    pub async fn coupons(&self, page: PageRequest) -> Result<Page<CouponView>> {
        let (registry, _, _) = self.parts();
        let first = page.after.map_or(1, |a| a.saturating_add(1));
        let campaigns = registry.campaigns.range(first, page.limit + 1);
        let more = campaigns.len() > page.limit;
        let reads = campaigns
            .iter()
            .take(page.limit)
            .map(|(_, addr)| addr.send(Read::new(|c: &Campaign| CouponView::from(c))));
        let items = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let next = next_of(more, items.last().map(|c| c.id.0));
        Ok(Page { items, next })
    }

    /// Orders by id, every one or those of one status; the cursor is the
    /// last id of the page.
    pub async fn orders(&self, filter: OrderFilter, page: PageRequest) -> Result<Page<Order>> {
        let bits = filter.bits();
        if bits == 0 {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let (_, placement, watch) = self.parts();
        let (after, want) = (page.after.unwrap_or(0), page.limit + 1);
        // The shards first, then the archive (see the module's docs).
        let reads = placement
            .shards
            .iter()
            .map(|shard| held_in_shard(shard, filter, after, want));
        let mut found: Vec<Order> = Vec::new();
        for shard in futures_util::future::join_all(reads).await {
            found.extend(shard?);
        }
        let archive = self.archive()?;
        watch.statuses.scan(&archive).await?;
        found.extend(self.archived_after(archive, filter, after, want).await?);
        // By id; of an id in both, the one from memory (pushed first, kept
        // first by the stable sort).
        found.sort_by_key(|o| o.id);
        found.dedup_by_key(|o| o.id);
        let more = found.len() > page.limit;
        found.truncate(page.limit);
        let next = next_of(more, found.last().map(|o| o.id.0));
        Ok(Page { items: found, next })
    }
}

impl Engine {
    /// At least `want` archived orders above `after` that `filter` matches
    /// (fewer once the archive has no more). Of those a shard's book holds
    /// again, the book's copy stands in for the archived one: a refund
    /// brings an archived order back, and its archived copy keeps the
    /// status it had until the next snapshot archives it again. The book's
    /// copy is listed if it matches, as the shards' scan lists it; one the
    /// book took back after its shard was scanned is not lost between the two.
    async fn archived_after(
        &self,
        archive: crate::store::ArchiveReader,
        filter: OrderFilter,
        mut after: u64,
        want: usize,
    ) -> Result<Vec<Order>> {
        let (_, placement, _) = self.parts();
        let bits = filter.bits();
        let mut kept = Vec::new();
        loop {
            let engine = self.clone();
            let reader = archive.clone();
            let read = blocking(move || {
                let (_, _, watch) = engine.parts();
                archived_orders_after(&reader, &watch.statuses, bits, after, want)
            })
            .await?;
            let exhausted = read.len() < want;
            let Some(last) = read.last().map(|o| o.id.0) else {
                return Ok(kept);
            };
            let ids: std::sync::Arc<[OrderId]> = read.iter().map(|o| o.id).collect();
            let asks = placement.shards.iter().map(|shard| {
                let ids = ids.clone();
                shard.send(Read::new(move |b: &OrderBook| held_again(b, &ids, filter)))
            });
            let mut held = std::collections::HashMap::new();
            for shard in futures_util::future::join_all(asks).await {
                held.extend(shard?);
            }
            for order in read {
                match held.remove(&order.id) {
                    None => kept.push(order),
                    Some(book_copy) => kept.extend(book_copy),
                }
            }
            if exhausted || kept.len() >= want {
                return Ok(kept);
            }
            after = last;
        }
    }
}

/// Of `ids`, those the book holds (again), each with the book's copy if
/// `filter` matches it.
fn held_again(
    book: &OrderBook,
    ids: &[OrderId],
    filter: OrderFilter,
) -> Vec<(OrderId, Option<Order>)> {
    ids.iter()
        .filter_map(|id| {
            let order = book.orders.get(id)?;
            Some((*id, filter.matches(order.status).then(|| order.clone())))
        })
        .collect()
}

/// Book entries a shard scans per message of a list of orders: the most
/// of its time one message takes, however many orders its book holds.
pub const SCAN_CHUNK: usize = 4_096;

/// A shard's first `want` orders above `after` that `filter` matches, read
/// [`SCAN_CHUNK`] entries of its book at a time.
async fn held_in_shard(
    shard: &Addr<Coordinator>,
    filter: OrderFilter,
    after: u64,
    want: usize,
) -> Result<Vec<Order>> {
    gather(after, want, |after, left| async move {
        let read = Read::new(move |b: &OrderBook| held_after(b, filter, after, left, SCAN_CHUNK));
        Ok(shard.send(read).await?)
    })
    .await
}

/// The first `want` orders above `after`, a chunk at a time: `read(after,
/// left)` answers up to `left` orders above `after`, and the last id it
/// looked at if it stopped before the end.
async fn gather<F, Fut>(mut after: u64, want: usize, mut read: F) -> Result<Vec<Order>>
where
    F: FnMut(u64, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Order>, Option<u64>)>>,
{
    let mut found = Vec::new();
    loop {
        let (mut orders, looked_to) = read(after, want - found.len()).await?;
        found.append(&mut orders);
        match looked_to {
            Some(last) if found.len() < want => after = last,
            _ => return Ok(found),
        }
    }
}

/// The first `want` orders above `after` that `filter` matches, looking at
/// no more than `budget` entries; with the last id looked at when the
/// budget ran out first (the orders above it are yet to be looked at).
fn held_after(
    book: &OrderBook,
    filter: OrderFilter,
    after: u64,
    want: usize,
    budget: usize,
) -> (Vec<Order>, Option<u64>) {
    debug_assert!(budget > 0);
    let mut found = Vec::new();
    let mut last = None;
    let first = OrderId(after.saturating_add(1));
    for (looked, (id, order)) in book.orders.range(first..).enumerate() {
        if found.len() >= want {
            return (found, None);
        }
        if looked == budget {
            return (found, last);
        }
        if filter.matches(order.status) {
            found.push(order.clone());
        }
        last = Some(id.0);
    }
    (found, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{ProductId, UserId};
    use crate::domain::money::Krw;
    use crate::domain::order::{sample_paid_order, LineRequest};
    use crate::domain::refund::RefundRequest;
    use crate::engine::clock::SystemClock;
    use crate::engine::coordinator::OrderSource;
    use crate::engine::facade::PlaceOrder;
    use crate::engine::EngineConfig;
    use crate::store::MemoryStore;
    use std::sync::Arc;

    /// A book of orders 1..=60 whose statuses cycle through every status.
    fn book() -> OrderBook {
        OrderBook::from_orders((1..=60).map(|id| {
            let mut o = sample_paid_order(id);
            o.status = OrderStatus::ALL[id as usize % OrderStatus::ALL.len()];
            o
        }))
    }

    #[tokio::test]
    async fn a_book_read_in_chunks_lists_what_one_read_lists() {
        // proves the chunked scan finds exactly the first `want` matches above the cursor, whatever the chunk
        let book = book();
        let filters = OrderStatus::ALL
            .iter()
            .map(|&s| OrderFilter::Status(s))
            .chain([OrderFilter::All]);
        for filter in filters {
            for after in [0, 1, 7, 33, 59, 60, 100] {
                for want in [1, 2, 5, 61] {
                    let expected: Vec<u64> = (after + 1..=60)
                        .filter(|&id| filter.matches(book.orders[&OrderId(id)].status))
                        .take(want)
                        .collect();
                    for budget in [1, 2, 3, 7, 4_096] {
                        let mut reads = 0;
                        let got = gather(after, want, |after, left| {
                            reads += 1;
                            let chunk = held_after(&book, filter, after, left, budget);
                            assert!(chunk.0.len() <= left);
                            std::future::ready(Ok(chunk))
                        })
                        .await
                        .unwrap();
                        let ids: Vec<u64> = got.iter().map(|o| o.id.0).collect();
                        assert_eq!(
                            ids, expected,
                            "{filter:?} after {after} want {want} budget {budget}"
                        );
                        assert!(reads <= 60 / budget + 2, "{reads} reads of {budget}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_book_gives_its_own_copy_of_the_ids_it_holds_again_if_the_filter_matches() {
        // proves held_again answers every id the book holds (whether or not it matches) and only matching copies
        let book = book();
        // Statuses cycle through ALL by id: 1 and 8 are paid, 2 failed; 61 is not held.
        let ids = [OrderId(1), OrderId(2), OrderId(61), OrderId(8)];
        let paid = OrderFilter::Status(OrderStatus::Paid);
        let got: Vec<(u64, Option<u64>)> = held_again(&book, &ids, paid)
            .into_iter()
            .map(|(id, copy)| (id.0, copy.map(|o| o.id.0)))
            .collect();
        assert_eq!(book.orders[&OrderId(2)].status, OrderStatus::Failed);
        assert_eq!(got, [(1, Some(1)), (2, None), (8, Some(8))]);
        let all = held_again(&book, &ids, OrderFilter::All);
        assert_eq!(all.len(), 3);
        assert!(all
            .iter()
            .all(|(id, copy)| copy.as_ref().map(|o| o.id) == Some(*id)));
    }

    /// An engine of `shards` coordinator shards on a fresh store, with a
    /// user holding 10,000,000 KRW and a product of 10 KRW in stock 100,000.
    async fn shop(shards: usize) -> (Engine, UserId, ProductId) {
        let config = EngineConfig {
            arbiter_count: shards,
            ..EngineConfig::default()
        };
        let engine =
            Engine::start(config, Box::new(MemoryStore::new()), Arc::new(SystemClock)).unwrap();
        let user = engine.create_user("kim", None).await.unwrap().id;
        let mug = engine
            .create_product("mug", Krw(10), 100_000, None)
            .await
            .unwrap()
            .id;
        engine.charge(user, Krw(10_000_000), None).await.unwrap();
        (engine, user, mug)
    }

    fn one_of(user_id: UserId, product_id: ProductId) -> PlaceOrder {
        PlaceOrder {
            user_id,
            source: OrderSource::Items(vec![LineRequest {
                product_id,
                quantity: 1,
            }]),
            user_coupon_id: None,
        }
    }

    /// An order archived by a snapshot, then refunded: the book holds it
    /// again (refunded), the archive still holds it as paid. Read from the
    /// archive's side, as a list does after its shards (the book took it
    /// back after the shards' scan), the book's copy stands in: listed when
    /// its status now matches, and never lost from the list of every order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_archived_order_a_refund_brought_back_is_listed_as_the_book_holds_it() {
        let (engine, user, mug) = shop(2).await;
        let place = |user_id: UserId| one_of(user_id, mug);
        let refunded = engine.place_order(place(user), None).await.unwrap().id;
        let paid = engine.place_order(place(user), None).await.unwrap().id;
        for id in [refunded, paid] {
            engine.pay_order(id, None).await.unwrap();
        }
        engine.snapshot().await.unwrap();
        assert_eq!(engine.orders_in_memory().await.unwrap(), 0);
        engine
            .refund_order(refunded, RefundRequest::default(), None)
            .await
            .unwrap();
        assert_eq!(engine.orders_in_memory().await.unwrap(), 1);

        let (_, _, watch) = engine.parts();
        let archive = engine.archive().unwrap();
        watch.statuses.scan(&archive).await.unwrap();
        let listed = |filter| {
            let (engine, archive) = (engine.clone(), archive.clone());
            async move {
                let orders = engine.archived_after(archive, filter, 0, 10).await.unwrap();
                orders.iter().map(|o| (o.id, o.status)).collect::<Vec<_>>()
            }
        };
        let refunded_now = (refunded, OrderStatus::Refunded);
        let paid_still = (paid, OrderStatus::Paid);
        assert_eq!(listed(OrderFilter::All).await, [refunded_now, paid_still]);
        let status = OrderFilter::Status;
        assert_eq!(listed(status(OrderStatus::Refunded)).await, []);
        assert_eq!(listed(status(OrderStatus::Paid)).await, [paid_still]);
        // The whole list agrees: each order once, as it is now.
        let page = PageRequest {
            limit: 10,
            after: None,
        };
        let all = engine.orders(OrderFilter::All, page).await.unwrap().items;
        let all: Vec<_> = all.iter().map(|o| (o.id, o.status)).collect();
        assert_eq!(all, [refunded_now, paid_still]);
        engine.shutdown();
    }

    /// One shard whose book holds more than a scan chunk: lists through
    /// the shard's messages, chunk after chunk, page after page, list
    /// exactly the orders of each status, each once, by id; a status whose
    /// only orders lie past the first chunk, and one with none, too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_book_larger_than_a_scan_chunk_lists_exactly_through_its_shard() {
        let (engine, user, mug) = shop(1).await;
        let n = SCAN_CHUNK as u64 + 300;
        let mut want: Vec<(OrderId, OrderStatus)> = Vec::new();
        for start in (0..n).step_by(256) {
            let batch = (n - start).min(256);
            let placed = futures_util::future::join_all(
                (0..batch).map(|_| engine.place_order(one_of(user, mug), None)),
            )
            .await;
            for order in placed {
                let id = order.unwrap().id;
                // Every third paid; cancelled only past the first chunk.
                let status = if id.0 % 3 == 0 {
                    engine.pay_order(id, None).await.unwrap().status
                } else if id.0 > SCAN_CHUNK as u64 + 100 && id.0 % 7 == 0 {
                    engine.cancel_order(id, None).await.unwrap().status
                } else {
                    OrderStatus::Pending
                };
                want.push((id, status));
            }
        }
        want.sort_by_key(|(id, _)| *id);
        assert_eq!(engine.orders_in_memory().await.unwrap() as u64, n);
        let filters = [
            OrderStatus::Paid,
            OrderStatus::Pending,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
        ]
        .map(OrderFilter::Status);
        for filter in filters.into_iter().chain([OrderFilter::All]) {
            for limit in [100, 5_000] {
                let mut listed = Vec::new();
                let mut after = None;
                loop {
                    let page = PageRequest { limit, after };
                    let page = engine.orders(filter, page).await.unwrap();
                    assert!(page.items.len() <= limit);
                    listed.extend(page.items.iter().map(|o| (o.id, o.status)));
                    match page.next {
                        Some(next) => after = Some(next.parse().unwrap()),
                        None => break,
                    }
                }
                let expected: Vec<_> = want
                    .iter()
                    .filter(|(_, status)| filter.matches(*status))
                    .copied()
                    .collect();
                let first_difference = listed.iter().zip(&expected).position(|(a, b)| a != b);
                assert!(
                    listed == expected,
                    "{filter:?}, pages of {limit}: {} listed, {} expected, first difference at {first_difference:?}",
                    listed.len(),
                    expected.len()
                );
            }
        }
        let cancelled = want
            .iter()
            .filter(|(_, s)| *s == OrderStatus::Cancelled)
            .count();
        assert!(cancelled > 0);
        engine.shutdown();
    }

    #[test]
    fn the_status_filter_takes_the_apis_statuses_and_names_the_field_otherwise() {
        // proves every status of API.md parses, none means all, and anything else is a 400 naming `status`
        assert_eq!(OrderFilter::parse(None).unwrap(), OrderFilter::All);
        assert_eq!(
            OrderFilter::parse(Some("paid")).unwrap(),
            OrderFilter::Status(OrderStatus::Paid)
        );
        for name in ORDER_STATUSES {
            assert!(OrderFilter::parse(Some(name)).is_ok(), "{name}");
        }
        for bad in ["", "PAID", "paid ", "unknown", "Pending"] {
            let e = OrderFilter::parse(Some(bad)).unwrap_err();
            assert_eq!(e.code(), "INVALID_REQUEST", "{bad}");
            assert!(e.to_string().contains("status"), "{e}");
        }
    }
}
