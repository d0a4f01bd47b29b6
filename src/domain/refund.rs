//! Refunds of paid orders, whole or line by line, in several steps.
//!
//! Who can be refunded: a paid or partially refunded order. What: the
//! units named (each line at most what is left of it), or with no `items`
//! everything left. How much: the refunded lines' share of `pay_amount`,
//! rounded down; the refund that leaves no unit returns exactly what is
//! left of `pay_amount`, so an order refunded whole returns exactly what
//! it paid, and the refunds of an order never add up to more.
//!
//! An order holds at most [`Limits::REFUNDS_PER_ORDER_MAX`] refunds (its stored
//! value stays bounded): the last of them must take everything left.

use crate::domain::ids::{OrderId, ProductId};
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::rejection::{Decision, Rejection};
use crate::domain::time::Timestamp;
use serde::{Deserialize, Serialize};

const REFUNDS_PER_ORDER_MAX: usize = Limits::REFUNDS_PER_ORDER_MAX;
const REASON_CHARS_MAX: usize = Limits::REFUND_REASON_CHARS_MAX;

/// Units of one product refunded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RefundLine {
    pub product_id: ProductId,
    pub quantity: u64,
}

/// One refund of an order, as the order keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refund {
    pub items: Vec<RefundLine>,
    /// KRW credited to the user's balance.
    pub amount: Krw,
    /// Always present; null when none was given.
    #[schema(required = true)]
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// An order's refunds, oldest first, and what they returned in all.
///
/// Kept out of line: most orders are never refunded, and every order in
/// memory (the order book, the durable world, each record and answer that
/// carries one) holds one pointer for them instead of a sum and a vector.
/// That keeps an order as small as it was before refunds (128 bytes, not
/// 152), which each copy of an order and each node of the order book pays.
/// It serializes as the two fields it stands for (see [`Order`]'s serde).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refunds(Option<Box<RefundLog>>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct RefundLog {
    amount: Krw,
    list: Vec<Refund>,
}

impl Refunds {
    /// An order with no refund.
    pub const NONE: Refunds = Refunds(None);

    /// As stored: the refunded sum and the refunds, both kept as they are.
    pub fn from_parts(amount: Krw, list: Vec<Refund>) -> Refunds {
        if amount == Krw::ZERO && list.is_empty() {
            return Refunds::NONE;
        }
        Refunds(Some(Box::new(RefundLog { amount, list })))
    }

    /// KRW returned by the refunds so far.
    pub fn amount(&self) -> Krw {
        self.0.as_ref().map_or(Krw::ZERO, |log| log.amount)
    }

    /// Adds a refund and its amount; `None` (nothing changed) if the sum
    /// would overflow.
    fn push(&mut self, refund: Refund) -> Option<()> {
        let amount = self.amount().checked_add(refund.amount)?;
        let log = self.0.get_or_insert_with(|| {
            Box::new(RefundLog {
                amount: Krw::ZERO,
                list: Vec::new(),
            })
        });
        log.amount = amount;
        log.list.push(refund);
        Some(())
    }
}

impl<'a> IntoIterator for &'a Refunds {
    type Item = &'a Refund;
    type IntoIter = std::slice::Iter<'a, Refund>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::ops::Deref for Refunds {
    type Target = [Refund];

    fn deref(&self) -> &[Refund] {
        self.0.as_ref().map_or(&[], |log| &log.list)
    }
}

/// What an operator asks: some units (`items`) or, without them, all that is left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefundRequest {
    pub items: Option<Vec<RefundLine>>,
    pub reason: Option<String>,
}

