//! Products and their stock.
//!
//! `stock` is what can be ordered; `reserved` is held by pending orders;
//! `sold` is paid. Invariant: `stock + reserved + sold == stocked_total`.
//! `held` counts reservations decided but not yet durable: they are not yet
//! moved out of `stock`, but nobody else may take them.

use crate::domain::ids::ProductId;
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::rejection::{Decision, Rejection};
use crate::domain::stats::WINDOW_DAYS;
use crate::domain::time::Timestamp;
use serde::{Deserialize, Serialize};

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
    #[serde(skip)]
    pub held: u64,
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
            held: 0,
        }
    }

    /// What can still be ordered now.
    pub fn available(&self) -> u64 {
        self.stock.saturating_sub(self.held)
    }

    pub fn decide_reserve(&self, quantity: u64) -> Decision<()> {
        if quantity <= self.available() {
            Ok(())
        } else {
            Err(Rejection::OutOfStock {
                product_id: self.id,
                available: self.available(),
                requested: quantity,
            })
        }
    }

    pub fn hold(&mut self, quantity: u64) {
        self.held += quantity;
    }

    pub fn drop_hold(&mut self, quantity: u64) {
        self.held = self.held.saturating_sub(quantity);
    }

    pub fn decide_restock(&self, quantity: u64, limits: &Limits) -> Decision<()> {
        let room = limits.stock_count_max.saturating_sub(self.stock);
        if quantity == 0 || quantity > limits.restock_count_max.min(room) {
            return Err(Rejection::InvalidRequest(format!(
                "quantity must be between 1 and {} (stock may hold at most {})",
                limits.restock_count_max.min(room).max(1),
                limits.stock_count_max
            )));
        }
        Ok(())
    }

    pub fn apply_restocked(&mut self, quantity: u64) {
        self.stock += quantity;
        self.stocked_total += quantity;
    }

    /// A pending order took `quantity` (its hold, if any, becomes durable).
    pub fn apply_reserved(&mut self, quantity: u64) {
        self.stock -= quantity;
        self.reserved += quantity;
    }

    /// A pending order gave `quantity` back (cancelled, failed or expired).
    pub fn apply_released(&mut self, quantity: u64) {
        self.reserved -= quantity;
        self.stock += quantity;
    }

    /// A paid order keeps `quantity` for good; it counts toward the ranking
    /// on the day it was paid (`at`).
    pub fn apply_sold(&mut self, quantity: u64, at: Timestamp) {
        self.reserved -= quantity;
        self.sold += quantity;
        self.recent_sales.record(at, quantity);
    }

    /// Refunded units of an order paid at `paid_at` come back to stock
    /// and leave the sales count.
    pub fn apply_refunded(&mut self, quantity: u64, paid_at: Timestamp) {
        self.sold -= quantity;
        self.stock += quantity;
        self.recent_sales.unrecord(paid_at, quantity);
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

    #[test]
    fn reserve_rejects_when_stock_is_short() {
        let p = product(2);
        assert!(p.decide_reserve(2).is_ok());
        assert_eq!(
            p.decide_reserve(3),
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
        assert!(p.decide_reserve(2).is_err());
        assert!(p.decide_reserve(1).is_ok());
        p.drop_hold(4);
        assert!(p.decide_reserve(5).is_ok());
    }

    #[test]
    fn reserve_release_and_sell_conserve_stock() {
        let mut p = product(10);
        p.apply_reserved(4);
        p.apply_released(1);
        p.apply_sold(2, Timestamp(0));
        p.apply_restocked(5);
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
    fn restock_is_bounded() {
        let p = product(10);
        assert!(p.decide_restock(0, &Limits::API).is_err());
        assert!(p
            .decide_restock(Limits::API.stock_count_max - 10, &Limits::API)
            .is_ok());
        assert!(p
            .decide_restock(Limits::API.stock_count_max - 9, &Limits::API)
            .is_err());
    }
}
