//! The operator's lists (admin): every coupon campaign, and every order or
//! those of one status, by id, paged as every list.
//!
//! Reads only. Campaigns are few and each has its actor: a page asks the
//! `limit` actors from its cursor on. Orders are many and live in two
//! places: those not yet archived in the coordinator shards' books (each
//! keeps its ids by status), finished ones in the store's archive by block
//! of ids, with a mask of the statuses each block holds
//! ([`crate::store::archive_statuses`]). A page asks each shard for its
//! first `limit + 1` ids above the cursor with the status, then reads the
//! archive's blocks that have the status, from the cursor's block, until it
//! has `limit + 1`: at most `limit + 1` block reads, however many orders
//! there are. In that order, an order archived meanwhile is found in one or
//! the other (a shard marks it in the masks before it lets go of it).

use crate::domain::coupon::Campaign;
use crate::domain::ids::OrderId;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::views::{CouponView, Page};
use crate::engine::actor::Read;
use crate::engine::coordinator::OrderBook;
use crate::engine::error::{Error, Result};
use crate::engine::facade::{blocking, Engine, PageRequest};
use crate::store::archive_statuses::{archived_orders_after, status_bit};

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
        let reads = placement.shards.iter().map(|shard| {
            shard.send(Read::new(move |b: &OrderBook| {
                held_after(b, filter, after, want)
            }))
        });
        let mut found: Vec<Order> = Vec::new();
        for shard in futures_util::future::join_all(reads).await {
            found.extend(shard?);
        }
        let archive = self.archive()?;
        watch.statuses.scan(&archive).await?;
        found.extend(self.archived_after(archive, bits, after, want).await?);
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
    /// At least `want` archived orders above `after` with a status of
    /// `bits` (fewer once the archive has no more), leaving out those a
    /// shard's book holds again: a refund brings an archived order back,
    /// and its archived copy keeps the status it had until the next
    /// snapshot archives it again. The book's copy is the one listed.
    async fn archived_after(
        &self,
        archive: crate::store::ArchiveReader,
        bits: u16,
        mut after: u64,
        want: usize,
    ) -> Result<Vec<Order>> {
        let (_, placement, _) = self.parts();
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
                shard.send(Read::new(move |b: &OrderBook| {
                    ids.iter()
                        .filter(|id| b.orders.contains_key(id))
                        .copied()
                        .collect::<Vec<_>>()
                }))
            });
            let mut held = std::collections::HashSet::new();
            for shard in futures_util::future::join_all(asks).await {
                held.extend(shard?);
            }
            kept.extend(read.into_iter().filter(|o| !held.contains(&o.id)));
            if exhausted || kept.len() >= want {
                return Ok(kept);
            }
            after = last;
        }
    }
}

/// A shard's first `want` orders above `after` that `filter` matches.
fn held_after(book: &OrderBook, filter: OrderFilter, after: u64, want: usize) -> Vec<Order> {
    let first = OrderId(after.saturating_add(1));
    let ids: Vec<OrderId> = match filter {
        OrderFilter::All => book
            .orders
            .range(first..)
            .take(want)
            .map(|(id, _)| *id)
            .collect(),
        OrderFilter::Status(s) => {
            let bit = status_bit(s);
            book.by_status
                .range((bit, first)..=(bit, OrderId(u64::MAX)))
                .take(want)
                .map(|(_, id)| *id)
                .collect()
        }
    };
    ids.iter()
        .filter_map(|id| book.orders.get(id).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
