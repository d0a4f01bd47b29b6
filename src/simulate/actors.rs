//! What the simulation's actors do in each phase: shoppers charge, race
//! for the coupon, order, pay and cancel; an operator refunds. Each answer
//! goes to the ledger and the report.

use crate::bench::rng::Rng;
use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::money::Krw;
use crate::domain::order::{LineRequest, Order, OrderStatus};
use crate::domain::refund::{RefundLine, RefundRequest};
use crate::engine::{Engine, Error, OrderSource, PlaceOrder};
use crate::simulate::ledger::Ledger;
use crate::simulate::report::SimulationReport;
use crate::simulate::scenario::{
    Step, ASK_COUPON_PCT, ASK_TWICE_PCT, LIMITED_EVERY, LIMIT_PER_USER, POOR_USER_PCT, REFUND_PCT,
    REFUND_TWICE_PCT, REFUND_WHOLE_PCT, USE_COUPON_PCT,
};
use crate::simulate::SimulateArgs;
use futures_util::future::join_all;

pub(crate) fn code(e: &Error) -> &'static str {
    e.code()
}
pub(crate) async fn create_products(
    engine: &Engine,
    args: &SimulateArgs,
    rng: &mut Rng,
    ledger: &mut Ledger,
) -> Step<Vec<ProductId>> {
    let prices: Vec<Krw> = (0..args.products)
        .map(|_| Krw(rng.between(50, 500) * 100))
        .collect();
    let mut ids = Vec::with_capacity(args.products);
    for (i, price) in prices.iter().enumerate() {
        let limit = (i % LIMITED_EVERY == 0).then_some(LIMIT_PER_USER);
        let p = engine
            .create_limited_product(&format!("flash-item-{i}"), *price, args.stock, limit, None)
            .await?;
        if let Some(max) = limit {
            ledger.limits.insert(p.id, max);
        }
        ids.push(p.id);
    }
    Ok(ids)
}

pub(crate) async fn charge_all(
    engine: &Engine,
    users: &[UserId],
    rng: &mut Rng,
    ledger: &mut Ledger,
) -> Step<()> {
    let amounts: Vec<u64> = users
        .iter()
        .map(|_| {
            if rng.percent(POOR_USER_PCT) {
                rng.between(10, 100) * 100
            } else {
                rng.between(500, 2_000) * 100
            }
        })
        .collect();
    let results = join_all(
        users
            .iter()
            .zip(&amounts)
            .map(|(u, a)| engine.charge(*u, Krw(*a), None)),
    )
    .await;
    for ((u, a), r) in users.iter().zip(&amounts).zip(results) {
        r?;
        *ledger.charged.entry(*u).or_default() += a;
    }
    Ok(())
}

pub(crate) async fn race_for_coupon(
    engine: &Engine,
    coupon: CouponId,
    args: &SimulateArgs,
    users: &[UserId],
    rng: &mut Rng,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) {
    let mut askers: Vec<(UserId, bool)> = Vec::new();
    for u in users {
        if rng.percent(ASK_COUPON_PCT) {
            askers.push((*u, rng.percent(ASK_TWICE_PCT)));
        }
    }
    let results = join_all(askers.iter().map(|(u, twice)| async move {
        let first = engine.issue_coupon(coupon, *u, None).await;
        let second = if *twice {
            Some(engine.issue_coupon(coupon, *u, None).await)
        } else {
            None
        };
        (first, second)
    }))
    .await;
    let c = &mut report.coupons;
    c.quantity = args.coupon_quantity;
    c.users_who_asked = askers.len() as u64;
    for ((u, _), (first, second)) in askers.iter().zip(results) {
        for r in std::iter::once(first).chain(second) {
            match r {
                Ok(view) => {
                    c.issued += 1;
                    ledger.coupon_of.insert(*u, view.id);
                }
                Err(e) if code(&e) == "COUPON_SOLD_OUT" => c.sold_out += 1,
                Err(e) if code(&e) == "COUPON_ALREADY_ISSUED" => c.already_issued += 1,
                Err(e) => report
                    .violations
                    .push(format!("coupon issue to user {u} failed unexpectedly: {e}")),
            }
        }
    }
}

