//! Coupon windows: when a campaign starts issuing, the smallest order its
//! coupons pay toward, and a cap on a percent discount.
//!
//! A campaign keeps its terms; each coupon issued carries a copy (its
//! holder decides whether it pays toward an order, and a campaign's terms
//! never change once created), as it carries the discount.

use crate::domain::coupon::Discount;
use crate::domain::ids::CouponId;
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::rejection::{Decision, Rejection};
use crate::domain::time::Timestamp;
use serde::{Deserialize, Serialize};

/// The optional terms of a campaign beyond its discount and expiry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CouponTerms {
    /// No coupon is issued before it.
    pub starts_at: Option<Timestamp>,
    /// An order whose total is below it cannot use the coupon.
    pub min_order_amount: Option<Krw>,
    /// A percent discount takes at most this much off.
    pub max_discount: Option<Krw>,
}

/// What a coupon takes off an order, as its holder answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    pub discount: Discount,
    pub max_discount: Option<Krw>,
}

impl Offer {
    /// The amount taken off `total`: the discount's, capped at `max_discount`.
    pub fn amount_off(self, total: Krw) -> Krw {
        let off = self.discount.amount_off(total);
        self.max_discount.map_or(off, |cap| off.min(cap))
    }
}

impl CouponTerms {
    /// Checks the terms a client gave with `discount` and `expires_at`.
    pub fn validate(
        self,
        discount: Discount,
        expires_at: Option<Timestamp>,
        limits: &Limits,
    ) -> Decision<CouponTerms> {
        if let (Some(start), Some(end)) = (self.starts_at, expires_at) {
            if start >= end {
                return Err(Rejection::InvalidRequest(
                    "starts_at must be before expires_at".into(),
                ));
            }
        }
        if let Some(min) = self.min_order_amount {
            if min.0 == 0 || min > limits.min_order_krw_max {
                return Err(Rejection::InvalidRequest(format!(
                    "min_order_amount must be between 1 and {}",
                    limits.min_order_krw_max.0
                )));
            }
        }
        if let Some(cap) = self.max_discount {
            if !matches!(discount, Discount::Percent { .. }) {
                return Err(Rejection::InvalidRequest(
                    "max_discount applies to percent discounts only".into(),
                ));
            }
            if cap.0 == 0 || cap > limits.discount_fixed_krw_max {
                return Err(Rejection::InvalidRequest(format!(
                    "max_discount must be between 1 and {}",
                    limits.discount_fixed_krw_max.0
                )));
            }
        }
        Ok(self)
    }

    /// Refuses an issue before `starts_at`.
    pub fn decide_started(self, coupon_id: CouponId, now: Timestamp) -> Decision<()> {
        match self.starts_at {
            Some(start) if now < start => Err(Rejection::CouponNotStarted(coupon_id)),
            _ => Ok(()),
        }
    }

    /// What the coupon takes off an order of `total`, or why it cannot pay toward it.
    pub fn decide_offer(self, discount: Discount, total: Krw) -> Decision<Offer> {
        if let Some(min) = self.min_order_amount {
            if total < min {
                return Err(Rejection::InvalidCoupon(format!(
                    "the order total {} is below the coupon's minimum {}",
                    total.0, min.0
                )));
            }
        }
        Ok(Offer {
            discount,
            max_discount: self.max_discount,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERCENT: Discount = Discount::Percent { percent: 20 };
    const FIXED: Discount = Discount::Fixed { amount: Krw(500) };

    #[test]
    fn max_discount_caps_a_percent_discount_and_nothing_below_the_cap() {
        // proves the cap: 20% of 10,000 is 2,000, capped at 1,500; 20% of 5,000 stays 1,000
        let offer = Offer {
            discount: PERCENT,
            max_discount: Some(Krw(1_500)),
        };
        assert_eq!(offer.amount_off(Krw(10_000)), Krw(1_500));
        assert_eq!(offer.amount_off(Krw(5_000)), Krw(1_000));
        let uncapped = Offer {
            max_discount: None,
            ..offer
        };
        assert_eq!(uncapped.amount_off(Krw(10_000)), Krw(2_000));
    }

    #[test]
    fn an_order_below_the_minimum_cannot_use_the_coupon() {
        // proves min_order_amount: 9,999 is refused as INVALID_COUPON, 10,000 is accepted
        let terms = CouponTerms {
            min_order_amount: Some(Krw(10_000)),
            ..CouponTerms::default()
        };
        assert!(matches!(
            terms.decide_offer(FIXED, Krw(9_999)),
            Err(Rejection::InvalidCoupon(_))
        ));
        assert!(terms.decide_offer(FIXED, Krw(10_000)).is_ok());
    }

    #[test]
    fn issue_is_refused_before_the_start_instant_only() {
        // proves starts_at: one ms before is COUPON_NOT_STARTED, the instant itself issues
        let terms = CouponTerms {
            starts_at: Some(Timestamp(1_000)),
            ..CouponTerms::default()
        };
        assert_eq!(
            terms.decide_started(CouponId(4), Timestamp(999)),
            Err(Rejection::CouponNotStarted(CouponId(4)))
        );
        assert_eq!(terms.decide_started(CouponId(4), Timestamp(1_000)), Ok(()));
        assert_eq!(
            CouponTerms::default().decide_started(CouponId(4), Timestamp(0)),
            Ok(())
        );
    }

    #[test]
    fn terms_are_validated_against_the_discount_the_expiry_and_the_limits() {
        // proves each 400: a start not before the expiry, a zero or too large minimum, a cap on a fixed discount or out of range
        let l = Limits::API;
        let with = |starts_at, min_order_amount, max_discount| CouponTerms {
            starts_at,
            min_order_amount,
            max_discount,
        };
        let ok = with(Some(Timestamp(5)), Some(Krw(1)), Some(Krw(1)));
        assert_eq!(ok.validate(PERCENT, Some(Timestamp(6)), &l), Ok(ok));
        let bad = [
            (with(Some(Timestamp(6)), None, None), PERCENT, "starts_at"),
            (with(None, Some(Krw(0)), None), PERCENT, "min_order_amount"),
            (
                with(None, Some(Krw(l.min_order_krw_max.0 + 1)), None),
                PERCENT,
                "min_order_amount",
            ),
            (with(None, None, Some(Krw(100))), FIXED, "max_discount"),
            (with(None, None, Some(Krw(0))), PERCENT, "max_discount"),
            (
                with(None, None, Some(Krw(l.discount_fixed_krw_max.0 + 1))),
                PERCENT,
                "max_discount",
            ),
        ];
        for (terms, discount, field) in bad {
            match terms.validate(discount, Some(Timestamp(6)), &l) {
                Err(Rejection::InvalidRequest(m)) => assert!(m.starts_with(field), "{m}"),
                other => panic!("{terms:?}: {other:?}"),
            }
        }
    }
}
