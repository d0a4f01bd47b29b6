//! One actor per user: wallet, balance history, coupons held, cart.

use crate::domain::coupon::Discount;
use crate::domain::event::{Event, Record};
use crate::domain::ids::{OrderId, ProductId, UserCouponId};
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::order::Order;
use crate::domain::time::Timestamp;
use crate::domain::user::HISTORY_CHUNK;
use crate::domain::user::{CartLine, User, UserCoupon};
use crate::domain::views::{BalanceView, CartView, Reply};
use crate::engine::actor::{acked, ready, reply_channel, submit, Journaled, Read};
use crate::engine::commit::CommitQueue;
use crate::engine::error::Result;
use crate::engine::idempotency::Tag;
use crate::store::writer::{Ack, JournalHandle};
use actix::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::oneshot;

pub struct UserActor {
    user: User,
    journal: JournalHandle,
    limits: Arc<Limits>,
    queue: CommitQueue<UserOp>,
    /// Whole chunks of history, each with the archive mark taken when it
    /// filled: entries before `.1` leave memory once that is written.
    filled: VecDeque<(u64, u64)>,
}

pub enum UserOp {
    Charge {
        amount: Krw,
        at: Timestamp,
        view: BalanceView,
        reply: oneshot::Sender<Result<BalanceView>>,
    },
    Pay {
        order_id: OrderId,
        amount: Krw,
        at: Timestamp,
        reply: oneshot::Sender<Result<()>>,
    },
    Cart {
        change: CartChange,
        view: CartView,
        reply: oneshot::Sender<Result<CartView>>,
    },
}

#[derive(Clone)]
pub enum CartChange {
    Set(CartLine),
    Remove(ProductId),
}

impl CartChange {
    fn apply(&self, user: &mut User) {
        match self {
            CartChange::Set(line) => user.apply_cart_line_set(line.clone()),
            CartChange::Remove(id) => user.apply_cart_line_removed(*id),
        }
    }
}

impl UserActor {
    pub fn new(user: User, journal: JournalHandle, limits: Arc<Limits>) -> UserActor {
        UserActor {
            user,
            journal,
            limits,
            queue: CommitQueue::default(),
            filled: VecDeque::new(),
        }
    }

    /// A history entry was added: note a chunk it fills.
    fn history_grew(&mut self) {
        let len = self.user.history_len();
        if len.is_multiple_of(HISTORY_CHUNK as u64) {
            self.filled.push_back((self.journal.archive.mark(), len));
        }
    }

    /// Lets go of the history the archive holds now.
    fn let_go(&mut self) {
        while let Some(&(mark, upto)) = self.filled.front() {
            if !self.journal.archive.is_written(mark) {
                break;
            }
            self.filled.pop_front();
            self.user.archive_history_before(upto);
        }
    }

    fn record(
        at: Timestamp,
        event: Event,
        tag: Option<Tag>,
        reply: impl FnOnce() -> Reply,
    ) -> Record {
        Record {
            at,
            event,
            idempotency: tag.map(|t| t.entry(reply())),
        }
    }

    /// The cart as it will be once every cart change already submitted is applied, plus `change`.
    fn projected_cart(&self, change: &CartChange) -> CartView {
        let mut user = User {
            history: Vec::new(),
            coupons: Vec::new(),
            ..self.user.clone()
        };
        for op in self.queue.iter() {
            if let UserOp::Cart { change, .. } = op {
                change.apply(&mut user);
            }
        }
        change.apply(&mut user);
        CartView::from(&user)
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;
}

impl Journaled for UserActor {
    type Op = UserOp;

    fn queue(&mut self) -> &mut CommitQueue<UserOp> {
        &mut self.queue
    }

    fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    fn finish(&mut self, op: UserOp, ack: Ack, _ctx: &mut Context<Self>) {
        self.let_go();
        let ok = acked(&ack);
        match op {
            UserOp::Charge {
                amount,
                at,
                view,
                reply,
            } => {
                self.user.drop_credit(amount);
                if ok.is_ok() {
                    self.user.apply_charged(amount, at);
                    self.history_grew();
                }
                let _ = reply.send(ok.map(|()| view));
            }
            UserOp::Pay {
                order_id,
                amount,
                at,
                reply,
            } => {
                self.user.drop_debit(amount);
                if ok.is_ok() {
                    self.user.apply_paid(order_id, amount, at);
                    self.history_grew();
                }
                let _ = reply.send(ok);
            }
            UserOp::Cart {
                change,
                view,
                reply,
            } => {
                if ok.is_ok() {
                    change.apply(&mut self.user);
                }
                let _ = reply.send(ok.map(|()| view));
            }
        }
    }
}

impl<R: 'static> Handler<Read<User, R>> for UserActor {
    type Result = MessageResult<Read<User, R>>;

    fn handle(&mut self, msg: Read<User, R>, _: &mut Context<Self>) -> Self::Result {
        self.let_go();
        MessageResult((msg.0)(&self.user))
    }
}

/// Adds money to the wallet.
#[derive(Message)]
#[rtype(result = "Result<BalanceView>")]
pub struct Charge {
    pub amount: Krw,
    pub at: Timestamp,
    pub tag: Option<Tag>,
}

impl Handler<Charge> for UserActor {
    type Result = ResponseFuture<Result<BalanceView>>;

