//! "Everything acknowledged is there": what clients saw acknowledged, and
//! the checks that a store holds it.
//!
//! [`Acknowledged`] is what a run's clients were told, whoever ran them
//! (the bench, the cluster tests, the crash test): per user the KRW
//! charged, paid and refunded; per product the stock it was made with and
//! the units placed, returned, paid and refunded; each order by what it
//! must be recovered as ([`Expect`]); each coupon campaign's issues; and
//! how many operations ended with no answer.
//!
//! The rules are written once, here: a user's balance = charges −
//! payments + refunds; a product's stock = stocked − placed + returned +
//! refunded; an order's status is one its acknowledgements allow; a
//! campaign issued at least what was acknowledged and no more than its
//! quantity. With no unknown outcome they are exact (`==`); otherwise an
//! operation may have happened without its answer arriving, so only
//! "every acknowledgement is there" is demanded.
//!
//! Two views apply them: a recovered [`World`](crate::domain::world::World)
//! ([`world`]: also every invariant, units reserved and sold) and what the
//! HTTP API shows ([`api`]: stock, balances, coupons left, order statuses).

pub mod api;
pub mod world;

pub use api::{ApiFindings, ApiView, Unread};

use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::order::OrderStatus;
use std::collections::BTreeMap;
use std::fmt;

/// What clients saw acknowledged; a store must then hold it.
#[derive(Clone, Debug, Default)]
pub struct Acknowledged {
    pub users: BTreeMap<UserId, Wallet>,
    pub products: BTreeMap<ProductId, Units>,
    /// Each order once, with what it must be recovered as. A `Vec`: a long
    /// run acknowledges millions, at 16 bytes each.
    pub orders: Vec<(OrderId, Expect)>,
    pub coupons: BTreeMap<CouponId, Issued>,
    /// Operations whose outcome is unknown (timeouts, a kill, shutdown).
    pub unknown: u64,
}

/// KRW a user was acknowledged charged, paid and refunded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wallet {
    pub charged: u64,
    pub paid: u64,
    pub refunded: u64,
}

/// A product's units as acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Units {
    /// Stock it was made with, and restocked since.
    pub stocked: u64,
    pub placed: u64,
    /// Back in stock from orders that did not sell (a refused payment).
    pub returned: u64,
    /// Paid.
    pub sold: u64,
    pub refunded: u64,
    /// Of refunds whose answer never came: back in stock, or not.
    pub refund_unknown: u64,
}

/// A coupon campaign's size and the issues acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Issued {
    pub quantity: u64,
    pub issued: u64,
}

/// What an order must be recovered as: one of a set of statuses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Expect(u8);

impl Expect {
    /// Paid, and not refunded since.
    pub const PAID: Expect = Expect::of(&[OrderStatus::Paid]);
    /// Paid, then refunded whole.
    pub const REFUNDED: Expect = Expect::of(&[OrderStatus::Refunded]);
    /// Paid, then asked a whole refund whose answer never came.
    pub const PAID_OR_REFUNDED: Expect = Expect::of(&[OrderStatus::Paid, OrderStatus::Refunded]);
    /// Paid, and perhaps refunded since, in part or whole.
    pub const WAS_PAID: Expect = Expect::of(&[
        OrderStatus::Paid,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
    ]);

    pub const fn exactly(status: OrderStatus) -> Expect {
        Expect::of(&[status])
    }

    const fn of(statuses: &[OrderStatus]) -> Expect {
        let mut bits = 0;
        let mut i = 0;
        while i < statuses.len() {
            bits |= 1 << statuses[i] as u8;
            i += 1;
        }
        Expect(bits)
    }

    pub fn allows(self, status: OrderStatus) -> bool {
        self.0 & (1 << status as u8) != 0
    }
}

impl fmt::Debug for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use OrderStatus::*;
        let all = [
            Pending,
            Paid,
            Failed,
            Cancelled,
            Expired,
            PartiallyRefunded,
            Refunded,
        ];
        let names: Vec<String> = all
            .iter()
            .filter(|s| self.allows(**s))
            .map(|s| format!("{s:?}"))
            .collect();
        f.write_str(&names.join(" or "))
    }
}

impl Acknowledged {
    /// Exact checks, unless an outcome is unknown.
    pub fn exact(&self) -> bool {
        self.unknown == 0
    }

    /// A user's acknowledgements, made empty at first: an empty one still
    /// demands the user be there (with a zero balance, when exact).
    pub fn user(&mut self, id: UserId) -> &mut Wallet {
        self.users.entry(id).or_default()
    }

    pub fn product(&mut self, id: ProductId) -> &mut Units {
        self.products.entry(id).or_default()
    }

    pub fn coupon(&mut self, id: CouponId) -> &mut Issued {
        self.coupons.entry(id).or_default()
    }

    pub fn order(&mut self, id: OrderId, expect: Expect) {
        self.orders.push((id, expect));
    }

    /// How many orders must be recovered as `expect`.
    pub fn orders_expected(&self, expect: Expect) -> usize {
        self.orders.iter().filter(|(_, e)| *e == expect).count()
    }
}

impl Wallet {
    /// The balance the acknowledgements say: charges − payments + refunds.
    pub fn balance(&self) -> Option<u64> {
        self.charged
            .checked_add(self.refunded)?
            .checked_sub(self.paid)
    }

