//! Products and their stock.
//!
//! `stock` is what can be ordered; `reserved` is held by pending orders;
//! `sold` is paid. Invariant: `stock + reserved + sold == stocked_total`.
//! `held` counts reservations decided but not yet durable: they are not yet
//! moved out of `stock`, but nobody else may take them.

use crate::domain::ids::ProductId;
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::purchase_limit::CountedLine;
use crate::domain::rejection::{Decision, Rejection};
use crate::domain::stats::WINDOW_DAYS;
use crate::domain::time::Timestamp;
use serde::{Deserialize, Serialize};

/// What is asked of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductCommand {
    /// Take `quantity` for an order being placed.
    Reserve(u64),
    /// Add `quantity` to the stock.
    Restock(u64),
}

/// What a durable record does to a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductEvent {
    /// `ProductRestocked`.
    Restocked(u64),
    /// `OrderPlaced`: a pending order took this many (a hold on them, if
    /// any, is dropped by the caller).
    Reserved(u64),
    /// A pending order gave this many back (cancelled, failed or expired).
    Released(u64),
    /// `OrderPaid`: the order keeps this many for good; they count toward
    /// the ranking on the day of the record.
    Sold(u64),
    /// `OrderRefunded`: units of an order paid at `paid_at` come back to
    /// stock and leave the sales count of that day.
    Refunded { quantity: u64, paid_at: Timestamp },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub price: Krw,
    pub stock: u64,
    pub reserved: u64,
    pub sold: u64,
    /// Everything ever stocked: created stock plus restocks.
    pub stocked_total: u64,
    /// Units paid on each of the last few UTC days (the ranking's window):
    /// part of the product's stored state, so no stored value holds the
    /// sales of every product at once.
    pub recent_sales: RecentSales,
    /// Units one user may hold in live orders (since format version 3).
    pub max_per_user: Option<u64>,
    /// Whether the product has ever had a limit. Part of the stored layout
    /// of format version 3 and read by nothing: every product's units count
    /// per user, whatever its limit history ([`crate::domain::purchase_limit`]).
    pub counts_per_user: bool,
    #[serde(skip)]
    pub held: u64,
}

/// A change of a product's name, price or limit; absent fields stay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub price: Option<Krw>,
    /// `Some(None)` removes the limit.
    pub max_per_user: Option<Option<u64>>,
}

impl ProductPatch {
    /// Checks the fields as at creation; at least one must be given.
    pub fn validate(self, limits: &Limits) -> Decision<ProductPatch> {
        if self.name.is_none() && self.price.is_none() && self.max_per_user.is_none() {
            return Err(Rejection::InvalidRequest(
                "give at least one of name, price, max_per_user".into(),
            ));
        }
        if let Some(price) = self.price {
            check_price(price, limits)?;
        }
        if let Some(Some(max)) = self.max_per_user {
            check_max_per_user(max, limits)?;
        }
        Ok(self)
    }
}

/// A product's price is within API.md's limits.
pub fn check_price(price: Krw, limits: &Limits) -> Decision<()> {
    if price < limits.price_krw_min || price > limits.price_krw_max {
        return Err(Rejection::InvalidRequest(format!(
            "price must be between {} and {}",
            limits.price_krw_min.0, limits.price_krw_max.0
        )));
    }
    Ok(())
}

/// A product's `max_per_user` is within API.md's limits.
pub fn check_max_per_user(max: u64, limits: &Limits) -> Decision<()> {
    if max == 0 || max > limits.purchase_limit_count_max {
        return Err(Rejection::InvalidRequest(format!(
            "max_per_user must be between 1 and {}",
            limits.purchase_limit_count_max
        )));
    }
    Ok(())
}

/// Units paid per UTC day, for the days of the ranking's window at most:
/// `(day, units)`, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentSales(pub Vec<(u64, u64)>);

impl RecentSales {
    /// Counts `units` paid at `at`; days that left the window before it go.
    pub fn record(&mut self, at: Timestamp, units: u64) {
        let day = at.day();
        self.0.retain(|(d, _)| d + WINDOW_DAYS > day);
        match self.0.iter_mut().find(|(d, _)| *d == day) {
            Some((_, n)) => *n = n.saturating_add(units),
            None => {
                self.0.push((day, units));
                self.0.sort_unstable();
            }
        }
    }

    /// Takes back `units` counted as paid at `paid_at` (a refund); a day
    /// no longer held has nothing to take back.
    pub fn unrecord(&mut self, paid_at: Timestamp, units: u64) {
        let day = paid_at.day();
        if let Some(i) = self.0.iter().position(|(d, _)| *d == day) {
            self.0[i].1 = self.0[i].1.saturating_sub(units);
            if self.0[i].1 == 0 {
                self.0.remove(i);
            }
        }
    }

