//! The checks: the ranking against the payments, the data platform's
//! file against the ledger, and the recovered world against both.

use crate::check::Issued;
use crate::domain::ids::{CouponId, ProductId};
use crate::domain::order::OrderStatus;
use crate::domain::user::User;
use crate::domain::world::World;
use crate::engine::Engine;
use crate::simulate::ledger::Ledger;
use crate::simulate::report::{RankedProduct, SimulationReport};
use crate::simulate::SimulateArgs;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// The ranking must be the top 5 of what was paid: most units, ties by lower id.
pub fn check_ranking(top5: &[RankedProduct], sold: &BTreeMap<ProductId, u64>) -> Vec<String> {
    let mut expected: Vec<(ProductId, u64)> = sold
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| (*p, *n))
        .collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    expected.truncate(5);
    let got: Vec<(ProductId, u64)> = top5
        .iter()
        .map(|r| (r.product_id, r.sold_quantity))
        .collect();
    if got == expected {
        Vec::new()
    } else {
        vec![format!("ranking is {got:?} but payments say {expected:?}")]
    }
}

/// Waits (10 s at most) for the outbox to drain, then reads the sink back.
pub(crate) async fn await_delivery(
    engine: &Engine,
    sink: &Path,
    ledger: &Ledger,
    report: &mut SimulationReport,
) -> Vec<String> {
    for _ in 0..200 {
        if engine.outbox_pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.outbox_pending = engine.outbox_pending() as u64;
    let text = std::fs::read_to_string(sink).unwrap_or_default();
    let mut seen: HashSet<String> = HashSet::new();
    for line in text.lines() {
        let id = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| {
                v.get("event_id")
                    .and_then(|e| e.as_str())
                    .map(str::to_owned)
            });
        match id {
            Some(id) if !seen.insert(id.clone()) => report.delivered_duplicates += 1,
            Some(_) => report.delivered_events += 1,
            None => return vec![format!("data platform line is not an event: {line}")],
        }
    }
    let mut out = Vec::new();
    if report.outbox_pending > 0 {
        out.push(format!(
            "{} paid orders still in the outbox after 10 s",
            report.outbox_pending
        ));
    }
    let paid = ledger.status.iter().filter(|(_, s)| {
        matches!(
            s,
            OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
        )
    });
    for (id, _) in paid {
        if !seen.contains(&crate::engine::delivery::event_id(*id)) {
            out.push(format!("paid order {id} never reached the data platform"));
        }
    }
    for id in &ledger.refund_events {
        if !seen.contains(id) {
            out.push(format!("refund {id} never reached the data platform"));
        }
    }
    out
}

/// The recovered world against the ledger (through the shared check)
/// and the expectations of the scenario.
pub(crate) fn check_world(
    world: &World,
    args: &SimulateArgs,
    coupon: CouponId,
    ledger: &Ledger,
    report: &SimulationReport,
) -> Vec<String> {
    let c = &report.coupons;
    let mut acked = ledger.acknowledged(world, args.stock);
    *acked.coupon(coupon) = Issued {
        quantity: c.quantity,
        issued: c.issued,
    };
    let mut out = acked.check_world(world);
    // Coupons issued = min(quantity, users who asked), recovered and answered.
    let expected_issued = c.quantity.min(c.users_who_asked);
    if c.issued != expected_issued {
        out.push(format!(
            "coupons: {} answered, but min(quantity {}, askers {}) = {expected_issued}",
            c.issued, c.quantity, c.users_who_asked
        ));
    }
    for u in &world.users {
        out.extend(check_limits(u, ledger));
    }
    out.extend(check_orders(world, ledger));
    out
}

/// A user's limited units as its paid orders say.
fn check_limits(u: &User, ledger: &Ledger) -> Vec<String> {
    let mut out = Vec::new();
    for (&p, &max) in &ledger.limits {
        // Every order has ended: paid and partially refunded ones hold
        // their units not refunded; the others freed theirs.
        let paid = ledger.held_in(u.id, p, |s| {
            matches!(s, OrderStatus::Paid | OrderStatus::PartiallyRefunded)
        });
        let held = u.limited.of(p);
        if held != paid || held > max {
            out.push(format!(
                "user {} holds {held} units of limited product {p} (limit {max}), paid orders say {paid}",
                u.id
            ));
        }
    }
    out
}

/// Every order recovered (its status by the shared check), with the lines
/// and amounts it was placed with.
fn check_orders(world: &World, ledger: &Ledger) -> Vec<String> {
    let mut out = Vec::new();
    if world.orders.len() != ledger.status.len() {
        out.push(format!(
            "{} orders recovered, {} placed",
            world.orders.len(),
            ledger.status.len()
        ));
    }
    for (id, placed) in &ledger.orders {
        match world.orders.get(id) {
            Some(o) if o.items != placed.items || o.pay_amount != placed.pay_amount => {
                out.push(format!("order {id}: recovered lines or amounts differ"))
            }
            _ => {}
        }
    }
    out
}
