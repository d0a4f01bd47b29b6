//! The order coordinator: place, pay, cancel and expire as sagas.
//!
//! Placing ([`Placement::place`]): hold stock on every product and the
//! coupon on the user (each decided inside its own actor), price the order,
//! journal `OrderPlaced` (one record for everything), and only then turn the
//! holds into reservations. Any refusal, or a journal failure, drops every
//! hold taken: nothing durable happened, so nothing needs compensating.
//! Placing touches no coordinator state until it is durable, so it runs on
//! the caller's task; the durable order then joins the book of its
//! coordinator shard (one per Arbiter, `order id % shards`). Measured: with
//! one coordinator doing it all, its thread ran at three times the load of
//! the other and capped paid orders per second.
//!
//! Paying: the user actor decides the debit and journals `OrderPaid`
//! itself (the balance is its state). If the balance is short, the order is
//! journaled `failed` and its stock and coupon come back. Cancel and expiry
//! journal first and give back after, so no one can take returned stock
//! before the return is durable.
//!
//! Crash recovery needs no saga log: holds live only in memory, so a saga
//! caught half-way leaves either nothing (no record) or its whole record.
//! While an order is being paid or returned it is `busy`, and a concurrent
//! pay or cancel is refused as not payable / not cancellable.

use crate::domain::coupon_terms::Offer;
use crate::domain::event::{Event, Record};
use crate::domain::ids::{IdMap, IdSet, OrderId, UserCouponId, UserId};
use crate::domain::limits::Limits;
use crate::domain::order::{
    price, total, validate_lines, LineRequest, Order, OrderCommand, OrderEvent, OrderLine,
    OrderStatus,
};
use crate::domain::product::ProductEvent;
use crate::domain::purchase_limit::CountedLine;
use crate::domain::rejection::Rejection;
use crate::domain::time::Timestamp;
use crate::domain::user::{User, UserEvent};
use crate::domain::views::Reply;
use crate::engine::actor::{acked, submit, Journaled, Read};
use crate::engine::clock::Clock;
use crate::engine::commit::CommitQueue;
use crate::engine::error::{Error, Result};
use crate::engine::idempotency::Tag;
use crate::engine::product_actor::{ProductRef, Reserve, Reserved, StockNews};
use crate::engine::refund::RefundsWaiting;
use crate::engine::registry::Registry;
use crate::engine::stats_actor::{Sold, StatsActor};
use crate::engine::user_actor::{Debit, HoldForOrder, OrderNews, UserActor};
use crate::store::writer::{Ack, ArchiveWatch, JournalHandle};
use actix::prelude::*;
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The orders of a shard not yet archived: by id, by user, and the
/// pending ones by expiry. Archived orders are read from the archive.
///
/// `orders` is a B-tree, not a hash map: ids only grow, so new orders go
/// in at one end and archived ones leave from the other, and its memory
/// follows the orders held. A hash map keeps the capacity of the most
/// orders it ever held (a slow snapshot's peak), and grows it by copying
/// the whole table at once.
#[derive(Default)]
pub struct OrderBook {
    pub orders: BTreeMap<OrderId, Order>,
    /// Ids of each user's orders in `orders`, ascending.
    pub by_user: IdMap<UserId, Vec<OrderId>>,
    pub due: BTreeSet<(Timestamp, OrderId)>,
    /// Finished orders, oldest first, each with the archive mark taken
    /// when it finished: it leaves `orders` once that is written.
    settled: VecDeque<(u64, OrderId)>,
    /// The last mark of each order refunded since it was settled (it
    /// changed again: an earlier mark no longer lets it go). Bounded by
    /// the orders refunded in a snapshot interval.
    remarked: IdMap<OrderId, u64>,
}

impl OrderBook {
    /// A book of the orders recovery kept in memory.
    pub fn from_orders(orders: impl IntoIterator<Item = Order>) -> OrderBook {
        let mut book = OrderBook::default();
        for order in orders {
            if order.status.is_final() {
                book.settled.push_back((0, order.id));
            }
            book.insert(order);
        }
        book
    }