    fn handle(&mut self, msg: Charge, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(r) = self.user.decide_charge(msg.amount, &self.limits) {
            return ready(Err(r.into()));
        }
        // In journal order every pending credit and debit of this user comes first.
        let balance = self.user.balance.0 + self.user.credits_pending.0
            - self.user.debits_pending.0
            + msg.amount.0;
        let view = BalanceView {
            user_id: self.user.id,
            balance: Krw(balance),
        };
        let event = Event::BalanceCharged {
            user_id: self.user.id,
            amount: msg.amount,
        };
        let record = Self::record(msg.at, event, msg.tag, || Reply::Balance(view.clone()));
        self.user.hold_credit(msg.amount);
        let (reply, response) = reply_channel();
        let op = UserOp::Charge {
            amount: msg.amount,
            at: msg.at,
            view,
            reply,
        };
        if let Err((_, e)) = submit(self, ctx, record, op) {
            self.user.drop_credit(msg.amount);
            return ready(Err(e));
        }
        response
    }
}

/// Pays for an order: debits the balance and journals `OrderPaid`, which
/// also sells the reserved stock and queues the order for the data platform.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Debit {
    pub order_id: OrderId,
    pub amount: Krw,
    pub at: Timestamp,
    /// With an idempotency key, the key and the order as it will read once
    /// paid (its stored answer); `None` otherwise, so no order is copied.
    pub keyed: Option<(Tag, Box<Order>)>,
}

impl Handler<Debit> for UserActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Debit, ctx: &mut Context<Self>) -> Self::Result {
        let (order_id, amount, at) = (msg.order_id, msg.amount, msg.at);
        if let Err(r) = self.user.decide_debit(amount) {
            return ready(Err(r.into()));
        }
        let event = Event::OrderPaid {
            order_id,
            user_id: self.user.id,
            amount,
        };
        let record = Record {
            at,
            event,
            idempotency: msg.keyed.map(|(tag, paid)| tag.entry(Reply::Order(paid))),
        };
        self.user.hold_debit(amount);
        let (reply, response) = reply_channel();
        if let Err((_, e)) = submit(
            self,
            ctx,
            record,
            UserOp::Pay {
                order_id,
                amount,
                at,
                reply,
            },
        ) {
            self.user.drop_debit(amount);
            return ready(Err(e));
        }
        response
    }
}

/// Sets or removes a cart line.
#[derive(Message)]
#[rtype(result = "Result<CartView>")]
pub struct ChangeCart {
    pub change: CartChange,
    pub at: Timestamp,
    pub tag: Option<Tag>,
}

impl Handler<ChangeCart> for UserActor {
    type Result = ResponseFuture<Result<CartView>>;

    fn handle(&mut self, msg: ChangeCart, ctx: &mut Context<Self>) -> Self::Result {
        let user_id = self.user.id;
        let event = match &msg.change {
            CartChange::Set(line) => {
                if let Err(r) =
                    self.user
                        .decide_set_cart_line(line.product_id, line.quantity, &self.limits)
                {
                    return ready(Err(r.into()));
                }
                Event::CartLineSet {
                    user_id,
                    product_id: line.product_id,
                    name: line.name.clone(),
                    price: line.price,
                    quantity: line.quantity,
                }
            }
            CartChange::Remove(product_id) => Event::CartLineRemoved {
                user_id,
                product_id: *product_id,
            },
        };
        let view = self.projected_cart(&msg.change);
        let record = Self::record(msg.at, event, msg.tag, || Reply::Cart(view.clone()));
        let (reply, response) = reply_channel();
        if let Err((_, e)) = submit(
            self,
            ctx,
            record,
            UserOp::Cart {
                change: msg.change,
                view,
                reply,
            },
        ) {
            return ready(Err(e));
        }
        response
    }
}

/// Takes a coupon for an order being placed (a hold until the order is durable).
#[derive(Message)]
#[rtype(result = "Result<Discount>")]
pub struct HoldCoupon {
    pub id: UserCouponId,
    pub at: Timestamp,
}

impl Handler<HoldCoupon> for UserActor {
    type Result = Result<Discount>;

    fn handle(&mut self, msg: HoldCoupon, _: &mut Context<Self>) -> Self::Result {
        let discount = self.user.decide_use_coupon(msg.id, msg.at)?;
        self.user.hold_coupon(msg.id);
        Ok(discount)
    }
}

/// What became of an order that touched this user, once it is durable.
#[derive(Message)]
#[rtype(result = "()")]
pub enum OrderNews {
    /// The order was placed: the held coupon is used, ordered cart lines leave the cart.
    Placed {
        order_id: OrderId,
        coupon: Option<UserCouponId>,
        cart_products: Vec<ProductId>,
    },
    /// Placing failed before anything was durable: the coupon hold is dropped.
    Abandoned { coupon: UserCouponId },
    /// The order ended unpaid (cancelled, failed, expired): the coupon is available again.
    Returned { coupon: UserCouponId },
    /// A coupon of a campaign was issued to this user.
    CouponIssued(UserCoupon),
}

impl Handler<OrderNews> for UserActor {
    type Result = ();

    fn handle(&mut self, msg: OrderNews, _: &mut Context<Self>) {
        match msg {
            OrderNews::Placed {
                order_id,
                coupon,
                cart_products,
            } => {
                if let Some(c) = coupon {
                    self.user.apply_coupon_used(c, order_id);
                }
                self.user.apply_cart_ordered(cart_products.into_iter());
            }
            OrderNews::Abandoned { coupon } => self.user.drop_coupon_hold(coupon),
            OrderNews::Returned { coupon } => self.user.apply_coupon_restored(coupon),
            OrderNews::CouponIssued(coupon) => self.user.apply_coupon_issued(coupon),
        }
    }
}
