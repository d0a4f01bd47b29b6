//! One actor per product: stock, reservations, sales.

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
use std::sync::Arc;
use tokio::sync::oneshot;

pub struct ProductActor {
    product: Product,
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
    pub fn new(product: Product, journal: JournalHandle, limits: Arc<Limits>) -> ProductActor {
        ProductActor {
            product,
            journal,
            limits,
            queue: CommitQueue::default(),
            restocks_pending: 0,
        }
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
        Ok((self.product.name.clone(), self.product.price))
    }
}

/// What became of units held or reserved here, once it is durable.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub enum StockNews {
    /// The order was placed: the hold becomes a reservation.
    Reserved(u64),
    /// Placing failed before anything was durable: the hold is dropped.
    Abandoned(u64),
    /// A pending order ended unpaid: its reservation returns to stock.
    Released(u64),
    /// A pending order was paid: its reservation is sold.
    Sold(u64),
}

impl Handler<StockNews> for ProductActor {
    type Result = ();

    fn handle(&mut self, msg: StockNews, _: &mut Context<Self>) {
        match msg {
            StockNews::Reserved(q) => {
                self.product.drop_hold(q);
                self.product.apply_reserved(q);
            }
            StockNews::Abandoned(q) => self.product.drop_hold(q),
            StockNews::Released(q) => self.product.apply_released(q),
            StockNews::Sold(q) => self.product.apply_sold(q),
        }
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