    /// An order finished: it goes to the archive with the next snapshot.
    fn settled(&mut self, id: OrderId, watch: &ArchiveWatch) {
        self.settled.push_back((watch.mark(), id));
    }

    /// A finished order changed again (a refund, or brought back from the
    /// archive to be refunded): it goes to the archive, as it is now, with
    /// the next snapshot, and only then leaves memory.
    pub(super) fn resettled(&mut self, id: OrderId, watch: &ArchiveWatch) {
        let mark = watch.mark();
        self.settled.push_back((mark, id));
        self.remarked.insert(id, mark);
    }

    /// Lets go of finished orders the archive holds now.
    fn let_go(&mut self, watch: &ArchiveWatch) {
        let mut leaving: Vec<(OrderId, UserId, OrderStatus)> = Vec::new();
        while let Some(&(mark, id)) = self.settled.front() {
            if !watch.is_written(mark) {
                break;
            }
            self.settled.pop_front();
            match self.remarked.get(&id) {
                Some(&last) if last > mark => continue,
                Some(_) => {
                    self.remarked.remove(&id);
                }
                None => {}
            }
            if let Some(o) = self.orders.get(&id).filter(|o| o.status.is_final()) {
                leaving.push((id, o.user_id, o.status));
            }
        }
        if leaving.is_empty() {
            return;
        }
        // Marked before they leave, all at once: a list reads the book,
        // then the marks.
        watch
            .statuses
            .mark(leaving.iter().map(|&(id, _, status)| (id.0, status)));
        for (id, user, _) in leaving {
            if self.orders.remove(&id).is_none() {
                continue;
            }
            if let Some(ids) = self.by_user.get_mut(&user) {
                if let Ok(at) = ids.binary_search(&id) {
                    ids.remove(at);
                }
                if ids.is_empty() {
                    self.by_user.remove(&user);
                }
            }
        }
    }

    pub(super) fn insert(&mut self, order: Order) {
        if order.status == OrderStatus::Pending {
            self.due.insert((order.expires_at, order.id));
        }
        let ids = self.by_user.entry(order.user_id).or_default();
        if ids.last().is_none_or(|last| *last < order.id) {
            ids.push(order.id);
        } else if let Err(pos) = ids.binary_search(&order.id) {
            ids.insert(pos, order.id);
        }
        self.orders.insert(order.id, order);
    }
}

pub struct Coordinator {
    pub(super) book: OrderBook,
    /// Orders being paid, returned or refunded.
    pub(super) busy: IdSet<OrderId>,
    pub(super) registry: Arc<Registry>,
    pub(super) journal: JournalHandle,
    pub(super) clock: Arc<dyn Clock>,
    sweep_interval_ms: u64,
    pub(super) stats: Addr<StatsActor>,
    queue: CommitQueue<CoordOp>,
    /// Refunds waiting for the one under way on their order.
    pub(super) refunds_waiting: RefundsWaiting,
}

pub enum CoordOp {
    Returned {
        order_id: OrderId,
        event: OrderEvent,
        at: Timestamp,
        /// A failed payment answers its refusal once the failure is durable.
        refusal: Option<Error>,
        reply: oneshot::Sender<Result<Order>>,
    },
}

pub struct CoordinatorSetup {
    pub registry: Arc<Registry>,
    pub journal: JournalHandle,
    pub clock: Arc<dyn Clock>,
    pub sweep_interval_ms: u64,
    pub stats: Addr<StatsActor>,
}

impl Coordinator {
    pub fn new(book: OrderBook, s: CoordinatorSetup) -> Coordinator {
        Coordinator {
            book,
            busy: IdSet::default(),
            registry: s.registry,
            journal: s.journal,
            clock: s.clock,
            sweep_interval_ms: s.sweep_interval_ms,
            stats: s.stats,
            queue: CommitQueue::default(),
            refunds_waiting: RefundsWaiting::default(),
        }
    }

    /// Tells each product of `order` the news of its line's units (without
    /// cloning an address).
    fn tell_products(&self, order: &Order, news: impl Fn(u64) -> StockNews) {
        for (p, q) in order.quantities() {
            self.registry
                .products
                .with(p.0, |product| product.tell(news(q)));
        }
    }

