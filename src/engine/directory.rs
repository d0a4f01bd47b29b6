//! Creates users, products and campaigns. One actor, so ids are assigned
//! and journaled in one order (recovery requires them dense and in order);
//! creation is not on the hot path.

use crate::domain::coupon::{Campaign, Discount};
use crate::domain::coupon_terms::CouponTerms;
use crate::domain::event::{Event, Record};
use crate::domain::ids::{CouponId, ProductId, UserId};
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::product::Product;
use crate::domain::time::Timestamp;
use crate::domain::user::User;
use crate::domain::views::{CouponView, ProductView, Reply, UserView};
use crate::engine::actor::{acked, ready, reply_channel, submit, Journaled};
use crate::engine::campaign_actor::CampaignActor;
use crate::engine::commit::CommitQueue;
use crate::engine::error::Result;
use crate::engine::idempotency::Tag;
use crate::engine::product_actor::ProductActor;
use crate::engine::registry::Registry;
use crate::engine::user_actor::UserActor;
use crate::store::writer::{Ack, JournalHandle};
use actix::prelude::*;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::oneshot;

pub struct Directory {
    registry: Arc<Registry>,
    /// Shared with the users' actors it starts ([`UserActor`]).
    journal: Arc<JournalHandle>,
    limits: Arc<Limits>,
    user_coupon_ids: Arc<AtomicU64>,
    queue: CommitQueue<Created>,
    users: u64,
    products: u64,
    campaigns: u64,
}

pub enum Created {
    User(User, oneshot::Sender<Result<UserView>>),
    Product(Product, oneshot::Sender<Result<ProductView>>),
    Campaign(Campaign, oneshot::Sender<Result<CouponView>>),
}

impl Directory {
    pub fn new(
        registry: Arc<Registry>,
        journal: Arc<JournalHandle>,
        limits: Arc<Limits>,
        user_coupon_ids: Arc<AtomicU64>,
    ) -> Directory {
        let (users, products, campaigns) = (
            registry.users.len() as u64,
            registry.products.len() as u64,
            registry.campaigns.len() as u64,
        );
        Directory {
            registry,
            journal,
            limits,
            user_coupon_ids,
            queue: CommitQueue::default(),
            users,
            products,
            campaigns,
        }
    }

    fn record(at: Timestamp, event: Event, tag: Option<Tag>, reply: Reply) -> Record {
        Record {
            at,
            event,
            idempotency: tag.map(|t| t.entry(reply)),
        }
    }
}

impl Actor for Directory {
    type Context = Context<Self>;
}

impl Journaled for Directory {
    type Op = Created;

    fn queue(&mut self) -> &mut CommitQueue<Created> {
        &mut self.queue
    }

    fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    fn finish(&mut self, op: Created, ack: Ack, _: &mut Context<Self>) {
        let ok = acked(&ack);
        let (journal, limits, reg) = (self.journal.clone(), self.limits.clone(), &self.registry);
        match op {
            Created::User(user, reply) => {
                let _ = reply.send(ok.map(|()| {
                    let (id, view) = (user.id.0, UserView::from(&user));
                    let addr = UserActor::start_in_arbiter(reg.arbiter_for(id), move |_| {
                        UserActor::new(user, journal, limits)
                    });
                    reg.users.push(id, addr);
                    view
                }));
            }
            Created::Product(product, reply) => {
                let _ = reply.send(ok.map(|()| {
                    let (id, view) = (product.id.0, ProductView::from(&product));
                    let product = ProductActor::launch(
                        product,
                        reg.arbiter_for(id),
                        (*journal).clone(),
                        limits,
                    );
                    reg.products.push(id, product);
                    view
                }));
            }
            Created::Campaign(campaign, reply) => {
                let ids = self.user_coupon_ids.clone();
                let _ = reply.send(ok.map(|()| {
                    let (id, view) = (campaign.id.0, CouponView::from(&campaign));
                    let addr = CampaignActor::start_in_arbiter(reg.arbiter_for(id), move |_| {
                        CampaignActor::new(campaign, (*journal).clone(), ids)
                    });
                    reg.campaigns.push(id, addr);
                    view
                }));
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<UserView>")]
pub struct CreateUser {
    pub name: String,
    pub at: Timestamp,
    pub tag: Option<Tag>,
}

impl Handler<CreateUser> for Directory {
    type Result = ResponseFuture<Result<UserView>>;

    fn handle(&mut self, msg: CreateUser, ctx: &mut Context<Self>) -> Self::Result {
        let user = User::new(UserId(self.users + 1), msg.name.clone());
        let event = Event::UserRegistered {
            user_id: user.id,
            name: msg.name,
        };
        let record = Self::record(msg.at, event, msg.tag, Reply::User(UserView::from(&user)));
        let (reply, response) = reply_channel();
        match submit(self, ctx, record, Created::User(user, reply)) {
            Ok(()) => {
                self.users += 1;
                response
            }
            Err((_, e)) => ready(Err(e)),
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<ProductView>")]
pub struct CreateProduct {
    pub name: String,
    pub price: Krw,
    pub stock: u64,
    pub max_per_user: Option<u64>,
    pub at: Timestamp,
    pub tag: Option<Tag>,
}

impl Handler<CreateProduct> for Directory {
    type Result = ResponseFuture<Result<ProductView>>;

    fn handle(&mut self, msg: CreateProduct, ctx: &mut Context<Self>) -> Self::Result {
        let product = Product::new(
            ProductId(self.products + 1),
            msg.name.clone(),
            msg.price,
            msg.stock,
        )
        .with_limit(msg.max_per_user);
        let event = match msg.max_per_user {
            None => Event::ProductCreated {
                product_id: product.id,
                name: msg.name,
                price: msg.price,
                stock: msg.stock,
            },
            Some(max_per_user) => Event::ProductCreatedWithLimit {
                product_id: product.id,
                name: msg.name,
                price: msg.price,
                stock: msg.stock,
                max_per_user,
            },
        };
        let record = Self::record(
            msg.at,
            event,
            msg.tag,
            Reply::ProductV3(ProductView::from(&product)),
        );
        let (reply, response) = reply_channel();
        match submit(self, ctx, record, Created::Product(product, reply)) {
            Ok(()) => {
                self.products += 1;
                response
            }
            Err((_, e)) => ready(Err(e)),
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<CouponView>")]
pub struct CreateCampaign {
    pub name: String,
    pub discount: Discount,
    pub quantity: u64,
    pub expires_at: Option<Timestamp>,
    pub terms: CouponTerms,
    pub at: Timestamp,
    pub tag: Option<Tag>,
}

impl Handler<CreateCampaign> for Directory {
    type Result = ResponseFuture<Result<CouponView>>;

    fn handle(&mut self, msg: CreateCampaign, ctx: &mut Context<Self>) -> Self::Result {
        let id = CouponId(self.campaigns + 1);
        let campaign = Campaign::new(
            id,
            msg.name.clone(),
            msg.discount,
            msg.quantity,
            msg.expires_at,
        )
        .with_terms(msg.terms);
        // Without terms, the record is the one written before they existed.
        let event = if msg.terms == CouponTerms::default() {
            Event::CampaignCreated {
                coupon_id: id,
                name: msg.name,
                discount: msg.discount,
                quantity: msg.quantity,
                expires_at: msg.expires_at,
            }
        } else {
            Event::CampaignCreatedWithTerms {
                coupon_id: id,
                name: msg.name,
                discount: msg.discount,
                quantity: msg.quantity,
                expires_at: msg.expires_at,
                terms: Box::new(msg.terms),
            }
        };
        let record = Self::record(
            msg.at,
            event,
            msg.tag,
            Reply::CouponV3(Box::new(CouponView::from(&campaign))),
        );
        let (reply, response) = reply_channel();
        match submit(self, ctx, record, Created::Campaign(campaign, reply)) {
            Ok(()) => {
                self.campaigns += 1;
                response
            }
            Err((_, e)) => ready(Err(e)),
        }
    }
}
