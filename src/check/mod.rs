//! "Everything acknowledged is there": [`Acknowledged`] is what clients
//! were told (by the bench, the cluster tests, the crash test, the
//! simulation), and the rules a store must then meet, each written once:
//! a user's balance = charges − payments + refunds; a product's stock =
//! stocked − placed + returned + refunded; an order's status is one its
//! acknowledgements allow ([`Expect`]); a campaign issued what was
//! acknowledged and no more than its quantity. With no unknown outcome
//! they are exact; otherwise an operation may have happened without its
//! answer arriving, so only "every acknowledgement is there" is demanded.
//! Two views apply them: a recovered world ([`world`]: with every
//! invariant, units reserved and sold) and the HTTP API ([`api`]).

pub mod api;
pub mod world;

pub use api::{ApiFindings, ApiView, Unread};

use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::order::OrderStatus;
use std::collections::BTreeMap;

/// What clients saw acknowledged; a store must then hold it.
#[derive(Clone, Debug, Default)]
pub struct Acknowledged {
    pub users: BTreeMap<UserId, Wallet>,
    pub products: BTreeMap<ProductId, Units>,
    /// Each order once, with what it must be recovered as. A `Vec`: a long
    /// run acknowledges millions, at 24 bytes each.
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

/// What an order must be recovered as: one of these statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect(pub &'static [OrderStatus]);

impl Expect {
    /// Paid, and not refunded since.
    pub const PAID: Expect = Expect(&[OrderStatus::Paid]);
    /// Paid, then refunded whole.
    pub const REFUNDED: Expect = Expect(&[OrderStatus::Refunded]);
    /// Paid, then asked a whole refund whose answer never came.
    pub const PAID_OR_REFUNDED: Expect = Expect(&[OrderStatus::Paid, OrderStatus::Refunded]);
    /// Paid, and perhaps refunded since, in part or whole.
    pub const WAS_PAID: Expect = Expect(&[
        OrderStatus::Paid,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
    ]);

    /// Exactly `status`.
    pub fn only(status: OrderStatus) -> Expect {
        // `ALL` holds each status at its discriminant (proven by its test).
        static EVERY: [OrderStatus; OrderStatus::ALL.len()] = OrderStatus::ALL;
        Expect(std::slice::from_ref(&EVERY[status as usize]))
    }

    pub fn allows(self, status: OrderStatus) -> bool {
        self.0.contains(&status)
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
    (!status.is_some_and(|s| expect.allows(s))).then(|| {
        format!(
            "order {id}: {:?} acknowledged but recovered as {status:?}",
            expect.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allows_its_one_status() {
        // proves Expect::only maps each status to itself and nothing else
        for s in OrderStatus::ALL {
            for t in OrderStatus::ALL {
                assert_eq!(Expect::only(s).allows(t), s == t, "{s:?} / {t:?}");
            }
        }
    }

    #[test]
    fn stock_is_exact_or_at_most_what_unknown_refunds_gave_back() {
        // proves the stock rule's two modes, and that an impossible tally is a violation, not a wrap
        let u = Units {
            stocked: 100,
            placed: 10,
            returned: 2,
            sold: 7,
            refunded: 3,
            refund_unknown: 1,
        };
        assert_eq!((u.stock(), u.reserved(), u.kept()), (Some(95), 1, 4));
        let check = |stock, exact| u.check_stock(ProductId(1), stock, exact).is_none();
        assert!(check(95, true) && !check(96, true));
        assert!(check(96, false) && !check(97, false), "one refund unknown");
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
        let check = |issued, exact| c.check(CouponId(1), issued, exact).is_none();
        assert!(check(Some(2), true) && !check(Some(3), true));
        assert!(check(Some(3), false) && !check(Some(1), false));
        assert!(!check(Some(4), false) && !check(None, false));
    }
}