    /// Journals the end of a pending order without payment; stock and
    /// coupon come back once that is durable.
    fn settle_unpaid(
        &mut self,
        ctx: &mut Context<Self>,
        order_id: OrderId,
        event: OrderEvent,
        at: Timestamp,
        tag: Option<Tag>,
        refusal: Option<Error>,
    ) -> Result<oneshot::Receiver<Result<Order>>> {
        let journal_event = match event {
            OrderEvent::Cancelled => Event::OrderCancelled { order_id },
            OrderEvent::Expired => Event::OrderExpired { order_id },
            OrderEvent::PaymentFailed | OrderEvent::Paid => Event::OrderPaymentFailed { order_id },
        };
        debug_assert_ne!(event, OrderEvent::Paid, "a payment is the user's record");
        let reply_of = |order: &Order| match &refusal {
            Some(Error::Rejected(r)) => Reply::Rejected(r.clone()),
            _ => {
                let mut settled = order.clone();
                settled.apply(event, at);
                Reply::Order(Box::new(settled))
            }
        };
        let order = self
            .book
            .orders
            .get(&order_id)
            .ok_or(Rejection::OrderNotFound(order_id))?;
        let idempotency = tag.map(|t| t.entry(reply_of(order)));
        let record = Record {
            at,
            event: journal_event,
            idempotency,
        };
        let (reply, rx) = oneshot::channel();
        self.busy.insert(order_id);
        let op = CoordOp::Returned {
            order_id,
            event,
            at,
            refusal,
            reply,
        };
        if let Err((_, e)) = submit(self, ctx, record, op) {
            self.busy.remove(&order_id);
            return Err(e);
        }
        Ok(rx)
    }

    fn expire_due(&mut self, ctx: &mut Context<Self>) -> Vec<oneshot::Receiver<Result<Order>>> {
        let now = self.clock.now();
        let due: Vec<OrderId> = self
            .book
            .due
            .range(..=(now, OrderId(u64::MAX)))
            .map(|(_, id)| *id)
            .filter(|id| !self.busy.contains(id))
            .take(4096)
            .collect();
        due.into_iter()
            .filter_map(|id| {
                self.settle_unpaid(ctx, id, OrderEvent::Expired, now, None, None)
                    .ok()
            })
            .collect()
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(
            Duration::from_millis(self.sweep_interval_ms.max(1)),
            |act, ctx| {
                act.book.let_go(&act.journal.archive);
                act.expire_due(ctx);
            },
        );
    }
}

impl Journaled for Coordinator {
    type Op = CoordOp;

    fn queue(&mut self) -> &mut CommitQueue<CoordOp> {
        &mut self.queue
    }

    fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    fn finish(&mut self, op: CoordOp, ack: Ack, _: &mut Context<Self>) {
        let ok = acked(&ack);
        match op {
            CoordOp::Returned {
                order_id,
                event,
                at,
                refusal,
                reply,
            } => {
                self.busy.remove(&order_id);
                let result = ok.and_then(|()| {
                    let order = self
                        .book
                        .orders
                        .get_mut(&order_id)
                        .ok_or(Rejection::OrderNotFound(order_id))?;
                    self.book.due.remove(&(order.expires_at, order_id));
                    order.apply(event, at);
                    let order = order.clone();
                    self.book.settled(order_id, &self.journal.archive);
                    self.tell_products(&order, |q| {
                        StockNews::Durable(ProductEvent::Released(q), at)
                    });
                    if let Some(user) = self.registry.users.get(order.user_id.0) {
                        if let Some(coupon) = order.user_coupon_id {
                            user.do_send(OrderNews::Durable(UserEvent::CouponRestored(coupon), at));
                        }
                        let lines = order.quantities().collect();
                        user.do_send(OrderNews::Durable(UserEvent::UnitsReleased(lines), at));
                    }
                    match refusal {
                        Some(e) => Err(e),
                        None => Ok(order),
                    }
                });
                let _ = reply.send(result);
            }
        }
    }
}

impl<R: 'static> Handler<Read<OrderBook, R>> for Coordinator {
    type Result = MessageResult<Read<OrderBook, R>>;

    fn handle(&mut self, msg: Read<OrderBook, R>, _: &mut Context<Self>) -> Self::Result {
        self.book.let_go(&self.journal.archive);
        MessageResult((msg.0)(&self.book))
    }
}

