//! The check of a recovered [`World`]: every invariant
//! ([`World::violations`]), and every acknowledgement held, by the rules
//! of [`super`] and what only the world shows (units reserved, sold and
//! ever stocked, a campaign's quantity).

use super::{check_order, Acknowledged, Units};
use crate::domain::product::Product;
use crate::domain::world::World;

impl Acknowledged {
    /// What the recovered `world` violates: an invariant, or an acknowledgement.
    pub fn check_world(&self, world: &World) -> Vec<String> {
        let mut out = world.violations();
        let exact = self.exact();
        for (id, wallet) in &self.users {
            match world.users.get(id.index()) {
                Some(u) => out.extend(wallet.check(*id, u.balance.0, exact)),
                None => out.push(format!("user {id} was acknowledged but is not recovered")),
            }
        }
        for (id, units) in &self.products {
            match world.products.get(id.index()) {
                Some(p) => out.extend(product(units, p, exact)),
                None => out.push(format!(
                    "product {id} was acknowledged but is not recovered"
                )),
            }
        }
        for (id, expect) in &self.orders {
            let status = world.orders.get(id).map(|o| o.status);
            out.extend(check_order(*id, *expect, status));
        }
        for (id, issued) in &self.coupons {
            match world.campaigns.get(id.index()) {
                Some(c) if c.quantity == issued.quantity => {
                    out.extend(issued.check(*id, Some(c.issued.len()), exact))
                }
                Some(c) => out.push(format!(
                    "coupon {id}: quantity {} but {} acknowledged",
                    c.quantity, issued.quantity
                )),
                None => out.push(format!("coupon {id} is not recovered")),
            }
        }
        out
    }
}

/// A product's stock by the shared rule, and what only the world shows:
/// units ever stocked, reserved and sold. Restocks with no answer (at
/// least) are left out of the stock the rule sees: they are no
/// acknowledgement.
fn product(units: &Units, p: &Product, exact: bool) -> Vec<String> {
    let unanswered_restocks = p.stocked_total.checked_sub(units.stocked);
    let mut out: Vec<String> = match unanswered_restocks {
        Some(more) => units.check_stock(p.id, p.stock.saturating_sub(more), exact),
        None => None,
    }
    .into_iter()
    .collect();
    let fine = if exact {
        (p.stocked_total, p.reserved, p.sold) == (units.stocked, units.reserved(), units.kept())
    } else {
        // A refund whose answer never came may have taken its units back.
        unanswered_restocks.is_some() && p.sold.saturating_add(units.refund_unknown) >= units.kept()
    };
    if !fine {
        out.push(format!(
            "product {}: stocked {} reserved {} sold {}, but acknowledged: {units:?}",
            p.id, p.stocked_total, p.reserved, p.sold
        ));
    }
    out
}
