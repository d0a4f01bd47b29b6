//! [`Engine`]: placing, reading, cancelling, paying and expiring orders.

use super::{blocking, to_the_end, Engine, PageRequest, PlaceOrder};
use crate::domain::ids::{OrderId, UserId};
use crate::domain::order::Order;
use crate::domain::rejection::Rejection;
use crate::domain::views::Page;
use crate::engine::actor::Read;
use crate::engine::coordinator::{Cancel, Coordinator, ExpireDue, OrderBook, Pay};
use crate::engine::error::{Error, Result};
use crate::engine::idempotency::IdempotencyKey;
use crate::engine::keyed_request::KeyedRequest;
use crate::store::StorageError;
use actix::Addr;
use futures_util::future::Either;
use std::future::Future;

impl Engine {
    pub async fn place_order(
        &self,
        order: PlaceOrder,
        key: Option<IdempotencyKey>,
    ) -> Result<Order> {
        let keyed = KeyedRequest::PlaceOrder(&order).under(key);
        // The placing saga runs on the caller's task: it must not stop half-way.
        let engine = self.clone();
        to_the_end(async move {
            engine
                .keyed(keyed, move |engine, tag| async move {
                    let placement = &engine.inner.placement;
                    placement
                        .place(order.user_id, order.source, order.user_coupon_id, tag)
                        .await
                })
                .await
        })
        .await
    }

    pub async fn order(&self, id: OrderId) -> Result<Order> {
        let found = self
            .inner
            .placement
            .shard(id)
            .send(Read::new(move |b: &OrderBook| b.orders.get(&id).cloned()))
            .await?;
        match found {
            Some(order) => Ok(order),
            None => self
                .archived_order(id)
                .await?
                .ok_or_else(|| Rejection::OrderNotFound(id).into()),
        }
    }

    /// The coordinator shard that owns order `id`.
    pub(in crate::engine) fn order_shard(&self, id: OrderId) -> &Addr<Coordinator> {
        self.inner.placement.shard(id)
    }

    /// A finished order from the archive.
    pub(in crate::engine) async fn archived_order(&self, id: OrderId) -> Result<Option<Order>> {
        let archive = self.archive()?;
        blocking(move || archive.order(id)).await
    }

