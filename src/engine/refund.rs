//! Refunds at the engine: one durable decision at a time per order.
//!
//! The order's coordinator shard owns the decision: it decides the refund
//! against the order as it is ([`Order::decide_refund`]), then hands the
//! record to the order's user, whose actor journals it among its own
//! records (the credit is its state, so its balance history reads in
//! journal order) and answers once it is durable. Only then does the
//! coordinator apply the refund to the order and tell the products
//! (units back in stock, out of the sales count) and the ranking. The
//! record (`OrderRefunded`) holds every effect at once, so recovery never
//! finds half a refund.
//!
//! While a refund of an order is under way, further refunds of it wait
//! (in arrival order, at most [`REFUNDS_WAITING_MAX`] per shard) and are
//! decided once it is done, against the order as it is then: twenty
//! whole refunds at once refund it once, and concurrent partial refunds
//! never return more than was paid.
//!
//! A paid order may have left memory for the archive: the engine then
//! reads it there and hands it to its shard, which takes it back (unless
//! a concurrent refund already did: the shard's copy is the newer) until
//! the next snapshot archives it again.

use crate::domain::event::{Event, Record};
use crate::domain::ids::{IdMap, IdSet, OrderId};
use crate::domain::order::Order;
use crate::domain::product::ProductEvent;
use crate::domain::refund::{validate_request, Refund, RefundRequest};
use crate::domain::rejection::Rejection;
use crate::domain::views::Reply;
use crate::engine::actor::{ready, reply_channel};
use crate::engine::coordinator::Coordinator;
use crate::engine::error::{Error, Result};
use crate::engine::facade::Engine;
use crate::engine::idempotency::{IdempotencyKey, Tag};
use crate::engine::keyed_request::KeyedRequest;
use crate::engine::product_actor::StockNews;
use crate::engine::stats_actor::Unsold;
use crate::engine::user_actor::CreditRefund;
use actix::prelude::*;
use std::collections::VecDeque;
use tokio::sync::oneshot;

/// Refunds a coordinator shard keeps waiting behind the ones under way;
/// more are refused with 503 `OVERLOADED`.
pub const REFUNDS_WAITING_MAX: usize = 1024;

/// A refund asked of a coordinator, waiting for its turn.
pub struct RefundJob {
    request: RefundRequest,
    tag: Option<Tag>,
    reply: oneshot::Sender<Result<Order>>,
}

/// The refunds under way in a shard, and those waiting behind them.
#[derive(Default)]
pub struct RefundsWaiting {
    active: IdSet<OrderId>,
    waiting: IdMap<OrderId, VecDeque<RefundJob>>,
    waiting_count: usize,
}

impl RefundsWaiting {
    fn push(&mut self, id: OrderId, job: RefundJob) -> std::result::Result<(), RefundJob> {
        if self.waiting_count >= REFUNDS_WAITING_MAX {
            return Err(job);
        }
        self.waiting_count += 1;
        self.waiting.entry(id).or_default().push_back(job);
        Ok(())
    }

    fn pop(&mut self, id: OrderId) -> Option<RefundJob> {
        let queue = self.waiting.get_mut(&id)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.waiting.remove(&id);
        }
        if job.is_some() {
            self.waiting_count -= 1;
        }
        job
    }
}

/// Refunds order `order_id`. `archived`: the order as the archive holds
/// it, when the shard answered that it does not hold it.
#[derive(Message)]
#[rtype(result = "Result<Order>")]
pub struct RefundOrder {
    pub order_id: OrderId,
    pub request: RefundRequest,
    pub archived: Option<Box<Order>>,
    pub tag: Option<Tag>,
}

impl Handler<RefundOrder> for Coordinator {
    type Result = ResponseFuture<Result<Order>>;

    fn handle(&mut self, msg: RefundOrder, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.order_id;
        if !self.book.orders.contains_key(&id) {
            match msg.archived {
                Some(order) if order.id == id && order.status.is_final() => {
                    self.book.insert(*order);
                    self.book.resettled(id, &self.journal.archive);
                }
                _ => return ready(Err(Rejection::OrderNotFound(id).into())),
            }
        }
        let (reply, response) = reply_channel();
        let job = RefundJob {
            request: msg.request,
            tag: msg.tag,
            reply,
        };
        if self.refunds_waiting.active.contains(&id) {
            if let Err(job) = self.refunds_waiting.push(id, job) {
                let _ = job.reply.send(Err(Error::Overloaded));
            }
        } else {
            self.start_refund(id, job, ctx);
        }
        response
    }
}

