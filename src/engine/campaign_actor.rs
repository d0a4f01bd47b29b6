//! One actor per coupon campaign: who got a coupon, how many are left.

use crate::domain::coupon::{Campaign, CampaignCommand, CampaignEvent};
use crate::domain::event::{Event, Record};
use crate::domain::ids::{UserCouponId, UserId};
use crate::domain::time::Timestamp;
use crate::domain::user::{UserCoupon, UserEvent};
use crate::domain::views::{Reply, UserCouponView};
use crate::engine::actor::{acked, ready, reply_channel, submit, Journaled, Read};
use crate::engine::commit::CommitQueue;
use crate::engine::error::Result;
use crate::engine::idempotency::Tag;
use crate::engine::user_actor::{OrderNews, UserActor};
use crate::store::writer::{Ack, JournalHandle};
use actix::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

pub struct CampaignActor {
    campaign: Campaign,
    journal: JournalHandle,
    queue: CommitQueue<IssueOp>,
    /// Global user-coupon id counter, shared by every campaign.
    user_coupon_ids: Arc<AtomicU64>,
}

pub struct IssueOp {
    event: CampaignEvent,
    at: Timestamp,
    user: Addr<UserActor>,
    coupon: UserCoupon,
    view: UserCouponView,
    reply: oneshot::Sender<Result<UserCouponView>>,
}

impl CampaignActor {
    pub fn new(
        campaign: Campaign,
        journal: JournalHandle,
        user_coupon_ids: Arc<AtomicU64>,
    ) -> CampaignActor {
        CampaignActor {
            campaign,
            journal,
            queue: CommitQueue::default(),
            user_coupon_ids,
        }
    }
}

impl Actor for CampaignActor {
    type Context = Context<Self>;
}

impl Journaled for CampaignActor {
    type Op = IssueOp;

    fn queue(&mut self) -> &mut CommitQueue<IssueOp> {
        &mut self.queue
    }

    fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    fn finish(&mut self, op: IssueOp, ack: Ack, _: &mut Context<Self>) {
        let ok = acked(&ack);
        let CampaignEvent::Issued(user_id) = op.event;
        self.campaign.drop_hold(user_id);
        if ok.is_ok() {
            self.campaign.apply(op.event, op.at);
            // Sent before the reply: a read of the user's coupons after it sees the coupon.
            let issued = UserEvent::CouponIssued(Box::new(op.coupon));
            op.user.do_send(OrderNews::Durable(issued, op.at));
        }
        let _ = op.reply.send(ok.map(|()| op.view));
    }
}

impl<R: 'static> Handler<Read<Campaign, R>> for CampaignActor {
    type Result = MessageResult<Read<Campaign, R>>;

    fn handle(&mut self, msg: Read<Campaign, R>, _: &mut Context<Self>) -> Self::Result {
        MessageResult((msg.0)(&self.campaign))
    }
}

/// Issues one coupon to a user, first come first served.
#[derive(Message)]
#[rtype(result = "Result<UserCouponView>")]
pub struct Issue {
    pub user_id: UserId,
    pub user: Addr<UserActor>,
    pub at: Timestamp,
    pub tag: Option<Tag>,
}

impl Handler<Issue> for CampaignActor {
    type Result = ResponseFuture<Result<UserCouponView>>;

    fn handle(&mut self, msg: Issue, ctx: &mut Context<Self>) -> Self::Result {
        let event = match self
            .campaign
            .decide(CampaignCommand::Issue(msg.user_id), msg.at)
        {
            Ok(event) => event,
            Err(r) => return ready(Err(r.into())),
        };
        let id = UserCouponId(self.user_coupon_ids.fetch_add(1, Ordering::Relaxed) + 1);
        let c = &self.campaign;
        let coupon = c.coupon(id);
        let view = UserCouponView::new(msg.user_id, &coupon, msg.at);
        let record = Record {
            at: msg.at,
            event: Event::CouponIssued {
                coupon_id: c.id,
                user_id: msg.user_id,
                user_coupon_id: id,
            },
            idempotency: msg
                .tag
                .map(|t| t.entry(Reply::UserCouponV3(Box::new(view.clone())))),
        };
        self.campaign.hold(msg.user_id);
        let (reply, response) = reply_channel();
        let op = IssueOp {
            event,
            at: msg.at,
            user: msg.user,
            coupon,
            view,
            reply,
        };
        if let Err((_, e)) = submit(self, ctx, record, op) {
            self.campaign.drop_hold(msg.user_id);
            return ready(Err(e));
        }
        response
    }
}
