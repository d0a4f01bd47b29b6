//! Coupon campaigns (first come, first served) and their discounts.

use crate::domain::coupon_terms::CouponTerms;
use crate::domain::id_bitmap::IdBitmap;
use crate::domain::ids::{CouponId, IdSet, UserCouponId, UserId};
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::rejection::{Decision, Rejection};
use crate::domain::time::Timestamp;
use crate::domain::user::{CouponUse, UserCoupon};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a coupon takes off an order.
///
/// JSON: `{"kind":"fixed","amount":N}` or `{"kind":"percent","percent":N}`.
/// bincode (which cannot read internally tagged enums) gets a plain enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discount {
    Fixed { amount: Krw },
    Percent { percent: u8 },
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum DiscountJson {
    Fixed { amount: u64 },
    Percent { percent: u8 },
}

#[derive(Serialize, Deserialize)]
enum DiscountBin {
    Fixed(u64),
    Percent(u8),
}

impl Serialize for Discount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (*self, s.is_human_readable()) {
            (Discount::Fixed { amount }, true) => {
                DiscountJson::Fixed { amount: amount.0 }.serialize(s)
            }
            (Discount::Percent { percent }, true) => DiscountJson::Percent { percent }.serialize(s),
            (Discount::Fixed { amount }, false) => DiscountBin::Fixed(amount.0).serialize(s),
            (Discount::Percent { percent }, false) => DiscountBin::Percent(percent).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Discount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_map(DiscountVisitor)
        } else {
            Ok(match DiscountBin::deserialize(d)? {
                DiscountBin::Fixed(amount) => Discount::Fixed {
                    amount: Krw(amount),
                },
                DiscountBin::Percent(percent) => Discount::Percent { percent },
            })
        }
    }
}

/// The JSON form read field by field, in any order, each value read where
/// it stands (a derived internally tagged enum buffers the whole object
/// first, so an error in `amount` could only name `discount`): a wrong
/// value is reported at its own path, `discount.amount`.
struct DiscountVisitor;

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum DiscountField {
    Kind,
    Amount,
    Percent,
    /// Unknown fields are ignored, as before.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum DiscountKind {
    Fixed,
    Percent,
}

impl<'de> serde::de::Visitor<'de> for DiscountVisitor {
    type Value = Discount;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#"{"kind":"fixed","amount":N} or {"kind":"percent","percent":N}"#)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Discount, A::Error> {
        use serde::de::Error;
        let (mut kind, mut amount, mut percent) = (None, None, None);
        while let Some(key) = map.next_key::<DiscountField>()? {
            match key {
                DiscountField::Kind => kind = Some(map.next_value::<DiscountKind>()?),
                DiscountField::Amount => amount = Some(map.next_value::<u64>()?),
                DiscountField::Percent => percent = Some(map.next_value::<u8>()?),
                DiscountField::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        match kind {
            None => Err(A::Error::missing_field("kind")),
            Some(DiscountKind::Fixed) => Ok(Discount::Fixed {
                amount: Krw(amount.ok_or_else(|| A::Error::missing_field("amount"))?),
            }),
            Some(DiscountKind::Percent) => Ok(Discount::Percent {
                percent: percent.ok_or_else(|| A::Error::missing_field("percent"))?,
            }),
        }
    }
}

impl Discount {
    /// Checks the limits of a discount given by a client.
    pub fn validate(self, limits: &Limits) -> Decision<Discount> {
        match self {
            Discount::Fixed { amount }
                if amount.0 >= 1 && amount <= limits.discount_fixed_krw_max =>
            {
                Ok(self)
            }
            Discount::Percent { percent }
                if (1..=limits.discount_percent_max).contains(&percent) =>
            {
                Ok(self)
            }
            Discount::Fixed { .. } => Err(Rejection::InvalidRequest(format!(
                "discount.amount must be between 1 and {}",
                limits.discount_fixed_krw_max.0
            ))),
            Discount::Percent { .. } => Err(Rejection::InvalidRequest(format!(
                "discount.percent must be between 1 and {}",
                limits.discount_percent_max
            ))),
        }
    }

    /// The amount taken off `total`: percent rounds down, never above the total.
    pub fn amount_off(self, total: Krw) -> Krw {
        match self {
            Discount::Fixed { amount } => amount.min(total),
            Discount::Percent { percent } => total.percent_floor(percent.min(100)),
        }
    }
}

/// A campaign: a limited number of coupons, at most one per user.
///
/// Stored as its header ([`CampaignHeader`]) plus the chunks of `issued`,
/// each an entry of its own: no stored value grows with the coupons issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Campaign {
    pub id: CouponId,
    pub name: String,
    pub discount: Discount,
    pub quantity: u64,
    pub expires_at: Option<Timestamp>,
    /// Start, minimum order and discount cap ([`CouponTerms`]).
    pub terms: CouponTerms,
    /// Users whose coupon is durable.
    pub issued: IdBitmap,
    /// Users whose coupon is decided but not yet durable (a hold).
    pub pending: IdSet<UserId>,
}