/// Shape rules of a refund request (400 `INVALID_REQUEST`, naming the
/// field): 1..=`order_lines_max` lines, each product once, quantities
/// 1..=`line_quantity_max`, a reason of at most [`Limits::REFUND_REASON_CHARS_MAX`] characters.
pub fn validate_request(req: &RefundRequest, limits: &Limits) -> Decision<()> {
    if let Some(reason) = &req.reason {
        if reason.chars().count() > REASON_CHARS_MAX {
            return Err(Rejection::InvalidRequest(format!(
                "reason must be at most {REASON_CHARS_MAX} characters"
            )));
        }
    }
    let Some(items) = &req.items else {
        return Ok(());
    };
    if items.is_empty() || items.len() > limits.order_lines_max {
        return Err(Rejection::InvalidRequest(format!(
            "items must hold between 1 and {} lines (leave it out to refund everything left)",
            limits.order_lines_max
        )));
    }
    for (i, line) in items.iter().enumerate() {
        if line.quantity == 0 || line.quantity > limits.line_quantity_max {
            return Err(Rejection::InvalidRequest(format!(
                "items[{i}].quantity must be between 1 and {}",
                limits.line_quantity_max
            )));
        }
        if items[..i].iter().any(|l| l.product_id == line.product_id) {
            return Err(Rejection::InvalidRequest(format!(
                "items[{i}].product_id {} appears more than once",
                line.product_id
            )));
        }
    }
    Ok(())
}

fn exceeds(order: OrderId, why: String) -> Rejection {
    Rejection::RefundExceedsOrder {
        order_id: order,
        why,
    }
}

impl Order {
    /// Whether a refund may be asked of the order at all.
    pub fn is_refundable(&self) -> bool {
        matches!(
            self.status,
            OrderStatus::Paid | OrderStatus::PartiallyRefunded
        )
    }

    /// Units of `product` refunded so far.
    pub fn refunded_units(&self, product: ProductId) -> u64 {
        self.refunds
            .iter()
            .flat_map(|r| &r.items)
            .filter(|l| l.product_id == product)
            .map(|l| l.quantity)
            .sum()
    }

    /// Units of each line not refunded yet (lines with none left included, as 0).
    pub fn units_left(&self) -> Vec<RefundLine> {
        self.items
            .iter()
            .map(|l| RefundLine {
                product_id: l.product_id,
                quantity: l.quantity.saturating_sub(self.refunded_units(l.product_id)),
            })
            .collect()
    }

    /// Decides a refund (the request's shape already validated): which
    /// units, and how much of `pay_amount` they return.
    pub fn decide_refund(&self, req: &RefundRequest, at: Timestamp) -> Decision<Refund> {
        if !self.is_refundable() {
            return Err(Rejection::OrderNotRefundable(self.id));
        }
        let left = self.units_left();
        let items: Vec<RefundLine> = match &req.items {
            None => left.iter().copied().filter(|l| l.quantity > 0).collect(),
            Some(asked) => {
                for (i, line) in asked.iter().enumerate() {
                    let Some(l) = left.iter().find(|l| l.product_id == line.product_id) else {
                        return Err(exceeds(
                            self.id,
                            format!("items[{i}]: product {} is not in it", line.product_id),
                        ));
                    };
                    if line.quantity > l.quantity {
                        return Err(exceeds(
                            self.id,
                            format!(
                                "items[{i}]: {} of product {} asked, {} left",
                                line.quantity, line.product_id, l.quantity
                            ),
                        ));
                    }
                }
                asked.clone()
            }
        };
        let refunded: u64 = items.iter().map(|l| l.quantity).sum();
        let units_left: u64 = left.iter().map(|l| l.quantity).sum();
        let is_last = refunded == units_left;
        if !is_last && self.refunds.len() + 1 >= REFUNDS_PER_ORDER_MAX {
            return Err(exceeds(
                self.id,
                format!(
                    "an order holds at most {REFUNDS_PER_ORDER_MAX} refunds: the last takes everything left"
                ),
            ));
        }
        let amount = if is_last {
            self.pay_amount
                .checked_sub(self.refunded_amount())
                .ok_or_else(|| exceeds(self.id, "it has refunded more than it paid".into()))?
        } else {
            self.share_of(&items)
                .ok_or_else(|| exceeds(self.id, "its amounts do not add up".into()))?
        };
        Ok(Refund {
            items,
            amount,
            reason: req.reason.clone(),
            at,
        })
    }

    /// `lines`' share of `pay_amount`, rounded down: pay × their value ÷ total.
    fn share_of(&self, lines: &[RefundLine]) -> Option<Krw> {
        let mut value: u128 = 0;
        for line in lines {
            let unit = self
                .items
                .iter()
                .find(|l| l.product_id == line.product_id)?
                .unit_price;
            value =
                value.checked_add(u128::from(unit.0).checked_mul(u128::from(line.quantity))?)?;
        }
        let total = u128::from(self.total_amount.0);
        if total == 0 {
            return Some(Krw::ZERO);
        }
        let share = u128::from(self.pay_amount.0).checked_mul(value)? / total;
        u64::try_from(share).ok().map(Krw)
    }