    /// A pay or cancel of an order the shard does not hold: an archived
    /// order is finished, so it is refused as `finished`, not as not found.
    ///
    /// Only that refusal reads the archive, in a boxed future: any other
    /// answer is ready as it is, so the read does not set the size of
    /// every pay's and cancel's future.
    fn unless_archived(
        &self,
        result: Result<Order>,
        finished: Rejection,
    ) -> impl Future<Output = Result<Order>> + Send + '_ {
        match result {
            Err(Error::Rejected(Rejection::OrderNotFound(id))) => {
                Either::Right(Box::pin(self.finished_unless_missing(id, finished)))
            }
            other => Either::Left(std::future::ready(other)),
        }
    }

    /// `finished` if the archive holds order `id`, otherwise not found.
    async fn finished_unless_missing(&self, id: OrderId, finished: Rejection) -> Result<Order> {
        match self.archived_order(id).await? {
            Some(_) => Err(finished.into()),
            None => Err(Rejection::OrderNotFound(id).into()),
        }
    }

    /// A user's orders, newest first; the cursor is the last id of the page.
    pub async fn user_orders(&self, user_id: UserId, page: PageRequest) -> Result<Page<Order>> {
        self.user_addr(user_id)?;
        // Each shard answers its newest `limit + 1` below the cursor, then
        // the archive its newest `limit + 1` ids: the page is the newest of
        // all. In this order, an order archived meanwhile is in one or the
        // other (a shard lets go of one only once the archive holds it).
        let limit = page.limit;
        let reads = self.inner.placement.shards.iter().map(|shard| {
            shard.send(Read::new(move |b: &OrderBook| {
                let ids = b.by_user.get(&user_id).map(Vec::as_slice).unwrap_or(&[]);
                let upto = page
                    .after
                    .map_or(ids.len(), |a| ids.partition_point(|id| id.0 < a));
                ids[..upto]
                    .iter()
                    .rev()
                    .take(limit + 1)
                    .filter_map(|id| b.orders.get(id).cloned())
                    .collect::<Vec<Order>>()
            }))
        });
        let mut found: Vec<(OrderId, Option<Order>)> = Vec::new();
        for shard in futures_util::future::join_all(reads).await {
            found.extend(shard?.into_iter().map(|o| (o.id, Some(o))));
        }
        let archive = self.archive()?;
        let (items, more) = blocking(move || {
            let before = page.after.map(OrderId);
            for id in archive.user_orders(user_id, before, limit + 1)? {
                found.push((id, None));
            }
            // Newest first; of an id in both, the one from memory.
            found.sort_unstable_by_key(|(id, order)| (std::cmp::Reverse(*id), order.is_none()));
            found.dedup_by_key(|(id, _)| *id);
            let more = found.len() > limit;
            found.truncate(limit);
            let wanted: Vec<OrderId> = found
                .iter()
                .filter(|(_, order)| order.is_none())
                .map(|(id, _)| *id)
                .collect();
            let mut archived = archive.orders(&wanted)?.into_iter();
            let items = found
                .into_iter()
                .map(|(id, order)| match order {
                    Some(o) => Ok(o),
                    None => archived.next().flatten().ok_or_else(|| {
                        StorageError::Corrupt(format!("order {id} is not in the archive"))
                    }),
                })
                .collect::<Result<Vec<Order>, StorageError>>()?;
            Ok((items, more))
        })
        .await?;
        let next = if more {
            items.last().map(|o| o.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub async fn cancel_order(&self, id: OrderId, key: Option<IdempotencyKey>) -> Result<Order> {
        let request = KeyedRequest::CancelOrder(id);
        self.keyed(request.under(key), move |engine, tag| async move {
            let result = engine
                .inner
                .placement
                .shard(id)
                .send(Cancel { order_id: id, tag })
                .await?;
            engine
                .unless_archived(result, Rejection::OrderNotCancellable(id))
                .await
        })
        .await
    }

    pub async fn pay_order(&self, id: OrderId, key: Option<IdempotencyKey>) -> Result<Order> {
        let request = KeyedRequest::PayOrder(id);
        self.keyed(request.under(key), move |engine, tag| async move {
            let result = engine
                .inner
                .placement
                .shard(id)
                .send(Pay { order_id: id, tag })
                .await?;
            engine
                .unless_archived(result, Rejection::OrderNotPayable(id))
                .await
        })
        .await
    }

    /// Expires every pending order whose time is up now (also runs on a timer).
    pub async fn expire_due_orders(&self) -> Result<usize> {
        let sweeps = self
            .inner
            .placement
            .shards
            .iter()
            .map(|shard| shard.send(ExpireDue));
        let mut expired = 0;
        for swept in futures_util::future::join_all(sweeps).await {
            expired += swept?;
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::ids::{OrderId, UserId};
    use crate::engine::coordinator::OrderSource;
    use crate::engine::{Engine, EngineConfig, SystemClock};
    use crate::store::memory::MemoryStore;
    use std::sync::Arc;

    /// Every order moves its placing and paying futures whole (into their
    /// task, and each into the one that awaits it). So a step only some
    /// orders take (a user's hold, an archive read) is boxed where it is
    /// awaited, and a request without an idempotency key carries none of
    /// the keyed path's state: neither sets the size of every order's
    /// futures. These bounds keep it so.
    #[tokio::test]
    async fn the_order_flows_futures_stay_small() {
        let engine = Engine::start(
            EngineConfig::default(),
            Box::new(MemoryStore::new()),
            Arc::new(SystemClock),
        )
        .unwrap();
        let placing =
            engine
                .inner
                .placement
                .place(UserId(1), OrderSource::Items(Vec::new()), None, None);
        let paying = engine.pay_order(OrderId(1), None);
        let cancelling = engine.cancel_order(OrderId(1), None);
        let sizes = [
            std::mem::size_of_val(&placing),
            std::mem::size_of_val(&paying),
            std::mem::size_of_val(&cancelling),
        ];
        assert!(sizes[0] <= 768, "placing: {} bytes", sizes[0]);
        assert!(sizes[1] <= 640, "paying: {} bytes", sizes[1]);
        assert!(sizes[2] <= 640, "cancelling: {} bytes", sizes[2]);
    }
}