/// Where the lines of a new order come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderSource {
    Items(Vec<LineRequest>),
    Cart,
}

/// A durable order joins the book of its shard.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt(pub Box<Order>);

impl Handler<Adopt> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: Adopt, _: &mut Context<Self>) {
        self.book.insert(*msg.0);
        self.book.let_go(&self.journal.archive);
    }
}

/// Holds taken for an order being placed.
struct Held {
    user: Addr<UserActor>,
    items: Vec<OrderLine>,
    holds: Vec<(ProductRef, u64)>,
    coupon: Option<UserCouponId>,
    offer: Option<Offer>,
    /// Every line as it counts per user, held on the user once `user_held`.
    counted: Vec<CountedLine>,
    user_held: bool,
    from_cart: bool,
}

impl Held {
    /// (product, quantity) of every line.
    fn counted_units(&self) -> Vec<(crate::domain::ids::ProductId, u64)> {
        self.counted
            .iter()
            .map(|l| (l.product_id, l.quantity))
            .collect()
    }

    fn abandon(self) {
        for (product, quantity) in &self.holds {
            product.tell(StockNews::Abandoned(*quantity));
        }
        if self.user_held {
            let counted = self.counted_units();
            self.user.do_send(OrderNews::Abandoned {
                coupon: self.coupon,
                counted,
            });
        }
    }
}

/// Takes every hold an order needs, or none.
async fn hold_all(
    registry: Arc<Registry>,
    limits: Arc<Limits>,
    user: Addr<UserActor>,
    source: OrderSource,
    coupon: Option<UserCouponId>,
    at: Timestamp,
) -> Result<Held> {
    let (lines, from_cart) = order_lines(&user, source).await?;
    validate_lines(&lines, &limits)?;
    let held = reserve_stock(&registry, user, &lines, from_cart, at).await?;
    // With no coupon and no limit there is nothing to decide on the user:
    // the units are counted when the user hears the order placed.
    if coupon.is_none() && held.counted.iter().all(|l| l.max_per_user.is_none()) {
        return Ok(held);
    }
    // Boxed: awaited in place, the user's hold would set the size of this
    // future and of every one enclosing it (the placing saga, the keyed
    // request), which each order moves whole, the many with no coupon
    // and no limit included.
    Box::pin(hold_on_user(held, coupon, at)).await
}

/// The lines an order asks for, and whether they are the user's cart
/// (which must not be empty).
async fn order_lines(
    user: &Addr<UserActor>,
    source: OrderSource,
) -> Result<(Vec<LineRequest>, bool)> {
    match source {
        OrderSource::Items(lines) => Ok((lines, false)),
        OrderSource::Cart => {
            let read = Read::new(|u: &User| {
                u.cart
                    .iter()
                    .map(|l| LineRequest {
                        product_id: l.product_id,
                        quantity: l.quantity,
                    })
                    .collect::<Vec<_>>()
            });
            let lines = user.send(read).await?;
            if lines.is_empty() {
                return Err(Error::invalid("from_cart: the cart is empty"));
            }
            Ok((lines, true))
        }
    }
}