impl Coordinator {
    /// Decides `job` against the order as it is and, if it is accepted,
    /// has the user journal it; the next waiting refund starts once done.
    fn start_refund(&mut self, id: OrderId, job: RefundJob, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let decided = match self.book.orders.get(&id) {
            None => Err(Rejection::OrderNotFound(id)),
            // Being paid or returned: still pending, so not refundable.
            Some(_) if self.busy.contains(&id) => Err(Rejection::OrderNotRefundable(id)),
            Some(order) => order
                .decide_refund(&job.request, now)
                .map(|refund| (order.clone(), refund)),
        };
        let (before, refund) = match decided {
            Ok(d) => d,
            Err(r) => {
                let _ = job.reply.send(Err(r.into()));
                return self.next_refund(id, ctx);
            }
        };
        let Some(user) = self.registry.users.get(before.user_id.0) else {
            let _ = job
                .reply
                .send(Err(Rejection::UserNotFound(before.user_id).into()));
            return self.next_refund(id, ctx);
        };
        let mut after = before;
        after.apply_refund(refund.clone());
        let coupon = after.user_coupon_id.filter(|_| !after.holds_coupon());
        let record = Record {
            at: now,
            event: Event::OrderRefunded {
                order: Box::new(after.clone()),
            },
            idempotency: job
                .tag
                .map(|t| t.entry(Reply::Order(Box::new(after.clone())))),
        };
        self.busy.insert(id);
        self.refunds_waiting.active.insert(id);
        let credit = user.send(CreditRefund {
            record,
            order_id: id,
            amount: refund.amount,
            coupon,
            lines: refund
                .items
                .iter()
                .map(|l| (l.product_id, l.quantity))
                .collect(),
        });
        let reply = job.reply;
        ctx.spawn(
            fut::wrap_future::<_, Self>(credit).map(move |res, act, ctx| {
                act.busy.remove(&id);
                act.refunds_waiting.active.remove(&id);
                let result = res.map_err(Error::from).and_then(|r| r).map(|()| {
                    act.refunded(&after, &refund);
                    after
                });
                let _ = reply.send(result);
                act.next_refund(id, ctx);
            }),
        );
    }

    fn next_refund(&mut self, id: OrderId, ctx: &mut Context<Self>) {
        if let Some(job) = self.refunds_waiting.pop(id) {
            self.start_refund(id, job, ctx);
        }
    }

    /// A refund is durable: the order reads refunded, its units go back to
    /// stock and leave the ranking, and it is archived again as it is now.
    fn refunded(&mut self, after: &Order, refund: &Refund) {
        if let Some(order) = self.book.orders.get_mut(&after.id) {
            *order = after.clone();
        }
        self.book.resettled(after.id, &self.journal.archive);
        let paid_at = after.paid_at.unwrap_or_default();
        let at = self.clock.now();
        for line in &refund.items {
            let event = ProductEvent::Refunded {
                quantity: line.quantity,
                paid_at,
            };
            self.registry.products.with(line.product_id.0, |product| {
                product.tell(StockNews::Durable(event, at))
            });
        }
        let lines = refund
            .items
            .iter()
            .map(|l| (l.product_id, l.quantity))
            .collect();
        // Sent before the reply: a refresh asked for after it leaves these units out.
        self.stats.do_send(Unsold { paid_at, lines });
    }
}

impl Engine {
    /// Refunds a paid order, whole (no `items`) or in part (admin).
    pub async fn refund_order(
        &self,
        id: OrderId,
        request: RefundRequest,
        key: Option<IdempotencyKey>,
    ) -> Result<Order> {
        let keyed = KeyedRequest::RefundOrder {
            order: id,
            request: &request,
        }
        .under(key);
        self.keyed(keyed, move |engine, tag| async move {
            validate_request(&request, engine.limits())?;
            let shard = engine.order_shard(id).clone();
            let asked = RefundOrder {
                order_id: id,
                request: request.clone(),
                archived: None,
                tag: tag.clone(),
            };
            match shard.send(asked).await? {
                Err(Error::Rejected(Rejection::OrderNotFound(_))) => {
                    let Some(order) = engine.archived_order(id).await? else {
                        return Err(Rejection::OrderNotFound(id).into());
                    };
                    let again = RefundOrder {
                        order_id: id,
                        request,
                        archived: Some(Box::new(order)),
                        tag,
                    };
                    shard.send(again).await?
                }
                other => other,
            }
        })
        .await
    }
}
