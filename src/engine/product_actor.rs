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
use crate::domain::product::Product;
use crate::domain::time::Timestamp;
use crate::domain::views::{ProductView, Reply};
use crate::engine::actor::{acked, ready, reply_channel, submit, Journaled, Read};
use crate::engine::commit::CommitQueue;
use crate::engine::error::Result;
use crate::engine::idempotency::Tag;
use crate::store::writer::{Ack, JournalHandle};
use actix::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

pub struct ProductActor {
    product: Product,
    shelf: Arc<Shelf>,
    journal: JournalHandle,
    limits: Arc<Limits>,
    queue: CommitQueue<RestockOp>,
    /// Restocks decided but not yet durable: they count toward the stock limit.
    restocks_pending: u64,
}

pub struct RestockOp {
    quantity: u64,
    view: ProductView,
    reply: oneshot::Sender<Result<ProductView>>,
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
        }
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
}

/// What a product read answers, published by the product's actor.
///
/// Name and price never change after creation (`view` keeps them; its
/// `stock` is replaced on every read); `available` is stored by the actor
/// after each change. `unheard` counts news sent to the actor and
/// not taken yet.
pub struct Shelf {
    view: ProductView,
    available: AtomicU64,
    unheard: AtomicU64,
}

impl Shelf {
    fn new(product: &Product) -> Shelf {
        Shelf {
            view: ProductView::from(product),
            available: AtomicU64::new(product.available()),
            unheard: AtomicU64::new(0),
        }
    }

    /// The product as of now, or `None` while news is on its way to the
    /// actor (the caller then asks the actor, behind the news).
    fn view(&self) -> Option<ProductView> {
        // Acquire pairs with the actor's release of `unheard`: seeing it at
        // zero means seeing what the actor published before taking the news.
        if self.unheard.load(Ordering::Acquire) != 0 {
            return None;
        }
        let mut view = self.view.clone();
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
    type Op = RestockOp;

    fn queue(&mut self) -> &mut CommitQueue<RestockOp> {
        &mut self.queue
    }

    fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    fn finish(&mut self, op: RestockOp, ack: Ack, _: &mut Context<Self>) {
        self.restocks_pending -= op.quantity;
        let ok = acked(&ack);
        if ok.is_ok() {
            self.product.apply_restocked(op.quantity);
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

/// Holds `quantity` for an order being placed; answers the line's name and price.
#[derive(Message)]
#[rtype(result = "Result<(String, Krw)>")]
pub struct Reserve {
    pub quantity: u64,
}

impl Handler<Reserve> for ProductActor {
    type Result = Result<(String, Krw)>;

    fn handle(&mut self, msg: Reserve, _: &mut Context<Self>) -> Self::Result {
        self.product.decide_reserve(msg.quantity)?;
        self.product.hold(msg.quantity);
        self.publish();
        Ok((self.product.name.clone(), self.product.price))
    }
}

/// What became of units held or reserved here, once it is durable. Sent
/// only by [`ProductRef::tell`], which counts it in flight.
#[derive(Clone, Copy, Debug)]
pub enum StockNews {
    /// The order was placed: the hold becomes a reservation.
    Reserved(u64),
    /// Placing failed before anything was durable: the hold is dropped.
    Abandoned(u64),
    /// A pending order ended unpaid: its reservation returns to stock.
    Released(u64),
    /// A pending order was paid (at `.1`): its reservation is sold.
    Sold(u64, Timestamp),
    /// Units of an order paid at `.1` were refunded: back in stock, out of the sales count.
    Refunded(u64, Timestamp),
}

/// News as sent by [`ProductRef::tell`]: private, so none goes uncounted.
#[derive(Message)]
#[rtype(result = "()")]
struct Told(StockNews);

impl Handler<Told> for ProductActor {
    type Result = ();

    fn handle(&mut self, Told(msg): Told, _: &mut Context<Self>) {
        match msg {
            StockNews::Reserved(q) => {
                self.product.drop_hold(q);
                self.product.apply_reserved(q);
            }
            StockNews::Abandoned(q) => self.product.drop_hold(q),
            StockNews::Released(q) => self.product.apply_released(q),
            StockNews::Sold(q, at) => self.product.apply_sold(q, at),
            StockNews::Refunded(q, paid_at) => self.product.apply_refunded(q, paid_at),
        }
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
        if let Err(r) = projected.decide_restock(msg.quantity, &self.limits) {
            return ready(Err(r.into()));
        }
        projected.apply_restocked(msg.quantity);
        let view = ProductView::from(&projected);
        let record = Record {
            at: msg.at,
            event: Event::ProductRestocked {
                product_id: self.product.id,
                quantity: msg.quantity,
            },
            idempotency: msg.tag.map(|t| t.entry(Reply::Product(view.clone()))),
        };
        self.restocks_pending += msg.quantity;
        let (reply, response) = reply_channel();
        if let Err((_, e)) = submit(
            self,
            ctx,
            record,
            RestockOp {
                quantity: msg.quantity,
                view,
                reply,
            },
        ) {
            self.restocks_pending -= msg.quantity;
            return ready(Err(e));
        }
        response
    }
}