/// Places one order per user of `wave`; answers the ids placed.
pub(crate) async fn place_wave(
    engine: &Engine,
    wave: &[UserId],
    products: &[ProductId],
    rng: &mut Rng,
    with_coupons: bool,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) -> Vec<OrderId> {
    let requests = wave_requests(wave, products, rng, with_coupons, ledger);
    // One order per user in a wave: what the ledger holds decides each limit exactly.
    let over: Vec<bool> = requests
        .iter()
        .map(|r| match &r.source {
            OrderSource::Items(lines) => ledger.over_limit(r.user_id, lines),
            OrderSource::Cart => false,
        })
        .collect();
    let results = join_all(requests.into_iter().map(|r| engine.place_order(r, None))).await;
    let mut placed = Vec::new();
    for ((u, r), over) in wave.iter().zip(results).zip(over) {
        if let Some(id) = record_placed(*u, r, over, report, ledger) {
            placed.push(id);
        }
    }
    placed
}

/// Each user's order: one to three distinct products, one or two units of
/// each, with the user's coupon now and then (if `with_coupons`).
fn wave_requests(
    wave: &[UserId],
    products: &[ProductId],
    rng: &mut Rng,
    with_coupons: bool,
    ledger: &Ledger,
) -> Vec<PlaceOrder> {
    wave.iter()
        .map(|u| {
            let lines_count = rng.between(1, 3) as usize;
            let mut lines: Vec<LineRequest> = Vec::with_capacity(lines_count);
            while lines.len() < lines_count.min(products.len()) {
                let product_id = products[rng.below(products.len() as u64) as usize];
                if lines.iter().all(|l| l.product_id != product_id) {
                    let quantity = rng.between(1, 2);
                    lines.push(LineRequest {
                        product_id,
                        quantity,
                    });
                }
            }
            let coupon = ledger.coupon_of.get(u).copied();
            let use_coupon = with_coupons && coupon.is_some() && rng.percent(USE_COUPON_PCT);
            PlaceOrder {
                user_id: *u,
                source: OrderSource::Items(lines),
                user_coupon_id: coupon.filter(|_| use_coupon),
            }
        })
        .collect()
}

/// One user's answer to placing, to the report and the ledger; `over`:
/// whether the ledger says it passes a per-user limit. Answers the id
/// placed, if it was.
fn record_placed(
    u: UserId,
    r: Result<Order, Error>,
    over: bool,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) -> Option<OrderId> {
    match (&r, over) {
        (Ok(order), true) => report.violations.push(format!(
            "order {} of user {u} passed a per-user limit",
            order.id
        )),
        (Err(e), false) if code(e) == "PURCHASE_LIMIT_EXCEEDED" => report
            .violations
            .push(format!("order of user {u} refused under its limit: {e}")),
        _ => {}
    }
    match r {
        Err(e) if code(&e) == "PURCHASE_LIMIT_EXCEEDED" => report.orders.rejected_over_limit += 1,
        Ok(order) => {
            report.orders.placed += 1;
            let id = order.id;
            ledger.status.insert(order.id, order.status);
            ledger.orders.insert(order.id, order);
            return Some(id);
        }
        Err(e) if code(&e) == "OUT_OF_STOCK" => report.orders.rejected_out_of_stock += 1,
        Err(e) => {
            report.orders.rejected_other += 1;
            report
                .violations
                .push(format!("order of user {u} refused unexpectedly: {e}"));
        }
    }
    None
}

