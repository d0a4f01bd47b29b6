//! What the simulation saw acknowledged.

use crate::check::{Acknowledged, Expect, Units, Wallet};
use crate::domain::ids::{OrderId, ProductId, UserCouponId, UserId};
use crate::domain::order::{LineRequest, Order, OrderStatus};
use crate::domain::world::World;
use std::collections::{BTreeMap, HashMap};

/// What the simulation saw acknowledged; the recovered state must match it.
#[derive(Default)]
pub(crate) struct Ledger {
    pub(crate) charged: HashMap<UserId, u64>,
    pub(crate) paid: HashMap<UserId, u64>,
    pub(crate) sold: BTreeMap<ProductId, u64>,
    pub(crate) status: BTreeMap<OrderId, OrderStatus>,
    pub(crate) orders: HashMap<OrderId, Order>,
    pub(crate) coupon_of: HashMap<UserId, UserCouponId>,
    pub(crate) refunded: HashMap<UserId, u64>,
    /// Event ids of the refunds answered.
    pub(crate) refund_events: Vec<String>,
    /// The per-user limit of each limited product.
    pub(crate) limits: BTreeMap<ProductId, u64>,
}

impl Ledger {
    /// The ledger as the shared check takes it, over every user and
    /// product of `world` (each made with `stock`). Every order has ended:
    /// none is left reserved, and one left pending has expired. Units sold
    /// are kept net of refunds, so they count as placed and paid, none
    /// refunded.
    pub(crate) fn acknowledged(&self, world: &World, stock: u64) -> Acknowledged {
        let mut acked = Acknowledged::default();
        for id in world.users.iter().map(|u| u.id) {
            let of = |m: &HashMap<UserId, u64>| m.get(&id).copied().unwrap_or(0);
            *acked.user(id) = Wallet {
                charged: of(&self.charged),
                paid: of(&self.paid),
                refunded: of(&self.refunded),
            };
        }
        for id in world.products.iter().map(|p| p.id) {
            let sold = self.sold.get(&id).copied().unwrap_or(0);
            *acked.product(id) = Units {
                stocked: stock,
                placed: sold,
                sold,
                ..Units::default()
            };
        }
        for (id, status) in &self.status {
            let expect = match status {
                OrderStatus::Pending => Expect::only(OrderStatus::Expired),
                ended => Expect::only(*ended),
            };
            acked.order(*id, expect);
        }
        acked
    }

    /// Units of `product` that `user` holds in orders answered pending,
    /// paid or partially refunded (refunded units freed).
    pub(crate) fn held(&self, user: UserId, product: ProductId) -> u64 {
        self.held_in(user, product, |s| {
            matches!(
                s,
                OrderStatus::Pending | OrderStatus::Paid | OrderStatus::PartiallyRefunded
            )
        })
    }

    /// Units of `product` that `user` holds in orders whose status passes
    /// `counts`, less the units refunded of them.
    pub(crate) fn held_in(
        &self,
        user: UserId,
        product: ProductId,
        counts: impl Fn(OrderStatus) -> bool,
    ) -> u64 {
        self.orders
            .values()
            .filter(|o| o.user_id == user)
            .filter(|o| self.status.get(&o.id).is_some_and(|s| counts(*s)))
            .flat_map(|o| {
                o.quantities()
                    .map(|(p, q)| (p, q.saturating_sub(o.refunded_units(p))))
            })
            .filter(|(p, _)| *p == product)
            .map(|(_, q)| q)
            .sum()
    }

    /// Whether `lines` of `user` pass a limit, by what the ledger holds.
    pub(crate) fn over_limit(&self, user: UserId, lines: &[LineRequest]) -> bool {
        lines.iter().any(|l| {
            self.limits
                .get(&l.product_id)
                .is_some_and(|max| self.held(user, l.product_id) + l.quantity > *max)
        })
    }
}