    /// The rule of a user's balance: exact when nothing is unknown.
    pub fn check(&self, id: UserId, balance: u64, exact: bool) -> Option<String> {
        (exact && Some(balance) != self.balance()).then(|| {
            format!(
                "user {id}: balance {balance} but charges {} - payments {} + refunds {} acknowledged",
                self.charged, self.paid, self.refunded
            )
        })
    }
}

impl Units {
    /// Units in pending orders: placed, neither returned nor paid.
    pub fn reserved(&self) -> u64 {
        self.placed
            .saturating_sub(self.returned.saturating_add(self.sold))
    }

    /// Units sold and not refunded.
    pub fn kept(&self) -> u64 {
        self.sold.saturating_sub(self.refunded)
    }

    /// The stock the acknowledgements say: stocked − placed + returned + refunded.
    pub fn stock(&self) -> Option<u64> {
        self.stocked
            .checked_add(self.returned)?
            .checked_add(self.refunded)?
            .checked_sub(self.placed)
    }

    /// The rule of a product's stock: exact when nothing is unknown, else
    /// every unit acknowledged taken is gone (an unknown place may have
    /// taken more, an unknown refund given some back).
    pub fn check_stock(&self, id: ProductId, stock: u64, exact: bool) -> Option<String> {
        let expected = self.stock();
        let fine = match expected {
            Some(e) if exact => stock == e,
            Some(e) => stock <= e.saturating_add(self.refund_unknown),
            None => false,
        };
        (!fine).then(|| {
            format!(
                "product {id}: stock {stock}, expected {expected:?}: stocked {}, placed {}, returned {}, refunded {}",
                self.stocked, self.placed, self.returned, self.refunded
            )
        })
    }
}

impl Issued {
    /// The rule of a campaign: as many issued as acknowledged (at least,
    /// when an outcome is unknown), never more than its quantity.
    pub fn check(&self, id: CouponId, issued: Option<u64>, exact: bool) -> Option<String> {
        let fine = issued.is_some_and(|n| {
            n <= self.quantity
                && if exact {
                    n == self.issued
                } else {
                    n >= self.issued
                }
        });
        (!fine).then(|| {
            format!(
                "coupon {id}: {issued:?} issued of {}, {} acknowledged",
                self.quantity, self.issued
            )
        })
    }
}

/// The rule of an order: recovered with a status its acknowledgements allow.
pub fn check_order(id: OrderId, expect: Expect, status: Option<OrderStatus>) -> Option<String> {
    (!status.is_some_and(|s| expect.allows(s)))
        .then(|| format!("order {id}: {expect:?} acknowledged but recovered as {status:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expectation_allows_exactly_its_statuses() {
        // proves the status set: each named expectation takes what it says and nothing else
        use OrderStatus::*;
        assert!(Expect::PAID.allows(Paid) && !Expect::PAID.allows(Refunded));
        assert!(Expect::REFUNDED.allows(Refunded) && !Expect::REFUNDED.allows(Paid));
        let either = Expect::PAID_OR_REFUNDED;
        assert!(either.allows(Paid) && either.allows(Refunded));
        assert!(!either.allows(PartiallyRefunded) && !either.allows(Pending));
        assert!(Expect::WAS_PAID.allows(PartiallyRefunded));
        assert!(!Expect::WAS_PAID.allows(Cancelled));
        assert!(Expect::exactly(Failed).allows(Failed) && !Expect::exactly(Failed).allows(Expired));
        assert_eq!(format!("{either:?}"), "Paid or Refunded");
    }

    #[test]
    fn balance_and_stock_follow_from_the_acknowledgements_or_report_none() {
        // proves the arithmetic of the rules, and that impossible tallies are None, not a wrap
        let w = Wallet {
            charged: 10,
            paid: 12,
            refunded: 5,
        };
        assert_eq!(w.balance(), Some(3));
        assert_eq!(
            Wallet {
                paid: 1,
                ..Wallet::default()
            }
            .balance(),
            None
        );
        let u = Units {
            stocked: 100,
            placed: 10,
            returned: 2,
            sold: 7,
            refunded: 3,
            refund_unknown: 1,
        };
        assert_eq!((u.stock(), u.reserved(), u.kept()), (Some(95), 1, 4));
        assert!(u.check_stock(ProductId(1), 95, true).is_none());
        assert!(u.check_stock(ProductId(1), 96, true).is_some());
        assert!(
            u.check_stock(ProductId(1), 96, false).is_none(),
            "one refund unknown"
        );
        assert!(u.check_stock(ProductId(1), 97, false).is_some());
        let over = Units {
            placed: 1,
            ..Units::default()
        };
        assert!(over.check_stock(ProductId(1), 0, false).is_some());
    }

    #[test]
    fn a_campaign_holds_its_issues_within_its_quantity() {
        // proves the coupon rule: exact or at least as acknowledged, and never past the quantity
        let c = Issued {
            quantity: 3,
            issued: 2,
        };
        assert!(c.check(CouponId(1), Some(2), true).is_none());
        assert!(c.check(CouponId(1), Some(3), true).is_some());
        assert!(c.check(CouponId(1), Some(3), false).is_none());
        assert!(c.check(CouponId(1), Some(1), false).is_some());
        assert!(c.check(CouponId(1), Some(4), false).is_some());
        assert!(c.check(CouponId(1), None, false).is_some());
    }
}
