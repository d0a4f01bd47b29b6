//! One actor per user: wallet, balance history, coupons held, cart.

use crate::domain::coupon_terms::Offer;
use crate::domain::event::{Event, Record};
use crate::domain::ids::{OrderId, ProductId, UserCouponId, UserId};
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::order::Order;
use crate::domain::purchase_limit::CountedLine;
use crate::domain::time::Timestamp;
use crate::domain::user::HISTORY_CHUNK;
use crate::domain::user::{CartLine, User, UserCommand, UserEvent};
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
    /// Shared by every user's actor: a handle of its own is 40 bytes, and
    /// 32 bytes less puts each actor's task in a smaller allocation class
    /// (768 bytes, not 896: docs/performance.md).
    journal: Arc<JournalHandle>,
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
    at: Timestamp,
    cart_products: Vec<ProductId>,
}

impl Placed {
    /// Takes the ordered lines out of the cart of `user`, but for lines
    /// changed after the order (by `cart_changed`'s sequences): journal
    /// order puts that change last.
    fn apply(self, user: &mut User, cart_changed: &[(ProductId, u64)]) {
        let seq = self.seq;
        let changed_later = |p: &ProductId| cart_changed.iter().any(|&(q, at)| q == *p && at > seq);
        for p in self.cart_products {
            if !changed_later(&p) {
                user.apply(UserEvent::CartLineRemoved(p), self.at);
            }
        }
    }
}

/// A record this user submitted, finished once it is durable (or failed):
/// the hold its event took is dropped, and on durability the event is applied.
pub struct UserOp {
    event: UserEvent,
    at: Timestamp,
    reply: UserReply,
}

