//! The invariants of DESIGN.md, checked over a whole [`World`]: stock
//! conserved and matching the orders, balances matching their history and
//! within the limit, coupons held exactly as issued and used by one live
//! order at most. Recovery, `verify` and the tests check them; the cheap
//! ones per entity are also asserted where each event is applied.

use crate::domain::ids::{OrderId, ProductId, UserCouponId, UserId};
use crate::domain::limits::Limits;
use crate::domain::order::OrderStatus;
use crate::domain::user::CouponUse;
use crate::domain::world::World;
use std::collections::HashMap;

impl World {
    /// Checks every invariant of DESIGN.md under the limits of API.md.
    pub fn violations(&self) -> Vec<String> {
        self.violations_under(&Limits::API)
    }

    /// Checks every invariant of DESIGN.md under `limits`; returns what is violated.
    pub fn violations_under(&self, limits: &Limits) -> Vec<String> {
        let mut out = Vec::new();
        let live = self.live_order_sums(&mut out);
        self.check_products(&live, &mut out);
        self.check_users(&live, limits, &mut out);
        self.check_campaigns(&mut out);
        out
    }

    /// Units reserved and sold by the orders in memory, per product, and
    /// the coupon each live (pending or paid) order uses.
    fn live_order_sums(&self, out: &mut Vec<String>) -> LiveSums {
        let mut live = LiveSums::default();
        for order in self.orders.values() {
            if order.status == OrderStatus::Pending {
                for (p, q) in order.quantities() {
                    *live.reserved.entry(p).or_default() += q;
                }
            }
            for (p, q) in order.units_kept() {
                *live.sold.entry(p).or_default() += q;
            }
            if let (Some(c), true) = (order.user_coupon_id, order.holds_coupon()) {
                if live.coupons.insert(c, order.id).is_some() {
                    out.push(format!("user coupon {c} used by two live orders"));
                }
            }
        }
        live
    }

    fn check_products(&self, live: &LiveSums, out: &mut Vec<String>) {
        for p in &self.products {
            if !p.is_conserved() {
                out.push(format!(
                    "product {}: stock {} + reserved {} + sold {} != stocked {}",
                    p.id, p.stock, p.reserved, p.sold, p.stocked_total
                ));
            }
            let r = live.reserved.get(&p.id).copied().unwrap_or(0);
            let s = live.sold.get(&p.id).copied().unwrap_or(0) + self.archived.sold_of(p.id);
            if p.reserved != r || p.sold != s {
                out.push(format!(
                    "product {}: reserved {} sold {} but orders say {r} and {s}",
                    p.id, p.reserved, p.sold
                ));
            }
        }
    }

    /// Balances, and coupons: a used coupon is used by a live order, or by
    /// an archived paid one (counted in the tally); an available one by none.
    fn check_users(&self, live: &LiveSums, limits: &Limits, out: &mut Vec<String>) {
        let mut used_by_archived = 0u64;
        for u in &self.users {
            if !u.is_conserved() {
                out.push(format!(
                    "user {}: balance {} does not match its history",
                    u.id, u.balance.0
                ));
            }
            // Only a refund may take a balance above the limit.
            if !u.charges_within(limits.balance_krw_max) {
                out.push(format!(
                    "user {}: a charge took the balance above the limit",
                    u.id
                ));
            }
            for c in &u.coupons {
                match (c.state, live.coupons.get(&c.id)) {
                    (CouponUse::Used(o), Some(lo)) if o == *lo => {}
                    (CouponUse::Used(o), None) if !self.orders.contains_key(&o) => {
                        used_by_archived += 1
                    }
                    (CouponUse::Available, None) => {}
                    (state, live) => out.push(format!(
                        "user coupon {}: state {state:?} but live order {live:?}",
                        c.id
                    )),
                }
            }
        }
        if used_by_archived != self.archived.coupons_used {
            out.push(format!(
                "{used_by_archived} coupons used by orders not in memory, but the archive counts {}",
                self.archived.coupons_used
            ));
        }
    }

    fn check_campaigns(&self, out: &mut Vec<String>) {
        for c in &self.campaigns {
            if c.issued.len() > c.quantity {
                out.push(format!(
                    "coupon {}: {} issued of {}",
                    c.id,
                    c.issued.len(),
                    c.quantity
                ));
            }
            for user in c.issued.iter() {
                let held = self.users.get(UserId(user).index()).map_or(0, |u| {
                    u.coupons.iter().filter(|k| k.coupon_id == c.id).count()
                });
                if held != 1 {
                    out.push(format!(
                        "coupon {}: user {user} holds {held} coupons of it",
                        c.id
                    ));
                }
            }
        }
        let held_total: u64 = self.users.iter().map(|u| u.coupons.len() as u64).sum();
        let issued_total: u64 = self.campaigns.iter().map(|c| c.issued.len()).sum();
        if held_total != issued_total {
            out.push(format!(
                "{held_total} coupons held but {issued_total} issued"
            ));
        }
    }
}

/// What the orders in memory add up to, for the invariants.
#[derive(Default)]
struct LiveSums {
    reserved: HashMap<ProductId, u64>,
    sold: HashMap<ProductId, u64>,
    coupons: HashMap<UserCouponId, OrderId>,
}
