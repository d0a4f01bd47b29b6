//! One actor per product: stock, reservations, sales.
//!
//! The actor owns the product and is the only writer of its [`Shelf`]: after
//! every change it publishes what a read answers (what can still be ordered),
//! so reads need no message. News from the coordinator goes through
//! [`ProductRef::tell`], which counts it in flight until the actor has taken
//! it; while any is in flight a read goes to the mailbox, behind the news.
//! So a read that starts after an answer sees every change that answer made,
//! as it did when every read was a message.

use crate::domain::event::{Event, Record};
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::product::{Product, ProductCommand, ProductEvent, ProductPatch};
use crate::domain::purchase_limit::CountedLine;
use crate::domain::time::Timestamp;
use crate::domain::views::{ProductView, Reply};
use crate::engine::actor::{acked, ready, reply_channel, submit, Journaled, Read};
use crate::engine::commit::CommitQueue;
use crate::engine::error::{Error, Result};
use crate::engine::idempotency::Tag;
use crate::store::writer::{Ack, JournalHandle};
use actix::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;

pub struct ProductActor {
    product: Product,
    shelf: Arc<Shelf>,
    journal: JournalHandle,
    limits: Arc<Limits>,
    queue: CommitQueue<ProductOp>,
    /// Restocks decided but not yet durable: they count toward the stock limit.
    restocks_pending: u64,
    /// Reservations that wait for the ones answered before the product had
    /// a limit to settle (see [`ProductActor::settle_before_limit`]).
    waiting: Vec<(Reserve, oneshot::Sender<Result<Reserved>>)>,
    settling: bool,
}

/// A change of the product waiting to be durable, and its answer.
pub struct ProductOp {
    change: ProductChange,
    at: Timestamp,
    view: ProductView,
    reply: oneshot::Sender<Result<ProductView>>,
}

enum ProductChange {
    Restock(u64),
    Update(ProductPatch),
}

impl ProductChange {
    fn apply(&self, product: &mut Product, at: Timestamp) {
        match self {
            ProductChange::Restock(q) => product.apply(ProductEvent::Restocked(*q), at),
            ProductChange::Update(patch) => product.apply_updated(patch),
        }
    }
}

impl ProductActor {
    fn new(
        product: Product,
        shelf: Arc<Shelf>,
        journal: JournalHandle,
        limits: Arc<Limits>,
    ) -> ProductActor {
        ProductActor {
            product,
            shelf,
            journal,
            limits,
            queue: CommitQueue::default(),
            restocks_pending: 0,
            waiting: Vec::new(),
            settling: false,
        }
    }

    /// A limit just appeared on a product with reservations in flight.
    /// Those were answered unlimited, so their orders took no hold on
    /// their users, who count the units only once they hear the orders
    /// placed. Until every one of them is placed or abandoned, reservations
    /// wait: an order answered after that holds its units on a user who
    /// has already heard (its news is sent before the product's), so the
    /// limit counts every unit. In flight means held and not yet durable:
    /// a commit's time, as no new hold is taken meanwhile.
    fn settle_before_limit(&mut self, had_limit: bool) {
        if !had_limit && self.product.max_per_user.is_some() && self.product.held > 0 {
            self.settling = true;
        }
    }

    /// Answers the waiting reservations once nothing answered unlimited is in flight.
    fn end_settling(&mut self) {
        if !self.settling || self.product.held > 0 {
            return;
        }
        self.settling = false;
        for (msg, reply) in std::mem::take(&mut self.waiting) {
            let _ = reply.send(self.reserve(&msg));
        }
    }

    fn reserve(&mut self, msg: &Reserve) -> Result<Reserved> {
        let command = ProductCommand::Reserve(msg.quantity);
        self.product.decide(command, msg.at, &self.limits)?;
        self.product.hold(msg.quantity);
        self.publish();
        Ok(Reserved {
            name: self.product.name.clone(),
            price: self.product.price,
            counted: self.product.counted_line(msg.quantity),
        })
    }

    /// Starts the actor of `product` on `arbiter`; the returned reference
    /// reads its shelf and sends it messages.
    pub fn launch(
        product: Product,
        arbiter: &ArbiterHandle,
        journal: JournalHandle,
        limits: Arc<Limits>,
    ) -> ProductRef {
        let shelf = Arc::new(Shelf::new(&product));
        let mine = shelf.clone();
        let addr = ProductActor::start_in_arbiter(arbiter, move |_| {
            ProductActor::new(product, mine, journal, limits)
        });
        ProductRef { addr, shelf }
    }

