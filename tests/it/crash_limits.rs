//! The per-user purchase limit, checked on the state the SIGKILL crash test
//! recovers ([`crate::crash_sigkill`]): for each user and limited product,
//! the units the user holds in live orders (pending, paid and partially
//! refunded, refunded units freed) never exceed the limit in force when the
//! last of those orders was placed.
//!
//! The worker prints `TRY` before it asks (a placement of a limited product,
//! a PATCH of a limit) and `ACK` once answered; the lines are in the order
//! they were written, so each order's limit decision lies between its two
//! lines (or the kill), and each PATCH took effect between its own two.
//! The limits possibly in force during an interval follow from that; the
//! bound for a user is the highest of them over the orders that can have
//! been decided last, whatever the interleaving.

use commerce_engine::domain::ids::{OrderId, ProductId, UserId};
use commerce_engine::domain::order::{Order, OrderStatus};
use commerce_engine::domain::views::Reply;
use commerce_engine::domain::world::World;
use commerce_engine::store::SledStore;
use std::collections::{BTreeMap, HashMap};

/// A position in the workers' output: the round, then the line in it.
pub fn position(round: u32, line: usize) -> u64 {
    (u64::from(round) << 32) | line as u64
}

/// The last position of a round (a kill ends everything under way).
fn round_end(round: u32) -> u64 {
    position(round, u32::MAX as usize)
}

/// A limit change seen in the output: `None` is no limit.
#[derive(Clone, Copy, Debug)]
struct Change {
    at: u64,
    max: Option<u64>,
    /// In force from `at` on (answered, or read from a recovered state);
    /// else only asked, possibly in force from `at` on.
    settled: bool,
}

/// Limits over time and when each order of a limited product was decided.
#[derive(Default)]
pub struct LimitTracker {
    changes: BTreeMap<ProductId, Vec<Change>>,
    /// Placements asked and not answered yet: key → position.
    open: HashMap<String, u64>,
    /// (asked, answered or killed) of every order of a limited product.
    windows: HashMap<OrderId, (u64, u64)>,
}

impl LimitTracker {
    /// A product created (with its limit, `None` for none) at `at`.
    pub fn created(&mut self, product: ProductId, max: Option<u64>, at: u64) {
        self.change(product, max, at, true);
    }

    /// A PATCH of `product`'s limit asked at `at`.
    pub fn patch_asked(&mut self, product: ProductId, max: Option<u64>, at: u64) {
        self.change(product, max, at, false);
    }

    /// That PATCH answered at `at`.
    pub fn patch_answered(&mut self, product: ProductId, max: Option<u64>, at: u64) {
        self.change(product, max, at, true);
    }

    fn change(&mut self, product: ProductId, max: Option<u64>, at: u64, settled: bool) {
        self.changes
            .entry(product)
            .or_default()
            .push(Change { at, max, settled });
    }

    /// A placement of a limited product asked under `key` at `at`.
    pub fn place_asked(&mut self, key: &str, at: u64) {
        self.open.insert(key.to_owned(), at);
    }

    /// A placement answered at `at` (any placement: only asked ones count).
    pub fn place_answered(&mut self, key: &str, order: OrderId, at: u64) {
        if let Some(asked) = self.open.remove(key) {
            self.windows.insert(order, (asked, at));
        }
    }

    /// After round `round`'s kill: placements still open ended with it
    /// (the order, if durable, is found by its key); each limited product's
    /// limit at the next round's start is the recovered one.
    pub fn round_ended(&mut self, round: u32, w: &World, store: &SledStore) {
        for (key, asked) in self.open.drain() {
            let stored = crate::durability_support::stored_key(store, w, &key);
            if let Some(Reply::Order(o)) = stored.map(|k| k.reply) {
                self.windows.insert(o.id, (asked, round_end(round)));
            }
        }
        let next = position(round + 1, 0);
        for (p, changes) in &mut self.changes {
            changes.push(Change {
                at: next,
                max: w.products[p.index()].max_per_user,
                settled: true,
            });
        }
    }

    /// The highest limit of `product` possibly in force at some moment of
    /// `from..=to`; `None` when it may have had no limit then.
    fn highest_in_force(&self, product: ProductId, from: u64, to: u64) -> Option<u64> {
        let changes = &self.changes[&product];
        let base = changes
            .iter()
            .rposition(|c| c.settled && c.at <= from)
            .unwrap_or_else(|| panic!("product {product} existed when it was ordered"));
        // In force at `from`: the last settled change, or one asked since;
        // then every change made up to `to`.
        changes[base..]
            .iter()
            .filter(|c| c.at <= to)
            .try_fold(0, |high, c| c.max.map(|m| high.max(m)))
    }

    /// Checks every user's live units of every limited product against
    /// the limit in force when the last of their orders was placed.
    pub fn check(&self, w: &World) {
        for &p in self.changes.keys() {
            let mut live: BTreeMap<_, Vec<(&Order, u64)>> = BTreeMap::new();
            for o in w.orders.values() {
                let units = live_units(o, p);
                if units > 0 {
                    live.entry(o.user_id).or_default().push((o, units));
                }
            }
            for u in &w.users {
                let orders = live.get(&u.id).map_or(&[][..], Vec::as_slice);
                let held: u64 = orders.iter().map(|(_, n)| n).sum();
                self.check_bound(p, u.id, orders, held);
                // The count the engine decides by, as recovery rebuilt it,
                // is exactly those units (every unit counts, including units
                // ordered before the product's first limit).
                assert_eq!(
                    u.units_held(p),
                    held,
                    "user {}: the count of product {p} matches the units of its live orders",
                    u.id
                );
            }
        }
    }

    /// `held` units of `p` in `orders` (the user's live ones) fit the limit
    /// in force when the last of them was placed.
    fn check_bound(&self, p: ProductId, user: UserId, orders: &[(&Order, u64)], held: u64) {
        if orders.is_empty() {
            return;
        }
        let windows: Vec<(u64, u64)> = orders
            .iter()
            .map(|(o, _)| {
                *self.windows.get(&o.id).unwrap_or_else(|| {
                    panic!(
                        "order {} of limited product {p} was asked by the workload",
                        o.id
                    )
                })
            })
            .collect();
        // The order decided last was decided after every other was
        // asked: it is among those still unanswered then.
        let last_asked = windows.iter().map(|w| w.0).max().unwrap_or(0);
        let bound = windows
            .iter()
            .filter(|(_, end)| *end >= last_asked)
            .try_fold(0, |high, &(from, to)| {
                self.highest_in_force(p, from, to).map(|m| high.max(m))
            });
        if let Some(bound) = bound {
            let ids: Vec<(OrderId, u64)> = orders.iter().map(|(o, n)| (o.id, *n)).collect();
            assert!(
                held <= bound,
                "user {user} holds {held} units of product {p} in live orders {ids:?}, \
                 over the limit {bound} in force when the last was placed"
            );
        }
    }

    /// Orders of limited products the workload asked for and recovery holds.
    pub fn orders_seen(&self) -> usize {
        self.windows.len()
    }
}

/// Units of `product` that count toward `o`'s user's limit: those of a
/// pending, paid or partially refunded order not refunded.
fn live_units(o: &Order, product: ProductId) -> u64 {
    if !matches!(
        o.status,
        OrderStatus::Pending | OrderStatus::Paid | OrderStatus::PartiallyRefunded
    ) {
        return 0;
    }
    o.items
        .iter()
        .filter(|l| l.product_id == product)
        .map(|l| l.quantity.saturating_sub(o.refunded_units(product)))
        .sum()
}