/// A campaign without its issued set, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignHeader {
    pub id: CouponId,
    pub name: String,
    pub discount: Discount,
    pub quantity: u64,
    pub expires_at: Option<Timestamp>,
    /// Coupons issued: the members of every stored chunk, checked at load.
    pub issued_count: u64,
    /// Since format version 3.
    pub terms: CouponTerms,
}

impl CampaignHeader {
    /// The campaign, with no coupon issued yet (its chunks are loaded after).
    pub fn into_campaign(self) -> Campaign {
        Campaign::new(
            self.id,
            self.name,
            self.discount,
            self.quantity,
            self.expires_at,
        )
        .with_terms(self.terms)
    }
}

impl Campaign {
    pub fn new(
        id: CouponId,
        name: String,
        discount: Discount,
        quantity: u64,
        expires_at: Option<Timestamp>,
    ) -> Campaign {
        Campaign {
            id,
            name,
            discount,
            quantity,
            expires_at,
            terms: CouponTerms::default(),
            issued: IdBitmap::new(),
            pending: IdSet::default(),
        }
    }

    /// The campaign with `terms` (checked by [`CouponTerms::validate`]).
    pub fn with_terms(mut self, terms: CouponTerms) -> Campaign {
        self.terms = terms;
        self
    }

    pub fn header(&self) -> CampaignHeader {
        CampaignHeader {
            id: self.id,
            name: self.name.clone(),
            discount: self.discount,
            quantity: self.quantity,
            expires_at: self.expires_at,
            issued_count: self.issued.len(),
            terms: self.terms,
        }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Coupons left to issue, counting holds as issued.
    pub fn remaining(&self) -> u64 {
        self.quantity
            .saturating_sub(self.issued.len() + self.pending.len() as u64)
    }

    /// Rules of issuing: started, not expired, one per user, never more than
    /// `quantity` (holds counted as issued). Changes nothing.
    pub fn decide(&self, command: CampaignCommand, now: Timestamp) -> Decision<CampaignEvent> {
        let CampaignCommand::Issue(user_id) = command;
        self.terms.decide_started(self.id, now)?;
        if self.is_expired(now) {
            return Err(Rejection::CouponExpired(self.id));
        }
        if self.issued.contains(user_id.0) || self.pending.contains(&user_id) {
            return Err(Rejection::CouponAlreadyIssued(self.id));
        }
        if self.remaining() == 0 {
            return Err(Rejection::CouponSoldOut(self.id));
        }
        Ok(CampaignEvent::Issued(user_id))
    }

    pub fn hold(&mut self, user_id: UserId) {
        self.pending.insert(user_id);
        assert!(
            self.issued.len() + self.pending.len() as u64 <= self.quantity,
            "coupon {}: held beyond its quantity",
            self.id
        );
    }

    pub fn drop_hold(&mut self, user_id: UserId) {
        self.pending.remove(&user_id);
    }

    /// Applies a durable event.
    pub fn apply(&mut self, event: CampaignEvent, _at: Timestamp) {
        match event {
            CampaignEvent::Issued(user_id) => {
                let (new, _) = self.issued.insert(user_id.0);
                assert!(new, "coupon {}: issued twice to user {user_id}", self.id);
            }
        }
        assert!(
            self.issued.len() <= self.quantity,
            "coupon {}: issued beyond its quantity",
            self.id
        );
    }

    /// The coupon `id` of this campaign, as its holder keeps it: what
    /// `CouponIssued` hands the user.
    pub fn coupon(&self, id: UserCouponId) -> UserCoupon {
        UserCoupon {
            id,
            coupon_id: self.id,
            name: self.name.clone(),
            discount: self.discount,
            expires_at: self.expires_at,
            state: CouponUse::Available,
            terms: self.terms,
        }
    }
}

/// What is asked of a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CampaignCommand {
    /// One coupon for this user.
    Issue(UserId),
}

