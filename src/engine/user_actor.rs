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
    /// Placed orders heard of while records of this user were in flight,
    /// by journal sequence: each is applied in its place among them.
    placed: Vec<Placed>,
    /// The journal sequence of the last cart change applied, for each
    /// product in the cart: a placed order heard of after a later change
    /// of that line leaves the line as that change made it, as recovery
    /// (which applies them in journal order) does. At most one entry per
    /// cart line.
    cart_changed: Vec<(ProductId, u64)>,
}

/// What a placed order does to its user's cart, at its journal sequence.
/// (Its coupon is marked used as soon as the order is heard of: a coupon
/// is held for the order until then, and nothing else touches it, so its
/// order among the user's records does not matter; the order's return of
/// the coupon can only come after.)
struct Placed {
    seq: u64,
    cart_products: Vec<ProductId>,
}

impl Placed {
    /// Takes the ordered lines out of the cart of `user`, but for lines
    /// changed after the order (by `cart_changed`'s sequences): journal
    /// order puts that change last.
    fn apply(self, user: &mut User, cart_changed: &[(ProductId, u64)]) {
        let seq = self.seq;
        let changed_later = |p: &ProductId| cart_changed.iter().any(|&(q, at)| q == *p && at > seq);
        user.apply_cart_ordered(self.cart_products.into_iter().filter(|p| !changed_later(p)));
    }
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
    Refund {
        order_id: OrderId,
        amount: Krw,
        at: Timestamp,
        /// A wholly refunded order's coupon, available again.
        coupon: Option<UserCouponId>,
        reply: oneshot::Sender<Result<()>>,
    },
}

#[derive(Clone)]
pub enum CartChange {
    Set(CartLine),
    Remove(ProductId),
}

impl CartChange {
    pub fn product_id(&self) -> ProductId {
        match self {
            CartChange::Set(line) => line.product_id,
            CartChange::Remove(id) => *id,
        }
    }

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
            placed: Vec::new(),
            cart_changed: Vec::new(),
        }
    }

    /// Applies the placed orders journaled before `seq` (the sequence of
    /// the record about to be applied), in journal order.
    fn apply_placed_before(&mut self, seq: u64) {
        // Oldest first; they are few (usually none or one).
        while let Some(oldest) = (0..self.placed.len())
            .filter(|&j| self.placed[j].seq < seq)
            .min_by_key(|&j| self.placed[j].seq)
        {
            self.placed
                .swap_remove(oldest)
                .apply(&mut self.user, &self.cart_changed);
        }
        self.forget_cart_changes();
    }

    /// Notes that the cart line of `product` was changed by record `seq`.
    fn cart_line_changed(&mut self, product: ProductId, seq: u64) {
        match self.cart_changed.iter_mut().find(|(p, _)| *p == product) {
            Some(entry) => entry.1 = seq,
            None => self.cart_changed.push((product, seq)),
        }
        self.forget_cart_changes();
    }

    /// Keeps the change sequences of lines still in the cart only: a placed
    /// order removes a line, so a line not there needs no sequence.
    fn forget_cart_changes(&mut self) {
        let cart = &self.user.cart;
        self.cart_changed
            .retain(|(p, _)| cart.iter().any(|l| l.product_id == *p));
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

    /// The cart as it will be once every cart change already submitted
    /// and every placed order heard of are applied, plus `change`. (A cart
    /// change submitted after an order's record but before this user heard
    /// of it is projected before the order, though applied after it: the
    /// answer to that change may then show a line the order took.)
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
        let mut placed: Vec<&Placed> = self.placed.iter().collect();
        placed.sort_unstable_by_key(|p| p.seq);
        for p in placed {
            user.apply_cart_ordered(p.cart_products.iter().copied());
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

    fn finished(&mut self) {
        if self.queue.is_empty() {
            self.apply_placed_before(u64::MAX);
        }
    }

    fn queue(&mut self) -> &mut CommitQueue<UserOp> {
        &mut self.queue
    }

    fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    fn finish(&mut self, op: UserOp, ack: Ack, _ctx: &mut Context<Self>) {
        self.let_go();
        if let Ok(seq) = ack {
            self.apply_placed_before(seq);
        }
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
                if let Ok(seq) = ack {
                    change.apply(&mut self.user);
                    self.cart_line_changed(change.product_id(), seq);
                }
                let _ = reply.send(ok.map(|()| view));
            }
            UserOp::Refund {
                order_id,
                amount,
                at,
                coupon,
                reply,
            } => {
                self.user.drop_credit(amount);
                if ok.is_ok() {
                    self.user.apply_refunded(order_id, amount, at);
                    self.history_grew();
                    if let Some(c) = coupon {
                        self.user.apply_coupon_restored(c);
                    }
                }
                let _ = reply.send(ok);
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

/// Credits a refund decided by the order's coordinator: journals its
/// record (`OrderRefunded`, which holds every effect of the refund) among
/// this user's own records, so the balance history reads in journal
/// order, and answers once it is durable. A refund may take the balance
/// above its limit.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct CreditRefund {
    pub record: Record,
    pub order_id: OrderId,
    pub amount: Krw,
    pub coupon: Option<UserCouponId>,
}

impl Handler<CreditRefund> for UserActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: CreditRefund, ctx: &mut Context<Self>) -> Self::Result {
        let fits = self
            .user
            .balance
            .checked_add(self.user.credits_pending)
            .and_then(|b| b.checked_add(msg.amount));
        if fits.is_none() {
            return ready(Err(crate::domain::rejection::Rejection::InvalidRequest(
                "the refund does not fit the balance".into(),
            )
            .into()));
        }
        let at = msg.record.at;
        self.user.hold_credit(msg.amount);
        let (reply, response) = reply_channel();
        let op = UserOp::Refund {
            order_id: msg.order_id,
            amount: msg.amount,
            at,
            coupon: msg.coupon,
            reply,
        };
        if let Err((_, e)) = submit(self, ctx, msg.record, op) {
            self.user.drop_credit(msg.amount);
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
    /// The order was placed (its record is `seq`): the held coupon is
    /// used at once; ordered cart lines leave the cart in journal order
    /// among this user's own records still in flight, as recovery replays
    /// them: a cart change journaled before the order is applied before it.
    Placed {
        seq: u64,
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
                seq,
                order_id,
                coupon,
                cart_products,
            } => {
                if let Some(c) = coupon {
                    self.user.apply_coupon_used(c, order_id);
                }
                if !cart_products.is_empty() {
                    self.placed.push(Placed { seq, cart_products });
                    if self.queue.is_empty() {
                        self.apply_placed_before(u64::MAX);
                    }
                }
            }
            OrderNews::Abandoned { coupon } => self.user.drop_coupon_hold(coupon),
            OrderNews::Returned { coupon } => self.user.apply_coupon_restored(coupon),
            OrderNews::CouponIssued(coupon) => self.user.apply_coupon_issued(coupon),
        }
    }
}
