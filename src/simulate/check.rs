//! The checks: the ranking against the payments, the data platform's
//! file against the ledger, and the recovered world against both.

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

/// The recovered world against the ledger and the expectations of the scenario.
pub(crate) fn check_world(
    world: &World,
    args: &SimulateArgs,
    coupon: CouponId,
    ledger: &Ledger,
    report: &SimulationReport,
) -> Vec<String> {
    let mut out = world.violations();
    out.extend(check_coupons(world, coupon, report));
    out.extend(check_products(world, args, ledger));
    for u in &world.users {
        out.extend(check_user(u, ledger));
    }
    out.extend(check_orders(world, ledger));
    out
}

/// Coupons issued = min(quantity, users who asked), recovered and answered.
fn check_coupons(world: &World, coupon: CouponId, report: &SimulationReport) -> Vec<String> {
    let mut out = Vec::new();
    let c = &report.coupons;
    let expected_issued = c.quantity.min(c.users_who_asked);
    let issued = world
        .campaigns
        .get(coupon.index())
        .map_or(0, |k| k.issued.len());
    if issued != expected_issued || c.issued != expected_issued {
        out.push(format!(
            "coupons: {issued} recovered and {} answered, but min(quantity {}, askers {}) = {expected_issued}",
            c.issued, c.quantity, c.users_who_asked
        ));
    }
    out
}

/// Units sold = paid − refunded, within the stock, none left reserved.
fn check_products(world: &World, args: &SimulateArgs, ledger: &Ledger) -> Vec<String> {
    let mut out = Vec::new();
    for p in &world.products {
        let sold = ledger.sold.get(&p.id).copied().unwrap_or(0);
        if p.sold != sold
            || p.reserved != 0
            || p.sold > args.stock
            || p.stock + p.sold != args.stock
        {
            out.push(format!(
                "product {}: stock {} reserved {} sold {} (stocked {}), payments say {sold} sold",
                p.id, p.stock, p.reserved, p.sold, args.stock
            ));
        }
    }
    out
}

/// A user's limited units as its paid orders say, and its balance =
/// charged − paid + refunded.
fn check_user(u: &User, ledger: &Ledger) -> Vec<String> {
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
    let expected = ledger
        .charged
        .get(&u.id)
        .copied()
        .unwrap_or(0)
        .checked_sub(ledger.paid.get(&u.id).copied().unwrap_or(0))
        .and_then(|b| b.checked_add(ledger.refunded.get(&u.id).copied().unwrap_or(0)));
    if Some(u.balance.0) != expected {
        out.push(format!(
            "user {}: balance {} but charged - paid + refunded = {expected:?}",
            u.id, u.balance.0
        ));
    }
    out
}

/// Every order recovered as answered (a pending one expired), with the
/// lines and amounts it was placed with.
fn check_orders(world: &World, ledger: &Ledger) -> Vec<String> {
    let mut out = Vec::new();
    if world.orders.len() != ledger.status.len() {
        out.push(format!(
            "{} orders recovered, {} placed",
            world.orders.len(),
            ledger.status.len()
        ));
    }
    for (id, status) in &ledger.status {
        let found = world.orders.get(id).map(|o| o.status);
        let fine = match status {
            // Left pending: the clock moved past its TTL, so it expired.
            OrderStatus::Pending => found == Some(OrderStatus::Expired),
            s => found == Some(*s),
        };
        if !fine {
            out.push(format!(
                "order {id}: answered {status:?}, recovered {found:?}"
            ));
        }
        if let (Some(o), Some(placed)) = (world.orders.get(id), ledger.orders.get(id)) {
            if o.items != placed.items || o.pay_amount != placed.pay_amount {
                out.push(format!("order {id}: recovered lines or amounts differ"));
            }
        }
    }
    out
}