/// What a durable record does to a campaign (creating it aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CampaignEvent {
    /// `CouponIssued`: this user's coupon is durable.
    Issued(UserId),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(quantity: u64) -> Campaign {
        let discount = Discount::Fixed { amount: Krw(1000) };
        Campaign::new(
            CouponId(1),
            "c".into(),
            discount,
            quantity,
            Some(Timestamp(1000)),
        )
    }

    #[test]
    fn discount_json_reads_either_kind_in_any_field_order_and_round_trips() {
        // proves the hand-written JSON reader: both kinds, kind last, unknown fields ignored, missing ones refused, same JSON out
        let read = |s: &str| serde_json::from_str::<Discount>(s);
        assert_eq!(
            read(r#"{"kind":"fixed","amount":100}"#).ok(),
            Some(Discount::Fixed { amount: Krw(100) })
        );
        assert_eq!(
            read(r#"{"percent":7,"note":[1],"kind":"percent"}"#).ok(),
            Some(Discount::Percent { percent: 7 })
        );
        for bad in [
            r#"{"kind":"fixed"}"#,
            r#"{"amount":5}"#,
            r#"{"kind":"half","amount":5}"#,
            r#"{"kind":"percent","percent":300}"#,
            r#"[1]"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        for d in [
            Discount::Fixed { amount: Krw(9) },
            Discount::Percent { percent: 10 },
        ] {
            let text = serde_json::to_string(&d).expect("serializes");
            assert_eq!(read(&text).ok(), Some(d), "{text}");
        }
    }

    #[test]
    fn issue_is_refused_once_quantity_is_reached_counting_holds() {
        // given a campaign of 2 with one issued and one held
        let mut c = campaign(2);
        c.apply(CampaignEvent::Issued(UserId(1)), Timestamp(0));
        c.hold(UserId(2));
        // when a third user asks, then it is sold out
        assert_eq!(
            c.decide(CampaignCommand::Issue(UserId(3)), Timestamp(0)),
            Err(Rejection::CouponSoldOut(CouponId(1)))
        );
        // and when the hold is dropped, then it can be issued again
        c.drop_hold(UserId(2));
        assert_eq!(
            c.decide(CampaignCommand::Issue(UserId(3)), Timestamp(0)),
            Ok(CampaignEvent::Issued(UserId(3)))
        );
    }

    #[test]
    fn one_coupon_per_user_per_campaign() {
        let mut c = campaign(10);
        c.hold(UserId(1));
        assert_eq!(
            c.decide(CampaignCommand::Issue(UserId(1)), Timestamp(0)),
            Err(Rejection::CouponAlreadyIssued(CouponId(1)))
        );
        c.drop_hold(UserId(1));
        c.apply(CampaignEvent::Issued(UserId(1)), Timestamp(0));
        assert_eq!(
            c.decide(CampaignCommand::Issue(UserId(1)), Timestamp(0)),
            Err(Rejection::CouponAlreadyIssued(CouponId(1)))
        );
    }

    #[test]
    fn issue_is_refused_from_the_expiry_instant_on() {
        let c = campaign(10);
        assert_eq!(
            c.decide(CampaignCommand::Issue(UserId(1)), Timestamp(999)),
            Ok(CampaignEvent::Issued(UserId(1)))
        );
        assert_eq!(
            c.decide(CampaignCommand::Issue(UserId(1)), Timestamp(1000)),
            Err(Rejection::CouponExpired(CouponId(1)))
        );
    }

    #[test]
    fn percent_discount_rounds_down_and_fixed_is_capped_at_the_total() {
        assert_eq!(
            Discount::Percent { percent: 15 }.amount_off(Krw(999)),
            Krw(149)
        );
        assert_eq!(
            Discount::Fixed { amount: Krw(5000) }.amount_off(Krw(3000)),
            Krw(3000)
        );
        assert_eq!(
            Discount::Percent { percent: 100 }.amount_off(Krw(3000)),
            Krw(3000)
        );
    }

    #[test]
    fn discount_limits_are_validated() {
        let l = Limits::API;
        assert!(Discount::Fixed { amount: Krw(0) }.validate(&l).is_err());
        assert!(Discount::Fixed {
            amount: Krw(100_000_000)
        }
        .validate(&l)
        .is_ok());
        assert!(Discount::Fixed {
            amount: Krw(100_000_001)
        }
        .validate(&l)
        .is_err());
        assert!(Discount::Percent { percent: 0 }.validate(&l).is_err());
        assert!(Discount::Percent { percent: 100 }.validate(&l).is_ok());
        assert!(Discount::Percent { percent: 101 }.validate(&l).is_err());
    }

    #[test]
    fn discount_json_is_internally_tagged() {
        let d = Discount::Percent { percent: 10 };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"kind":"percent","percent":10}"#
        );
        let back: Discount = serde_json::from_str(r#"{"kind":"fixed","amount":5}"#).unwrap();
        assert_eq!(back, Discount::Fixed { amount: Krw(5) });
    }
}