    /// Applies a decided refund: it joins the order's refunds, its amount
    /// the refunded sum; the order is `refunded` once no unit is left.
    pub fn apply_refund(&mut self, refund: Refund) {
        self.refunds
            .push(refund)
            .expect("refunds never add up to more than was paid");
        let any_left = self.units_left().iter().any(|l| l.quantity > 0);
        self.status = if any_left {
            OrderStatus::PartiallyRefunded
        } else {
            OrderStatus::Refunded
        };
    }

    /// The order as it was after its first `count` refunds (the paid order for 0).
    pub fn after_refunds(&self, count: usize) -> Order {
        let mut order = Order {
            status: OrderStatus::Paid,
            refunds: Refunds::NONE,
            ..self.clone()
        };
        for refund in self.refunds.iter().take(count) {
            order.apply_refund(refund.clone());
        }
        order
    }

    /// Units the order still counts as sold, per product.
    pub fn units_kept(&self) -> impl Iterator<Item = (ProductId, u64)> + '_ {
        let paid = matches!(
            self.status,
            OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
        );
        self.items.iter().filter(move |_| paid).map(|l| {
            (
                l.product_id,
                l.quantity.saturating_sub(self.refunded_units(l.product_id)),
            )
        })
    }

    /// Whether the order holds its coupon as used: a pending or paid one,
    /// and a refunded one until it is refunded whole.
    pub fn holds_coupon(&self) -> bool {
        self.user_coupon_id.is_some()
            && matches!(
                self.status,
                OrderStatus::Pending | OrderStatus::Paid | OrderStatus::PartiallyRefunded
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::UserId;
    use crate::domain::order::OrderLine;
    use proptest::prelude::*;

    #[test]
    fn refunds_keep_their_sum_and_refuse_one_that_would_overflow_it() {
        // given two refunds kept, when a third would overflow the sum, then it is refused and nothing changes
        let refund = |amount| Refund {
            items: Vec::new(),
            amount: Krw(amount),
            reason: None,
            at: Timestamp(0),
        };
        let mut refunds = Refunds::NONE;
        assert_eq!((refunds.amount(), refunds.len()), (Krw::ZERO, 0));
        refunds.push(refund(300)).unwrap();
        refunds.push(refund(200)).unwrap();
        assert_eq!(refunds.push(refund(u64::MAX)), None);
        assert_eq!((refunds.amount(), refunds.len()), (Krw(500), 2));
        let amounts: Vec<Krw> = (&refunds).into_iter().map(|r| r.amount).collect();
        assert_eq!(amounts, [Krw(300), Krw(200)]);
        assert_eq!(Refunds::from_parts(Krw::ZERO, Vec::new()), Refunds::NONE);
    }

    fn order(lines: &[(u64, u64, u64)], pay: u64) -> Order {
        let items: Vec<OrderLine> = lines
            .iter()
            .map(|&(p, price, q)| OrderLine {
                product_id: ProductId(p),
                name: format!("p{p}"),
                unit_price: Krw(price),
                quantity: q,
            })
            .collect();
        let total = items.iter().map(|l| l.unit_price.0 * l.quantity).sum();
        Order {
            status: OrderStatus::Paid,
            items,
            total_amount: Krw(total),
            discount_amount: Krw(total - pay),
            pay_amount: Krw(pay),
            ..crate::domain::order::sample_paid_order(1)
        }
    }

    fn some(lines: &[(u64, u64)]) -> RefundRequest {
        RefundRequest {
            items: Some(
                lines
                    .iter()
                    .map(|&(p, q)| RefundLine {
                        product_id: ProductId(p),
                        quantity: q,
                    })
                    .collect(),
            ),
            reason: None,
        }
    }

    #[test]
    fn only_a_paid_or_partially_refunded_order_can_be_refunded() {
        // given each status, then only paid and partially refunded accept a refund
        for status in [
            OrderStatus::Pending,
            OrderStatus::Failed,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
            OrderStatus::Refunded,
        ] {
            let o = Order {
                status,
                ..order(&[(1, 100, 2)], 200)
            };
            assert_eq!(
                o.decide_refund(&RefundRequest::default(), Timestamp(5)),
                Err(Rejection::OrderNotRefundable(o.id))
            );
        }
        let mut o = order(&[(1, 100, 2)], 200);
        o.apply_refund(o.decide_refund(&some(&[(1, 1)]), Timestamp(5)).unwrap());
        assert_eq!(o.status, OrderStatus::PartiallyRefunded);
        assert!(o.decide_refund(&some(&[(1, 1)]), Timestamp(6)).is_ok());
    }

    #[test]
    fn no_items_refunds_everything_left_and_returns_what_is_left_of_the_payment() {
        // given 3 of 5 units refunded, when the rest is refunded with no items, then it returns pay - refunded
        let mut o = order(&[(1, 333, 3), (2, 1000, 2)], 2_500);
        let first = o.decide_refund(&some(&[(1, 3)]), Timestamp(5)).unwrap();
        assert_eq!(first.amount, Krw(2_500 * 999 / 2_999));
        o.apply_refund(first);
        let rest = o
            .decide_refund(&RefundRequest::default(), Timestamp(6))
            .unwrap();
        assert_eq!(
            rest.items,
            vec![RefundLine {
                product_id: ProductId(2),
                quantity: 2
            }]
        );
        assert_eq!(rest.amount, Krw(2_500 - 2_500 * 999 / 2_999));
        o.apply_refund(rest);
        assert_eq!(o.status, OrderStatus::Refunded);
        assert_eq!(o.refunded_amount(), o.pay_amount);
    }

    #[test]
    fn a_refund_of_a_product_not_in_the_order_or_more_than_is_left_exceeds_it() {
        // given 2 units of product 1, then 3 of it, or any of product 9, exceed the order
        let mut o = order(&[(1, 100, 2)], 200);
        let exceeds = |r: Decision<Refund>| matches!(r, Err(Rejection::RefundExceedsOrder { .. }));
        assert!(exceeds(o.decide_refund(&some(&[(1, 3)]), Timestamp(1))));
        assert!(exceeds(o.decide_refund(&some(&[(9, 1)]), Timestamp(1))));
        o.apply_refund(o.decide_refund(&some(&[(1, 1)]), Timestamp(1)).unwrap());
        assert!(exceeds(o.decide_refund(&some(&[(1, 2)]), Timestamp(1))));
        assert!(o.decide_refund(&some(&[(1, 1)]), Timestamp(1)).is_ok());
    }

    #[test]
    fn malformed_requests_name_the_field() {
        // given zero, too many, duplicate units or a long reason, then 400 naming the field
        let l = Limits::API;
        let msg = |r: &RefundRequest| match validate_request(r, &l) {
            Err(Rejection::InvalidRequest(m)) => m,
            other => panic!("expected INVALID_REQUEST, got {other:?}"),
        };
        assert!(msg(&some(&[(1, 0)])).starts_with("items[0].quantity"));
        assert!(msg(&some(&[(1, 1), (2, 1001)])).starts_with("items[1].quantity"));
        assert!(msg(&some(&[(1, 1), (1, 2)])).starts_with("items[1].product_id"));
        assert!(msg(&some(&[])).starts_with("items"));
        let long = RefundRequest {
            items: None,
            reason: Some("é".repeat(201)),
        };
        assert!(msg(&long).starts_with("reason"));
        let ok = RefundRequest {
            items: None,
            reason: Some("é".repeat(200)),
        };
        assert_eq!(validate_request(&ok, &l), Ok(()));
    }

    #[test]
    fn a_partial_refund_is_the_lines_share_of_the_payment_rounded_down() {
        // given 3 units at 1000 paid 2001 after a discount, when 1 is refunded, then 667 (2001/3)
        let o = order(&[(1, 1000, 3)], 2_001);
        let r = o.decide_refund(&some(&[(1, 1)]), Timestamp(1)).unwrap();
        assert_eq!(r.amount, Krw(667));
        let o = order(&[(1, 1000, 3)], 2_000);
        let r = o.decide_refund(&some(&[(1, 1)]), Timestamp(1)).unwrap();
        assert_eq!(r.amount, Krw(666), "2000/3 rounds down");
    }

    #[test]
    fn the_last_of_the_refunds_an_order_may_hold_must_take_everything_left() {
        // given 19 refunds of one unit each, when a 20th leaves a unit, then it exceeds; whole, it is accepted
        let mut o = order(&[(1, 10, 30)], 300);
        for _ in 0..REFUNDS_PER_ORDER_MAX - 1 {
            o.apply_refund(o.decide_refund(&some(&[(1, 1)]), Timestamp(1)).unwrap());
        }
        assert!(matches!(
            o.decide_refund(&some(&[(1, 1)]), Timestamp(1)),
            Err(Rejection::RefundExceedsOrder { .. })
        ));
        let last = o.decide_refund(&some(&[(1, 11)]), Timestamp(1)).unwrap();
        o.apply_refund(last);
        assert_eq!(o.status, OrderStatus::Refunded);
        assert_eq!(o.refunded_amount(), Krw(300));
    }

    #[test]
    fn an_order_after_some_of_its_refunds_is_replayed_from_the_paid_order() {
        // given two refunds applied, then after_refunds(0/1/2) gives the paid, the partial and the whole order
        let mut o = order(&[(1, 100, 2)], 200);
        let paid = o.clone();
        o.apply_refund(o.decide_refund(&some(&[(1, 1)]), Timestamp(1)).unwrap());
        let partial = o.clone();
        o.apply_refund(
            o.decide_refund(&RefundRequest::default(), Timestamp(2))
                .unwrap(),
        );
        assert_eq!(o.after_refunds(0), paid);
        assert_eq!(o.after_refunds(1), partial);
        assert_eq!(o.after_refunds(2), o);
        assert_eq!(o.units_kept().collect::<Vec<_>>(), vec![(ProductId(1), 0)]);
        assert_eq!(
            partial.units_kept().collect::<Vec<_>>(),
            vec![(ProductId(1), 1)]
        );
    }

    #[test]
    fn a_wholly_refunded_order_no_longer_holds_its_coupon() {
        // given an order with a coupon, then it holds it while paid or partly refunded, not once refunded
        let mut o = Order {
            user_coupon_id: Some(crate::domain::ids::UserCouponId(4)),
            user_id: UserId(3),
            ..order(&[(1, 100, 2)], 150)
        };
        assert!(o.holds_coupon());
        o.apply_refund(o.decide_refund(&some(&[(1, 1)]), Timestamp(1)).unwrap());
        assert!(o.holds_coupon());
        o.apply_refund(
            o.decide_refund(&RefundRequest::default(), Timestamp(1))
                .unwrap(),
        );
        assert!(!o.holds_coupon());
    }

    proptest! {
        /// Over any sequence of partial refunds the sum never exceeds what
        /// was paid, and equals it exactly once every unit is refunded.
        #[test]
        fn refunds_never_add_up_to_more_than_paid_and_exactly_to_it_when_whole(
            lines in proptest::collection::vec((1u64..=100_000_000, 1u64..=1_000), 1..=5),
            discount_per_mille in 0u64..=1_000,
            steps in proptest::collection::vec((0usize..5, 1u64..=1_000), 0..40),
        ) {
            let spec: Vec<(u64, u64, u64)> = lines
                .iter()
                .enumerate()
                .map(|(i, &(price, q))| (i as u64 + 1, price, q))
                .collect();
            let total: u64 = spec.iter().map(|&(_, p, q)| p * q).sum();
            let pay = total - (u128::from(total) * u128::from(discount_per_mille) / 1_000) as u64;
            let mut o = order(&spec, pay);
            for (line, quantity) in steps {
                let left = o.units_left();
                let Some(l) = left.get(line % left.len()) else { continue };
                let req = some(&[(l.product_id.0, quantity.min(l.quantity.max(1)))]);
                if let Ok(r) = o.decide_refund(&req, Timestamp(1)) {
                    o.apply_refund(r);
                }
                prop_assert!(o.refunded_amount() <= o.pay_amount);
            }
            if o.is_refundable() {
                let rest = o.decide_refund(&RefundRequest::default(), Timestamp(2)).unwrap();
                o.apply_refund(rest);
            }
            prop_assert_eq!(o.status, OrderStatus::Refunded);
            prop_assert_eq!(o.refunded_amount(), o.pay_amount);
            let sum: u64 = o.refunds.iter().map(|r| r.amount.0).sum();
            prop_assert_eq!(sum, pay);
        }
    }
}