/// Whom to answer once a [`UserOp`] is finished, and with what.
enum UserReply {
    Balance(BalanceView, oneshot::Sender<Result<BalanceView>>),
    Paid(oneshot::Sender<Result<()>>),
    Cart(CartView, oneshot::Sender<Result<CartView>>),
    /// A refund's credit; once durable, `also` (its coupon back, its units
    /// freed) is applied after it.
    Refunded {
        also: Vec<UserEvent>,
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

    /// The command, and the journal event that records it once decided.
    fn command(self, user_id: UserId) -> (UserCommand, Event) {
        match self {
            CartChange::Set(line) => {
                let event = Event::CartLineSet {
                    user_id,
                    product_id: line.product_id,
                    name: line.name.clone(),
                    price: line.price,
                    quantity: line.quantity,
                };
                (UserCommand::SetCartLine(line), event)
            }
            CartChange::Remove(product_id) => (
                UserCommand::RemoveCartLine(product_id),
                Event::CartLineRemoved {
                    user_id,
                    product_id,
                },
            ),
        }
    }
}

/// The cart line a cart event changes.
fn cart_product(event: &UserEvent) -> Option<ProductId> {
    match event {
        UserEvent::CartLineSet(line) => Some(line.product_id),
        UserEvent::CartLineRemoved(product_id) => Some(*product_id),
        _ => None,
    }
}

impl UserActor {
    pub fn new(user: User, journal: Arc<JournalHandle>, limits: Arc<Limits>) -> UserActor {
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

    /// Holds what `event` takes and submits `record`; on refusal drops the hold.
    fn submit_held(
        &mut self,
        ctx: &mut Context<Self>,
        record: Record,
        op: UserOp,
    ) -> Result<(), crate::engine::error::Error> {
        self.user.hold(&op.event);
        submit(self, ctx, record, op).map_err(|(op, e)| {
            self.user.drop_hold(&op.event);
            e
        })
    }

    /// The cart as it will be once every cart change already submitted
    /// and every placed order heard of are applied, plus `change`. (A cart
    /// change submitted after an order's record but before this user heard
    /// of it is projected before the order, though applied after it: the
    /// answer to that change may then show a line the order took.)
    fn projected_cart(&self, change: &UserEvent, at: Timestamp) -> CartView {
        let mut user = User {
            history: Vec::new(),
            coupons: Vec::new(),
            ..self.user.clone()
        };
        for op in self.queue.iter() {
            if cart_product(&op.event).is_some() {
                user.apply(op.event.clone(), op.at);
            }
        }
        let mut placed: Vec<&Placed> = self.placed.iter().collect();
        placed.sort_unstable_by_key(|p| p.seq);
        for p in placed {
            for &product_id in &p.cart_products {
                user.apply(UserEvent::CartLineRemoved(product_id), p.at);
            }
        }
        user.apply(change.clone(), at);
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
        self.user.drop_hold(&op.event);
        if let Ok(seq) = ack {
            let cart = cart_product(&op.event);
            self.user.apply(op.event, op.at);
            match cart {
                Some(product_id) => self.cart_line_changed(product_id, seq),
                None => self.history_grew(),
            }
        }
        let ok = acked(&ack);
        // A requester that went away needs no answer.
        match op.reply {
            UserReply::Balance(view, reply) => drop(reply.send(ok.map(|()| view))),
            UserReply::Paid(reply) => drop(reply.send(ok)),
            UserReply::Cart(view, reply) => drop(reply.send(ok.map(|()| view))),
            UserReply::Refunded { also, reply } => {
                if ok.is_ok() {
                    for event in also {
                        self.user.apply(event, op.at);
                    }
                }
                drop(reply.send(ok))
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
        let command = UserCommand::Charge { amount: msg.amount };
        let event = match self.user.decide(command, msg.at, &self.limits) {
            Ok(event) => event,
            Err(r) => return ready(Err(r.into())),
        };
        // In journal order every pending credit and debit of this user comes first.
        let balance = self.user.balance.0 + self.user.credits_pending.0
            - self.user.debits_pending.0
            + msg.amount.0;
        let view = BalanceView {
            user_id: self.user.id,
            balance: Krw(balance),
        };
        let journal_event = Event::BalanceCharged {
            user_id: self.user.id,
            amount: msg.amount,
        };
        let record = Self::record(msg.at, journal_event, msg.tag, || {
            Reply::Balance(view.clone())
        });
        let (reply, response) = reply_channel();
        let op = UserOp {
            event,
            at: msg.at,
            reply: UserReply::Balance(view, reply),
        };
        match self.submit_held(ctx, record, op) {
            Ok(()) => response,
            Err(e) => ready(Err(e)),
        }
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
        let command = UserCommand::Pay { order_id, amount };
        let event = match self.user.decide(command, at, &self.limits) {
            Ok(event) => event,
            Err(r) => return ready(Err(r.into())),
        };
        let record = Record {
            at,
            event: Event::OrderPaid {
                order_id,
                user_id: self.user.id,
                amount,
            },
            idempotency: msg.keyed.map(|(tag, paid)| tag.entry(Reply::Order(paid))),
        };
        let (reply, response) = reply_channel();
        let op = UserOp {
            event,
            at,
            reply: UserReply::Paid(reply),
        };
        match self.submit_held(ctx, record, op) {
            Ok(()) => response,
            Err(e) => ready(Err(e)),
        }
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
    /// The refunded lines: their units no longer count toward a purchase limit.
    pub lines: Vec<(ProductId, u64)>,
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
        let event = UserEvent::Refunded {
            order_id: msg.order_id,
            amount: msg.amount,
        };
        let mut also: Vec<UserEvent> = msg
            .coupon
            .map(UserEvent::CouponRestored)
            .into_iter()
            .collect();
        also.push(UserEvent::UnitsReleased(msg.lines));
        let (reply, response) = reply_channel();
        let op = UserOp {
            event,
            at: msg.record.at,
            reply: UserReply::Refunded { also, reply },
        };
        if let Err(e) = self.submit_held(ctx, msg.record, op) {
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
        let (command, journal_event) = msg.change.command(self.user.id);
        let event = match self.user.decide(command, msg.at, &self.limits) {
            Ok(event) => event,
            Err(r) => return ready(Err(r.into())),
        };
        let view = self.projected_cart(&event, msg.at);
        let record = Self::record(msg.at, journal_event, msg.tag, || Reply::Cart(view.clone()));
        let (reply, response) = reply_channel();
        let op = UserOp {
            event,
            at: msg.at,
            reply: UserReply::Cart(view, reply),
        };
        match self.submit_held(ctx, record, op) {
            Ok(()) => response,
            Err(e) => ready(Err(e)),
        }
    }
}

/// Takes what an order being placed needs of its user, all or nothing:
/// the coupon for an order of `total`, and the units of its lines (each
/// checked against its product's limit, if any). Holds until the order is durable or abandoned.
#[derive(Message)]
#[rtype(result = "Result<Option<Offer>>")]
pub struct HoldForOrder {
    pub coupon: Option<UserCouponId>,
    pub total: Krw,
    pub counted: Vec<CountedLine>,
    pub at: Timestamp,
}

impl Handler<HoldForOrder> for UserActor {
    type Result = Result<Option<Offer>>;

    fn handle(&mut self, msg: HoldForOrder, _: &mut Context<Self>) -> Self::Result {
        self.user.decide_hold_units(&msg.counted)?;
        let offer = match msg.coupon {
            Some(id) => Some(self.user.decide_use_coupon(id, msg.total, msg.at)?),
            None => None,
        };
        self.user.hold_units(&msg.counted);
        if let Some(id) = msg.coupon {
            self.user.hold_coupon(id);
        }
        Ok(offer)
    }
}

/// What became of a record of another actor that touched this user.
#[derive(Message)]
#[rtype(result = "()")]
pub enum OrderNews {
    /// The order was placed (its record is `seq`, decided at `at`): the
    /// held coupon is used at once; ordered cart lines leave the cart in
    /// journal order among this user's own records still in flight, as
    /// recovery replays them: a cart change journaled before the order is
    /// applied before it.
    Placed {
        seq: u64,
        at: Timestamp,
        order_id: OrderId,
        coupon: Option<UserCouponId>,
        cart_products: Vec<ProductId>,
        /// Every line's units: held for good.
        units: Vec<(ProductId, u64)>,
        /// Whether the order took a hold of them here ([`HoldForOrder`]),
        /// which goes now; an order with no coupon and no limit took none.
        units_were_held: bool,
    },
    /// Placing failed before anything was durable: the holds are dropped.
    Abandoned {
        coupon: Option<UserCouponId>,
        counted: Vec<(ProductId, u64)>,
    },
    /// A record of another actor is durable, and this is its part for the
    /// user (its coupon issued, its coupon restored and its units freed by
    /// an order ended unpaid), decided at `.1`.
    Durable(UserEvent, Timestamp),
}

impl Handler<OrderNews> for UserActor {
    type Result = ();

    fn handle(&mut self, msg: OrderNews, _: &mut Context<Self>) {
        match msg {
            OrderNews::Placed {
                seq,
                at,
                order_id,
                coupon,
                cart_products,
                units,
                units_were_held,
            } => {
                if let Some(coupon) = coupon {
                    self.user
                        .apply(UserEvent::CouponUsed { coupon, order_id }, at);
                }
                if units_were_held {
                    self.user.drop_units_hold(&units);
                }
                self.user.apply(UserEvent::UnitsHeld(units), at);
                if !cart_products.is_empty() {
                    self.placed.push(Placed {
                        seq,
                        at,
                        cart_products,
                    });
                    if self.queue.is_empty() {
                        self.apply_placed_before(u64::MAX);
                    }
                }
            }
            OrderNews::Abandoned { coupon, counted } => {
                self.user.drop_units_hold(&counted);
                if let Some(c) = coupon {
                    self.user.drop_coupon_hold(c);
                }
            }
            OrderNews::Durable(event, at) => self.user.apply(event, at),
        }
    }
}