pub(crate) async fn pay_all(
    engine: &Engine,
    orders: &[OrderId],
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) {
    let results = join_all(orders.iter().map(|id| engine.pay_order(*id, None))).await;
    for (id, r) in orders.iter().zip(results) {
        match r {
            Ok(o) => {
                report.orders.paid += 1;
                report.revenue_krw += o.pay_amount.0;
                report.discounts_krw += o.discount_amount.0;
                if o.user_coupon_id.is_some() {
                    report.coupons.used_in_paid_orders += 1;
                }
                *ledger.paid.entry(o.user_id).or_default() += o.pay_amount.0;
                for l in &o.items {
                    *ledger.sold.entry(l.product_id).or_default() += l.quantity;
                }
                ledger.status.insert(o.id, o.status);
            }
            Err(e) if code(&e) == "INSUFFICIENT_BALANCE" => {
                report.orders.failed_insufficient_balance += 1;
                ledger.status.insert(*id, OrderStatus::Failed);
            }
            Err(e) => report
                .violations
                .push(format!("payment of order {id} failed unexpectedly: {e}")),
        }
    }
}

/// Refunds a seeded share of the paid orders, whole or one unit of their
/// first line; some are asked a second (whole) refund at the same time.
pub(crate) async fn refund_some(
    engine: &Engine,
    rng: &mut Rng,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) -> Step<()> {
    let asks = refund_asks(rng, ledger);
    let answers = join_all(
        asks.iter()
            .map(|(id, r)| engine.refund_order(*id, r.clone(), None)),
    )
    .await;
    let mut refunded = Vec::new();
    for ((id, _), answer) in asks.iter().zip(answers) {
        if record_refund(*id, answer, report, ledger) {
            refunded.push(*id);
        }
    }
    for id in refunded {
        // Answers of refunds racing on one order come in any order: read the last state.
        let o = engine.order(id).await?;
        ledger.status.insert(id, o.status);
        ledger.orders.insert(id, o);
    }
    Ok(())
}

/// The refunds to ask: of the paid orders, the seeded share, each whole or
/// of one unit of its first line, some asked again whole.
fn refund_asks(rng: &mut Rng, ledger: &Ledger) -> Vec<(OrderId, RefundRequest)> {
    let mut asks: Vec<(OrderId, RefundRequest)> = Vec::new();
    for (id, status) in &ledger.status {
        if *status != OrderStatus::Paid || !rng.percent(REFUND_PCT) {
            continue;
        }
        let Some(placed) = ledger.orders.get(id) else {
            continue;
        };
        let request = if rng.percent(REFUND_WHOLE_PCT) {
            RefundRequest::default()
        } else {
            RefundRequest {
                items: Some(vec![RefundLine {
                    product_id: placed.items[0].product_id,
                    quantity: 1,
                }]),
                reason: Some("one unit damaged".into()),
            }
        };
        asks.push((*id, request));
        if rng.percent(REFUND_TWICE_PCT) {
            asks.push((*id, RefundRequest::default()));
        }
    }
    asks
}

/// One refund's answer, to the report and the ledger. Answers whether the
/// order was refunded.
fn record_refund(
    id: OrderId,
    answer: Result<Order, Error>,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) -> bool {
    match answer {
        Ok(o) => {
            let Some(refund) = o.refunds.last() else {
                report
                    .violations
                    .push(format!("refund of {id} answered without one"));
                return false;
            };
            report.orders.refunds += 1;
            report.refunded_krw += refund.amount.0;
            *ledger.refunded.entry(o.user_id).or_default() += refund.amount.0;
            for l in &refund.items {
                if let Some(sold) = ledger.sold.get_mut(&l.product_id) {
                    *sold = sold.saturating_sub(l.quantity);
                }
            }
            let number = o.refunds.len() as u32;
            ledger
                .refund_events
                .push(crate::domain::platform::order_refunded_id(o.id, number));
            true
        }
        Err(e) if matches!(code(&e), "ORDER_NOT_REFUNDABLE" | "REFUND_EXCEEDS_ORDER") => {
            report.orders.refunds_refused += 1;
            false
        }
        Err(e) => {
            report
                .violations
                .push(format!("refund of order {id} failed unexpectedly: {e}"));
            false
        }
    }
}