/// Reserves every line on its product, all asked at once; if any refuses,
/// the holds the others took are given back and the first refusal is the
/// answer.
async fn reserve_stock(
    registry: &Registry,
    user: Addr<UserActor>,
    lines: &[LineRequest],
    from_cart: bool,
    at: Timestamp,
) -> Result<Held> {
    let addrs = lines
        .iter()
        .map(|l| {
            registry
                .products
                .get(l.product_id.0)
                .ok_or(Rejection::ProductNotFound(l.product_id))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let replies = join_all(addrs.iter().zip(lines).map(|(a, l)| {
        a.addr.send(Reserve {
            quantity: l.quantity,
            at,
        })
    }))
    .await;
    let mut held = Held {
        user,
        items: Vec::with_capacity(lines.len()),
        holds: Vec::new(),
        coupon: None,
        offer: None,
        counted: Vec::new(),
        user_held: false,
        from_cart,
    };
    let mut refusal: Option<Error> = None;
    for ((addr, line), reply) in addrs.into_iter().zip(lines).zip(replies) {
        match reply.map_err(Error::from).and_then(|r| r) {
            Ok(Reserved {
                name,
                price,
                counted,
            }) => {
                held.holds.push((addr, line.quantity));
                held.counted.push(counted);
                held.items.push(OrderLine {
                    product_id: line.product_id,
                    name,
                    unit_price: price,
                    quantity: line.quantity,
                });
            }
            Err(e) => {
                refusal.get_or_insert(e);
            }
        }
    }
    if let Some(e) = refusal {
        held.abandon();
        return Err(e);
    }
    Ok(held)
}

/// Asks the user to hold `coupon` and count the units toward any purchase
/// limit (both decided in the user actor); if it refuses, every hold is
/// given back.
async fn hold_on_user(mut held: Held, coupon: Option<UserCouponId>, at: Timestamp) -> Result<Held> {
    let total = match total(&held.items) {
        Ok(t) => t,
        Err(r) => {
            held.abandon();
            return Err(r.into());
        }
    };
    let ask = HoldForOrder {
        coupon,
        total,
        counted: held.counted.clone(),
        at,
    };
    match held
        .user
        .send(ask)
        .await
        .map_err(Error::from)
        .and_then(|r| r)
    {
        Ok(offer) => {
            held.user_held = true;
            held.coupon = coupon;
            held.offer = offer;
            Ok(held)
        }
        Err(e) => {
            held.abandon();
            Err(e)
        }
    }
}

/// The placing saga. It runs on the caller's task, not in a coordinator:
/// until its record is durable it touches no coordinator state, only holds
/// in the product and user actors. The durable order then joins the book
/// of its shard (`id % shards`), which runs payment, cancel and expiry.
pub struct Placement {
    pub registry: Arc<Registry>,
    pub journal: JournalHandle,
    pub clock: Arc<dyn Clock>,
    pub limits: Arc<Limits>,
    pub order_ttl_ms: u64,
    /// The highest order id handed out; ids are dense from 1.
    pub order_ids: std::sync::atomic::AtomicU64,
    pub shards: Vec<Addr<Coordinator>>,
}

impl Placement {
    pub fn shard(&self, id: OrderId) -> &Addr<Coordinator> {
        &self.shards[(id.0 as usize) % self.shards.len()]
    }

    /// Holds stock and coupon, prices, journals `OrderPlaced`, and answers once it is durable.
    pub async fn place(
        &self,
        user_id: UserId,
        source: OrderSource,
        coupon: Option<UserCouponId>,
        tag: Option<Tag>,
    ) -> Result<Order> {
        let at = self.clock.now();
        let (held, order, record) = self
            .held_and_priced(user_id, source, coupon, tag, at)
            .await?;
        let seq = match self.journal_placed(record).await {
            Ok(seq) => seq,
            Err(e) => {
                held.abandon();
                return Err(e);
            }
        };
        self.announce_placed(&held, &order, seq, at);
        Ok(order)
    }

    /// The holds an order takes, the pending order they make and its
    /// `OrderPlaced` record. A step of its own so that its state and that
    /// of the wait for the record share the placing future's bytes.
    async fn held_and_priced(
        &self,
        user_id: UserId,
        source: OrderSource,
        coupon: Option<UserCouponId>,
        tag: Option<Tag>,
        at: Timestamp,
    ) -> Result<(Held, Order, Record)> {
        let user = self
            .registry
            .users
            .get(user_id.0)
            .ok_or(Rejection::UserNotFound(user_id))?;
        let held = hold_all(
            self.registry.clone(),
            self.limits.clone(),
            user,
            source,
            coupon,
            at,
        )
        .await?;
        let order = match self.new_order(user_id, &held, at) {
            Ok(order) => order,
            Err(r) => {
                held.abandon();
                return Err(r.into());
            }
        };
        let event = Event::OrderPlaced {
            order: Box::new(order.clone()),
            from_cart: held.from_cart,
        };
        let record = Record {
            at,
            event,
            idempotency: tag.map(|t| t.entry(Reply::Order(Box::new(order.clone())))),
        };
        Ok((held, order, record))
    }

    /// The pending order the holds make, priced, under the next order id
    /// (taken only once it prices).
    fn new_order(
        &self,
        user_id: UserId,
        held: &Held,
        at: Timestamp,
    ) -> std::result::Result<Order, Rejection> {
        let amounts = price(&held.items, held.offer)?;
        let id = OrderId(
            self.order_ids
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1,
        );
        Ok(Order {
            id,
            user_id,
            status: OrderStatus::Pending,
            items: held.items.clone(),
            total_amount: amounts.total,
            discount_amount: amounts.discount,
            pay_amount: amounts.pay,
            user_coupon_id: held.coupon,
            created_at: at,
            expires_at: at.plus_ms(self.order_ttl_ms),
            paid_at: None,
            refunds: crate::domain::refund::Refunds::NONE,
        })
    }

    /// Journals the `OrderPlaced` record and waits until it is durable: its sequence.
    async fn journal_placed(&self, record: Record) -> Result<u64> {
        let ack = match self.journal.submit(record) {
            Ok(rx) => rx.await.unwrap_or(Err(crate::store::StorageError::Closed)),
            Err(e) => Err(match Error::from(e) {
                Error::Storage(s) => s,
                other => return Err(other),
            }),
        };
        ack.map_err(Error::from)
    }

    /// A durable order's news: the user, then every product holding its
    /// units, then the shard that keeps it from now on.
    fn announce_placed(&self, held: &Held, order: &Order, seq: u64, at: Timestamp) {
        let cart_products = if held.from_cart {
            order.items.iter().map(|l| l.product_id).collect()
        } else {
            Vec::new()
        };
        // The user hears first: a product that waits for its unlimited
        // reservations to settle (a limit just set) answers the next order
        // only after this news, so that order's hold on this user comes
        // after these units are counted (one mailbox, in order).
        held.user.do_send(OrderNews::Placed {
            seq,
            at,
            order_id: order.id,
            coupon: order.user_coupon_id,
            cart_products,
            units: held.counted_units(),
            units_were_held: held.user_held,
        });
        for (product, quantity) in &held.holds {
            product.tell(StockNews::Durable(ProductEvent::Reserved(*quantity), at));
        }
        // Sent before the answer: any request about this order reaches its shard after it.
        self.shard(order.id).do_send(Adopt(Box::new(order.clone())));
    }
}

/// Turns a synchronous step's receiver into the handler's final answer.
fn answer<A: Actor>(
    step: Result<oneshot::Receiver<Result<Order>>>,
) -> impl ActorFuture<A, Output = Result<Order>> {
    fut::wrap_future(async move {
        match step {
            Ok(rx) => rx.await.unwrap_or(Err(Error::ShuttingDown)),
            Err(e) => Err(e),
        }
    })
}

#[derive(Message)]
#[rtype(result = "Result<Order>")]
pub struct Pay {
    pub order_id: OrderId,
    pub tag: Option<Tag>,
}

impl Handler<Pay> for Coordinator {
    type Result = ResponseActFuture<Self, Result<Order>>;

    fn handle(&mut self, msg: Pay, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.clock.now();
        let order_id = msg.order_id;
        let decision = match self.book.orders.get(&order_id) {
            None => Err(Rejection::OrderNotFound(order_id)),
            Some(_) if self.busy.contains(&order_id) => Err(Rejection::OrderNotPayable(order_id)),
            Some(order) => order.decide(OrderCommand::Pay, now),
        };
        match decision {
            Err(r) => Box::pin(fut::ready(Err(r.into()))),
            Ok(OrderEvent::Paid) => self.pay(order_id, now, msg.tag),
            Ok(event) => {
                let step = self.settle_unpaid(ctx, order_id, event, now, None, None);
                Box::pin(
                    answer(step).map(move |r, _, _| {
                        r.and(Err(Rejection::OrderNotPayable(order_id).into()))
                    }),
                )
            }
        }
    }
}

impl Coordinator {
    /// Pays a pending order within its time: the user decides the debit
    /// and journals `OrderPaid`; a balance too short fails the order.
    fn pay(
        &mut self,
        order_id: OrderId,
        now: Timestamp,
        tag: Option<Tag>,
    ) -> ResponseActFuture<Self, Result<Order>> {
        let order = &self.book.orders[&order_id];
        // The order as the answer reads once paid.
        let mut paid = order.clone();
        paid.apply(OrderEvent::Paid, now);
        let debit = Debit {
            order_id,
            amount: paid.pay_amount,
            at: now,
            keyed: tag.clone().map(|tag| (tag, Box::new(paid.clone()))),
        };
        let Some(debit) = self.registry.users.with(paid.user_id.0, |u| u.send(debit)) else {
            return Box::pin(fut::ready(
                Err(Rejection::UserNotFound(paid.user_id).into()),
            ));
        };
        self.busy.insert(order_id);
        Box::pin(
            fut::wrap_future::<_, Self>(debit).then(move |res, act, ctx| {
                match res.map_err(Error::from).and_then(|r| r) {
                    Ok(()) => {
                        act.busy.remove(&order_id);
                        act.paid(&paid, now);
                        fut::ready(Ok(paid)).boxed_local()
                    }
                    Err(e @ Error::Rejected(Rejection::InsufficientBalance { .. })) => {
                        let failed = OrderEvent::PaymentFailed;
                        let step = act.settle_unpaid(ctx, order_id, failed, now, tag, Some(e));
                        answer(step).boxed_local()
                    }
                    Err(e) => {
                        act.busy.remove(&order_id);
                        fut::ready(Err(e)).boxed_local()
                    }
                }
            }),
        )
    }

    /// A payment is durable (decided at `at`): the order is paid, its
    /// stock sold, the sale counted.
    fn paid(&mut self, paid: &Order, at: Timestamp) {
        if let Some(order) = self.book.orders.get_mut(&paid.id) {
            self.book.due.remove(&(order.expires_at, order.id));
            order.apply(OrderEvent::Paid, at);
            self.book.settled(paid.id, &self.journal.archive);
        }
        self.tell_products(paid, |q| StockNews::Durable(ProductEvent::Sold(q), at));
        let lines = paid
            .items
            .iter()
            .map(|l| (l.product_id, l.name.clone(), l.unit_price, l.quantity))
            .collect();
        // Sent before the reply: a refresh asked for after it counts this sale.
        self.stats.do_send(Sold { at, lines });
    }
}

#[derive(Message)]
#[rtype(result = "Result<Order>")]
pub struct Cancel {
    pub order_id: OrderId,
    pub tag: Option<Tag>,
}

impl Handler<Cancel> for Coordinator {
    type Result = ResponseActFuture<Self, Result<Order>>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Context<Self>) -> Self::Result {
        let order_id = msg.order_id;
        let now = self.clock.now();
        let decision = match self.book.orders.get(&order_id) {
            None => Err(Rejection::OrderNotFound(order_id)),
            Some(_) if self.busy.contains(&order_id) => {
                Err(Rejection::OrderNotCancellable(order_id))
            }
            Some(order) => order.decide(OrderCommand::Cancel, now),
        };
        match decision {
            Err(r) => Box::pin(fut::ready(Err(r.into()))),
            Ok(OrderEvent::Cancelled) => {
                let cancelled = OrderEvent::Cancelled;
                let step = self.settle_unpaid(ctx, order_id, cancelled, now, msg.tag, None);
                Box::pin(answer(step))
            }
            Ok(event) => {
                let step = self.settle_unpaid(ctx, order_id, event, now, None, None);
                let refusal = Rejection::OrderNotCancellable(order_id);
                Box::pin(answer(step).map(move |r, _, _| r.and(Err(refusal.into()))))
            }
        }
    }
}

/// Expires every pending order past its time now; answers how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ExpireDue;

impl Handler<ExpireDue> for Coordinator {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: ExpireDue, ctx: &mut Context<Self>) -> Self::Result {
        let receivers = self.expire_due(ctx);
        Box::pin(async move {
            let mut expired = 0;
            for rx in receivers {
                if matches!(rx.await, Ok(Ok(_))) {
                    expired += 1;
                }
            }
            expired
        })
    }
}