    /// Makes the product's state as it is now what reads answer.
    fn publish(&self) {
        self.shelf
            .available
            .store(self.product.available(), Ordering::Release);
    }

    /// The product as it will be once every change already submitted is
    /// durable (in journal order, as recovery applies them).
    fn projected(&self) -> Product {
        let mut projected = self.product.clone();
        for op in self.queue.iter() {
            op.change.apply(&mut projected, op.at);
        }
        projected
    }

    fn submit_change(
        &mut self,
        ctx: &mut Context<Self>,
        change: ProductChange,
        event: Event,
        at: Timestamp,
        tag: Option<Tag>,
    ) -> ResponseFuture<Result<ProductView>> {
        let mut projected = self.projected();
        change.apply(&mut projected, at);
        let view = ProductView::from(&projected);
        let record = Record {
            at,
            event,
            idempotency: tag.map(|t| t.entry(Reply::ProductV3(view.clone()))),
        };
        let restock = match change {
            ProductChange::Restock(q) => q,
            ProductChange::Update(_) => 0,
        };
        self.restocks_pending += restock;
        let (reply, response) = reply_channel();
        let op = ProductOp {
            change,
            at,
            view,
            reply,
        };
        if let Err((_, e)) = submit(self, ctx, record, op) {
            self.restocks_pending -= restock;
            return ready(Err(e));
        }
        response
    }
}

/// What a product read answers, published by the product's actor.
///
/// Name, price and limit change only by an update (`view` keeps them,
/// replaced by the actor once an update is durable; its `stock` is
/// replaced on every read); `available` is stored by the actor after each
/// change. `unheard` counts news sent to the actor and not taken yet.
pub struct Shelf {
    view: RwLock<ProductView>,
    available: AtomicU64,
    unheard: AtomicU64,
}

impl Shelf {
    fn new(product: &Product) -> Shelf {
        Shelf {
            view: RwLock::new(ProductView::from(product)),
            available: AtomicU64::new(product.available()),
            unheard: AtomicU64::new(0),
        }
    }

    /// The name, price and limit as published (whatever news is in flight:
    /// news never changes them).
    pub fn identity(&self) -> ProductView {
        // A writer holds the lock only to replace the value: a poisoned
        // lock still holds a whole view.
        self.view
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_identity(&self, product: &Product) {
        let mut view = self
            .view
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *view = ProductView::from(product);
    }

    /// The product as of now, or `None` while news is on its way to the
    /// actor (the caller then asks the actor, behind the news).
    fn view(&self) -> Option<ProductView> {
        // Acquire pairs with the actor's release of `unheard`: seeing it at
        // zero means seeing what the actor published before taking the news.
        if self.unheard.load(Ordering::Acquire) != 0 {
            return None;
        }
        let mut view = self.identity();
        view.stock = self.available.load(Ordering::Acquire);
        Some(view)
    }
}

/// How the rest of the engine reaches a product: its actor and its shelf.
#[derive(Clone)]
pub struct ProductRef {
    pub addr: Addr<ProductActor>,
    shelf: Arc<Shelf>,
}

impl ProductRef {
    /// The product as published, or `None` while news is in flight to the
    /// actor.
    pub fn published(&self) -> Option<ProductView> {
        self.shelf.view()
    }

    /// The product as of now: from the shelf, or from the actor while news
    /// is in flight to it.
    pub async fn view(&self) -> std::result::Result<ProductView, MailboxError> {
        match self.published() {
            Some(view) => Ok(view),
            None => {
                self.addr
                    .send(Read::new(|p: &Product| ProductView::from(p)))
                    .await
            }
        }
    }

    /// The name, price and limit as published.
    pub fn identity(&self) -> ProductView {
        self.shelf.identity()
    }

    /// Sends news to the actor, counted in flight until it is taken.
    pub fn tell(&self, news: StockNews) {
        self.shelf.unheard.fetch_add(1, Ordering::AcqRel);
        self.addr.do_send(Told(news));
    }
}

impl Actor for ProductActor {
    type Context = Context<Self>;
}

impl Journaled for ProductActor {
    type Op = ProductOp;

    fn queue(&mut self) -> &mut CommitQueue<ProductOp> {
        &mut self.queue
    }

    fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    fn finish(&mut self, op: ProductOp, ack: Ack, _: &mut Context<Self>) {
        if let ProductChange::Restock(q) = op.change {
            self.restocks_pending -= q;
        }
        let ok = acked(&ack);
        if ok.is_ok() {
            let had_limit = self.product.max_per_user.is_some();
            op.change.apply(&mut self.product, op.at);
            if let ProductChange::Update(_) = op.change {
                self.shelf.set_identity(&self.product);
                self.settle_before_limit(had_limit);
            }
            self.publish();
        }
        let _ = op.reply.send(ok.map(|()| op.view));
    }
}

impl<R: 'static> Handler<Read<Product, R>> for ProductActor {
    type Result = MessageResult<Read<Product, R>>;

    fn handle(&mut self, msg: Read<Product, R>, _: &mut Context<Self>) -> Self::Result {
        MessageResult((msg.0)(&self.product))
    }
}

/// Holds `quantity` for an order being placed; answers the line's name
/// and price now, and how the line counts per user.
#[derive(Message)]
#[rtype(result = "Result<Reserved>")]
pub struct Reserve {
    pub quantity: u64,
    pub at: Timestamp,
}

/// What a product answers an order reserving it.
pub struct Reserved {
    pub name: String,
    pub price: Krw,
    /// The line as it counts per user, with the limit now.
    pub counted: CountedLine,
}

impl Handler<Reserve> for ProductActor {
    type Result = Response<Result<Reserved>>;

    fn handle(&mut self, msg: Reserve, _: &mut Context<Self>) -> Self::Result {
        if !self.settling {
            return Response::reply(self.reserve(&msg));
        }
        let (reply, answer) = oneshot::channel();
        self.waiting.push((msg, reply));
        Response::fut(async move { answer.await.unwrap_or(Err(Error::ShuttingDown)) })
    }
}

/// What became of units held or reserved here. Sent only by
/// [`ProductRef::tell`], which counts it in flight.
#[derive(Clone, Copy, Debug)]
pub enum StockNews {
    /// A record that touches this product is durable: the hold it took,
    /// if any, is dropped and the event applied (`Reserved` when an order
    /// was placed, `Released` when it ended unpaid, `Sold` when paid).
    Durable(ProductEvent, Timestamp),
    /// Placing failed before anything was durable: the hold is dropped.
    Abandoned(u64),
}

/// News as sent by [`ProductRef::tell`]: private, so none goes uncounted.
#[derive(Message)]
#[rtype(result = "()")]
struct Told(StockNews);

impl Handler<Told> for ProductActor {
    type Result = ();

    fn handle(&mut self, Told(msg): Told, _: &mut Context<Self>) {
        match msg {
            StockNews::Durable(event, at) => {
                if let ProductEvent::Reserved(q) = event {
                    self.product.drop_hold(q);
                }
                self.product.apply(event, at);
            }
            StockNews::Abandoned(q) => self.product.drop_hold(q),
        }
        self.end_settling();
        self.publish();
        // Release: whoever sees the news taken sees what was published.
        self.shelf.unheard.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Message)]
#[rtype(result = "Result<ProductView>")]
pub struct Restock {
    pub quantity: u64,
    pub at: Timestamp,
    pub tag: Option<Tag>,
}

impl Handler<Restock> for ProductActor {
    type Result = ResponseFuture<Result<ProductView>>;

    fn handle(&mut self, msg: Restock, ctx: &mut Context<Self>) -> Self::Result {
        let mut projected = self.product.clone();
        projected.stock += self.restocks_pending;
        let command = ProductCommand::Restock(msg.quantity);
        if let Err(r) = projected.decide(command, msg.at, &self.limits) {
            return ready(Err(r.into()));
        }
        let event = Event::ProductRestocked {
            product_id: self.product.id,
            quantity: msg.quantity,
        };
        let change = ProductChange::Restock(msg.quantity);
        self.submit_change(ctx, change, event, msg.at, msg.tag)
    }
}

/// Changes the name, price or limit (checked by [`ProductPatch::validate`]).
/// A price change applies to orders that reserve after it is durable.
#[derive(Message)]
#[rtype(result = "Result<ProductView>")]
pub struct Update {
    pub patch: ProductPatch,
    pub at: Timestamp,
    pub tag: Option<Tag>,
}

impl Handler<Update> for ProductActor {
    type Result = ResponseFuture<Result<ProductView>>;

    fn handle(&mut self, msg: Update, ctx: &mut Context<Self>) -> Self::Result {
        let event = Event::ProductUpdated {
            product_id: self.product.id,
            patch: Box::new(msg.patch.clone()),
        };
        let change = ProductChange::Update(msg.patch);
        self.submit_change(ctx, change, event, msg.at, msg.tag)
    }
}