    /// Units paid in the window that ends on `now`'s day.
    pub fn in_window(&self, now: Timestamp) -> u64 {
        let today = now.day();
        self.0
            .iter()
            .filter(|(d, _)| *d <= today && d + WINDOW_DAYS > today)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Product {
    pub fn new(id: ProductId, name: String, price: Krw, stock: u64) -> Product {
        Product {
            id,
            name,
            price,
            stock,
            reserved: 0,
            sold: 0,
            stocked_total: stock,
            recent_sales: RecentSales::default(),
            max_per_user: None,
            counts_per_user: false,
            held: 0,
        }
    }

    /// The product with a per-user limit (checked by [`check_max_per_user`]).
    pub fn with_limit(mut self, max_per_user: Option<u64>) -> Product {
        self.apply_limit(max_per_user);
        self
    }

    fn apply_limit(&mut self, max_per_user: Option<u64>) {
        self.max_per_user = max_per_user;
        self.counts_per_user |= max_per_user.is_some();
    }

    /// Applies `ProductUpdated`: a new price applies to orders placed after it.
    pub fn apply_updated(&mut self, patch: &ProductPatch) {
        if let Some(name) = &patch.name {
            self.name.clone_from(name);
        }
        if let Some(price) = patch.price {
            self.price = price;
        }
        if let Some(max) = patch.max_per_user {
            self.apply_limit(max);
        }
    }

    /// An order's line of `quantity` as it counts per user: every line
    /// counts, checked against the limit now (if any).
    pub fn counted_line(&self, quantity: u64) -> CountedLine {
        CountedLine {
            product_id: self.id,
            quantity,
            max_per_user: self.max_per_user,
        }
    }

    /// What can still be ordered now.
    pub fn available(&self) -> u64 {
        self.stock.saturating_sub(self.held)
    }

    /// Checks a command against the product; changes nothing. A restock
    /// is decided on the product as it will be once the restocks already
    /// in flight are durable (the caller's projection).
    pub fn decide(
        &self,
        command: ProductCommand,
        _now: Timestamp,
        limits: &Limits,
    ) -> Decision<ProductEvent> {
        match command {
            ProductCommand::Reserve(quantity) => {
                if quantity <= self.available() {
                    Ok(ProductEvent::Reserved(quantity))
                } else {
                    Err(Rejection::OutOfStock {
                        product_id: self.id,
                        available: self.available(),
                        requested: quantity,
                    })
                }
            }
            ProductCommand::Restock(quantity) => {
                let room = limits.stock_count_max.saturating_sub(self.stock);
                if quantity == 0 || quantity > limits.restock_count_max.min(room) {
                    return Err(Rejection::InvalidRequest(format!(
                        "quantity must be between 1 and {} (stock may hold at most {})",
                        limits.restock_count_max.min(room).max(1),
                        limits.stock_count_max
                    )));
                }
                Ok(ProductEvent::Restocked(quantity))
            }
        }
    }

    pub fn hold(&mut self, quantity: u64) {
        self.held += quantity;
        assert!(
            self.held <= self.stock,
            "product {}: holds {} beyond stock {}",
            self.id,
            self.held,
            self.stock
        );
    }

    pub fn drop_hold(&mut self, quantity: u64) {
        self.held = self.held.saturating_sub(quantity);
    }

    /// Applies a durable event. Cannot fail: the record was decided against
    /// this state (recovery checks that a record fits before applying it),
    /// so the assertions below only catch a programming error.
    pub fn apply(&mut self, event: ProductEvent, at: Timestamp) {
        let was_conserved = self.is_conserved();
        match event {
            ProductEvent::Restocked(quantity) => {
                self.stock = self.stock.checked_add(quantity).expect("restock fits");
                self.stocked_total =
                    (self.stocked_total.checked_add(quantity)).expect("restock fits");
            }
            ProductEvent::Reserved(quantity) => {
                assert!(
                    quantity <= self.stock,
                    "product {}: reserved beyond stock",
                    self.id
                );
                self.stock -= quantity;
                self.reserved += quantity;
            }
            ProductEvent::Released(quantity) => {
                assert!(
                    quantity <= self.reserved,
                    "product {}: released beyond reserved",
                    self.id
                );
                self.reserved -= quantity;
                self.stock += quantity;
            }
            ProductEvent::Sold(quantity) => {
                assert!(
                    quantity <= self.reserved,
                    "product {}: sold beyond reserved",
                    self.id
                );
                self.reserved -= quantity;
                self.sold += quantity;
                self.recent_sales.record(at, quantity);
            }
            ProductEvent::Refunded { quantity, paid_at } => {
                assert!(
                    quantity <= self.sold,
                    "product {}: refunded beyond sold",
                    self.id
                );
                self.sold -= quantity;
                self.stock += quantity;
                self.recent_sales.unrecord(paid_at, quantity);
            }
        }
        assert!(
            self.held <= self.stock,
            "product {}: holds beyond stock",
            self.id
        );
        // Units only move between stock, reserved and sold (a restock adds to
        // both sides): stock + reserved + sold = stocked_total stays true.
        assert!(
            !was_conserved || self.is_conserved(),
            "product {}: {event:?} broke conservation",
            self.id
        );
    }

    pub fn is_conserved(&self) -> bool {
        self.stock
            .checked_add(self.reserved)
            .and_then(|s| s.checked_add(self.sold))
            == Some(self.stocked_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(stock: u64) -> Product {
        Product::new(ProductId(7), "p".into(), Krw(100), stock)
    }

    fn reserve(p: &Product, quantity: u64) -> Decision<ProductEvent> {
        p.decide(
            ProductCommand::Reserve(quantity),
            Timestamp(0),
            &Limits::API,
        )
    }

    #[test]
    fn reserve_rejects_when_stock_is_short() {
        let p = product(2);
        assert_eq!(reserve(&p, 2), Ok(ProductEvent::Reserved(2)));
        assert_eq!(
            reserve(&p, 3),
            Err(Rejection::OutOfStock {
                product_id: ProductId(7),
                available: 2,
                requested: 3
            })
        );
    }

    #[test]
    fn holds_count_against_what_can_be_reserved() {
        let mut p = product(5);
        p.hold(4);
        assert!(reserve(&p, 2).is_err());
        assert!(reserve(&p, 1).is_ok());
        p.drop_hold(4);
        assert!(reserve(&p, 5).is_ok());
    }

    #[test]
    fn reserve_release_and_sell_conserve_stock() {
        let mut p = product(10);
        for event in [
            ProductEvent::Reserved(4),
            ProductEvent::Released(1),
            ProductEvent::Sold(2),
            ProductEvent::Restocked(5),
        ] {
            p.apply(event, Timestamp(0));
        }
        assert_eq!(
            (p.stock, p.reserved, p.sold, p.stocked_total),
            (12, 1, 2, 15)
        );
        assert!(p.is_conserved());
    }

    #[test]
    fn recent_sales_keep_the_days_of_the_window_only() {
        // given sales on days 10, 11 and 12, when day 13 sells, then day 10 is gone
        use crate::domain::time::MS_PER_DAY;
        let mut s = RecentSales::default();
        for day in [10, 11, 12, 12] {
            s.record(Timestamp(day * MS_PER_DAY), 2);
        }
        assert_eq!(s.0, vec![(10, 2), (11, 2), (12, 4)]);
        assert_eq!(s.in_window(Timestamp(12 * MS_PER_DAY)), 8);
        assert_eq!(s.in_window(Timestamp(13 * MS_PER_DAY)), 6);
        s.record(Timestamp(13 * MS_PER_DAY), 1);
        assert_eq!(s.0, vec![(11, 2), (12, 4), (13, 1)]);
    }

    #[test]
    fn every_line_counts_per_user_with_the_limit_the_product_has_now() {
        // proves a line counts before any limit, under one, and once it is removed, with the limit of that moment
        let mut p = product(10);
        let limit_of = |p: &Product| p.counted_line(3).max_per_user;
        assert_eq!(limit_of(&p), None);
        let limit = |max| ProductPatch {
            max_per_user: Some(max),
            ..ProductPatch::default()
        };
        p.apply_updated(&limit(Some(2)));
        assert_eq!(p.counted_line(3).quantity, 3);
        assert_eq!(limit_of(&p), Some(2));
        p.apply_updated(&limit(None));
        assert_eq!(limit_of(&p), None);
    }

    #[test]
    fn a_patch_changes_only_the_fields_it_names_and_is_validated() {
        // proves PATCH semantics: absent fields stay; an empty patch, a bad price or a bad limit is refused
        let mut p = product(10).with_limit(Some(5));
        p.apply_updated(&ProductPatch {
            price: Some(Krw(250)),
            ..ProductPatch::default()
        });
        assert_eq!(
            (p.name.as_str(), p.price, p.max_per_user),
            ("p", Krw(250), Some(5))
        );
        let l = Limits::API;
        let bad = [
            ProductPatch::default(),
            ProductPatch {
                price: Some(Krw(0)),
                ..ProductPatch::default()
            },
            ProductPatch {
                price: Some(Krw(100_000_001)),
                ..ProductPatch::default()
            },
            ProductPatch {
                max_per_user: Some(Some(0)),
                ..ProductPatch::default()
            },
            ProductPatch {
                max_per_user: Some(Some(1001)),
                ..ProductPatch::default()
            },
        ];
        for patch in bad {
            assert!(patch.clone().validate(&l).is_err(), "{patch:?}");
        }
        let ok = ProductPatch {
            max_per_user: Some(None),
            ..ProductPatch::default()
        };
        assert!(ok.validate(&l).is_ok());
    }

    #[test]
    fn restock_is_bounded() {
        let p = product(10);
        let restock = |q| p.decide(ProductCommand::Restock(q), Timestamp(0), &Limits::API);
        assert!(restock(0).is_err());
        assert!(restock(Limits::API.stock_count_max - 10).is_ok());
        assert!(restock(Limits::API.stock_count_max - 9).is_err());
    }
}
