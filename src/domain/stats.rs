//! Best sellers: paid units per product per UTC day, over a rolling window.
//!
//! The window is the current UTC day and the `WINDOW_DAYS - 1` days before
//! it; older days are dropped, so memory is bounded by days × products sold.

use crate::domain::ids::{IdMap, ProductId};
use crate::domain::money::Krw;
use crate::domain::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub const WINDOW_DAYS: u64 = 3;
pub const TOP_COUNT: usize = 5;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopItem {
    pub rank: u32,
    pub product_id: ProductId,
    pub name: String,
    pub price: Krw,
    pub sold_quantity: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopProducts {
    pub items: Vec<TopItem>,
    pub window_days: u64,
    pub computed_at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesWindow {
    /// day → product → units paid that day.
    days: BTreeMap<u64, IdMap<ProductId, u64>>,
    /// Names and prices of products that appear in `days` (they never change).
    catalogue: IdMap<ProductId, (String, Krw)>,
}

impl SalesWindow {
    /// The window as the products' recent sales say it is.
    pub fn of_products(products: &[crate::domain::product::Product]) -> SalesWindow {
        let mut window = SalesWindow::default();
        for p in products {
            for &(day, units) in &p.recent_sales.0 {
                let at = Timestamp(day.saturating_mul(crate::domain::time::MS_PER_DAY));
                window.record(at, p.id, &p.name, p.price, units);
            }
        }
        window
    }

    fn first_day(now: Timestamp) -> u64 {
        now.day().saturating_sub(WINDOW_DAYS - 1)
    }

    /// Records a paid line at `paid_at`; lines already outside the window are ignored.
    pub fn record(
        &mut self,
        paid_at: Timestamp,
        product_id: ProductId,
        name: &str,
        price: Krw,
        quantity: u64,
    ) {
        *self
            .days
            .entry(paid_at.day())
            .or_default()
            .entry(product_id)
            .or_default() += quantity;
        self.catalogue
            .entry(product_id)
            .or_insert_with(|| (name.to_owned(), price));
    }

    /// Takes back units counted as paid at `paid_at` (a refund); a day no
    /// longer held has nothing to take back.
    pub fn unrecord(&mut self, paid_at: Timestamp, product_id: ProductId, quantity: u64) {
        if let Some(day) = self.days.get_mut(&paid_at.day()) {
            if let Some(units) = day.get_mut(&product_id) {
                *units = units.saturating_sub(quantity);
                if *units == 0 {
                    day.remove(&product_id);
                }
            }
        }
    }

    /// Drops the days that left the window at `now`.
    pub fn prune(&mut self, now: Timestamp) {
        let first = Self::first_day(now);
        self.days = self.days.split_off(&first);
        let days = &self.days;
        self.catalogue
            .retain(|id, _| days.values().any(|d| d.contains_key(id)));
    }

    /// The top products paid in the window at `now`: most units first, ties by lower id.
    pub fn top(&self, now: Timestamp) -> TopProducts {
        let mut totals: HashMap<ProductId, u64> = HashMap::new();
        for (_, day) in self.days.range(Self::first_day(now)..=now.day()) {
            for (id, units) in day {
                *totals.entry(*id).or_default() += units;
            }
        }
        let mut ranked: Vec<(ProductId, u64)> = totals.into_iter().collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let items = ranked
            .into_iter()
            .take(TOP_COUNT)
            .enumerate()
            .map(|(i, (product_id, sold_quantity))| {
                let (name, price) = self.catalogue.get(&product_id).cloned().unwrap_or_default();
                TopItem {
                    rank: i as u32 + 1,
                    product_id,
                    name,
                    price,
                    sold_quantity,
                }
            })
            .collect();
        TopProducts {
            items,
            window_days: WINDOW_DAYS,
            computed_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::MS_PER_DAY;

    fn at_day(day: u64) -> Timestamp {
        Timestamp(day * MS_PER_DAY + 1234)
    }

    #[test]
    fn top_five_by_units_with_ties_to_the_lower_id() {
        let mut w = SalesWindow::default();
        for (id, units) in [(1, 5), (2, 9), (3, 5), (4, 1), (5, 7), (6, 2), (7, 5)] {
            w.record(at_day(100), ProductId(id), "p", Krw(10), units);
        }
        let top = w.top(at_day(100));
        let ids: Vec<u64> = top.items.iter().map(|i| i.product_id.0).collect();
        assert_eq!(ids, vec![2, 5, 1, 3, 7]);
        assert_eq!(top.items[0].rank, 1);
        assert_eq!(top.items[0].sold_quantity, 9);
        assert_eq!(top.window_days, 3);
    }

    #[test]
    fn sales_older_than_three_days_leave_the_ranking() {
        // given sales on day 10 and day 12
        let mut w = SalesWindow::default();
        w.record(at_day(10), ProductId(1), "old", Krw(1), 100);
        w.record(at_day(12), ProductId(2), "new", Krw(1), 1);
        // when it is day 12, then both count
        assert_eq!(w.top(at_day(12)).items.len(), 2);
        // when it is day 13, then day 10 is out of the window
        let top = w.top(at_day(13));
        assert_eq!(top.items.len(), 1);
        assert_eq!(top.items[0].product_id, ProductId(2));
        w.prune(at_day(13));
        assert_eq!(w.top(at_day(12)).items.len(), 1);
    }
}
