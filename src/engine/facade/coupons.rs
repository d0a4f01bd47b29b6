//! [`Engine`]: coupon campaigns and the coupons issued to users.

use super::{check_name, Engine, NewCoupon, PageRequest};
use crate::domain::coupon::Campaign;
use crate::domain::ids::{CouponId, UserId};
use crate::domain::views::{CouponView, Page, UserCouponView};
use crate::engine::actor::Read;
use crate::engine::campaign_actor::Issue;
use crate::engine::directory::CreateCampaign;
use crate::engine::error::{Error, Result};
use crate::engine::idempotency::IdempotencyKey;
use crate::engine::keyed_request::KeyedRequest;

impl Engine {
    pub async fn create_coupon(
        &self,
        new: NewCoupon,
        key: Option<IdempotencyKey>,
    ) -> Result<CouponView> {
        let limits = &self.inner.limits;
        let name = check_name("name", &new.name, limits)?;
        let discount = new.discount.validate(limits)?;
        let terms = new.terms.validate(discount, new.expires_at, limits)?;
        if new.quantity == 0 || new.quantity > limits.coupon_quantity_max {
            return Err(Error::invalid(format!(
                "quantity must be between 1 and {}",
                limits.coupon_quantity_max
            )));
        }
        let request = KeyedRequest::CreateCoupon {
            name: &name,
            discount: &discount,
            quantity: new.quantity,
            expires_at: new.expires_at,
            terms,
        };
        self.keyed(request.under(key), move |engine, tag| async move {
            let msg = CreateCampaign {
                name,
                discount,
                quantity: new.quantity,
                expires_at: new.expires_at,
                terms,
                at: engine.now(),
                tag,
            };
            engine.inner.directory.send(msg).await?
        })
        .await
    }

    pub async fn coupon(&self, id: CouponId) -> Result<CouponView> {
        Ok(self
            .campaign_addr(id)?
            .send(Read::new(|c: &Campaign| CouponView::from(c)))
            .await?)
    }

    pub async fn issue_coupon(
        &self,
        coupon_id: CouponId,
        user_id: UserId,
        key: Option<IdempotencyKey>,
    ) -> Result<UserCouponView> {
        let campaign = self.campaign_addr(coupon_id)?;
        let user = self.user_addr(user_id)?;
        let request = KeyedRequest::IssueCoupon {
            coupon: coupon_id,
            user: user_id,
        };
        self.keyed(request.under(key), move |engine, tag| async move {
            campaign
                .send(Issue {
                    user_id,
                    user,
                    at: engine.now(),
                    tag,
                })
                .await?
        })
        .await
    }

    /// A user's coupons by id; the cursor is the last id of the page.
    pub async fn user_coupons(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<Page<UserCouponView>> {
        let now = self.now();
        self.read_user(user_id, move |u| {
            let mut coupons: Vec<&crate::domain::user::UserCoupon> = u
                .coupons
                .iter()
                .filter(|c| page.after.is_none_or(|a| c.id.0 > a))
                .collect();
            coupons.sort_unstable_by_key(|c| c.id);
            let more = coupons.len() > page.limit;
            let items: Vec<UserCouponView> = coupons
                .into_iter()
                .take(page.limit)
                .map(|c| UserCouponView::new(u.id, c, now))
                .collect();
            let next = if more {
                items.last().map(|c| c.id.to_string())
            } else {
                None
            };
            Page { items, next }
        })
        .await
    }
}
