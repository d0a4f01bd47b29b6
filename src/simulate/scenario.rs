//! The flash sale's phases in order, each a step of the progress bar.

use crate::bench::rng::Rng;
use crate::domain::coupon::Discount;
use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::order::OrderStatus;
use crate::engine::{Engine, Error, ManualClock, NewCoupon};
use crate::simulate::actors::{
    charge_all, create_products, pay_all, place_wave, race_for_coupon, refund_some,
};
use crate::simulate::check::check_ranking;
use crate::simulate::ledger::Ledger;
use crate::simulate::report::{RankedProduct, SimulationReport};
use crate::simulate::SimulateArgs;
use futures_util::future::join_all;
use indicatif::ProgressBar;

/// The sale starts at this instant on the simulated clock.
pub(crate) const START_RFC3339: &str = "2026-11-24T09:00:00Z";
pub(crate) const ORDER_TTL_MS: u64 = 600_000;
pub(crate) const DISCOUNT_PERCENT: u8 = 10;
/// Share of users (percent) who race for the coupon, ask twice, order, ...
pub(crate) const ASK_COUPON_PCT: u64 = 80;
pub(crate) const ASK_TWICE_PCT: u64 = 10;
pub(crate) const ORDER_PCT: u64 = 90;
pub(crate) const USE_COUPON_PCT: u64 = 70;
pub(crate) const PAY_PCT: u64 = 65;
pub(crate) const CANCEL_PCT: u64 = 15;
pub(crate) const SECOND_WAVE_PCT: u64 = 20;
pub(crate) const POOR_USER_PCT: u64 = 25;
/// Share of paid orders refunded; of those, refunded whole (else one unit),
/// and asked twice at once (the second whole).
pub(crate) const REFUND_PCT: u64 = 15;
pub(crate) const REFUND_WHOLE_PCT: u64 = 50;
pub(crate) const REFUND_TWICE_PCT: u64 = 20;
pub(crate) const PHASES: u64 = 10;
/// Every `LIMITED_EVERY`th product allows `LIMIT_PER_USER` units per user.
pub(crate) const LIMITED_EVERY: usize = 4;
pub(crate) const LIMIT_PER_USER: u64 = 2;
pub(crate) type Step<T> = Result<T, crate::CliError>;

/// Phases 1–9 but the wait for delivery; answers the campaign and the
/// ranking's violations.
pub(crate) async fn scenario(
    engine: &Engine,
    clock: &ManualClock,
    args: &SimulateArgs,
    pb: &ProgressBar,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) -> Step<(CouponId, Vec<String>)> {
    let mut rng = Rng::new(args.seed);
    pb.set_message("setting up products, the campaign and users");
    let (products, coupon, users) = set_up(engine, args, &mut rng, report, ledger).await?;
    pb.inc(1);

    pb.set_message("users charge their balance");
    charge_all(engine, &users, &mut rng, ledger).await?;
    pb.inc(1);

    pb.set_message("users race for the coupon");
    race_for_coupon(engine, coupon, args, &users, &mut rng, report, ledger).await;
    pb.inc(1);

    pb.set_message("users race to order scarce products");
    let wave = some_of(&users, &mut rng, ORDER_PCT);
    let placed = place_wave(engine, &wave, &products, &mut rng, true, report, ledger).await;
    pb.inc(1);

    pb.set_message("orders are paid, cancelled or left pending");
    pay_or_cancel(engine, placed, &mut rng, report, ledger).await;
    pb.inc(1);

    pb.set_message("a second wave buys what came back");
    let second = some_of(&users, &mut rng, SECOND_WAVE_PCT);
    let placed = place_wave(engine, &second, &products, &mut rng, false, report, ledger).await;
    pay_all(engine, &placed, report, ledger).await;
    pb.inc(1);

    pb.set_message("an operator refunds some paid orders");
    refund_some(engine, &mut rng, report, ledger).await?;
    pb.inc(1);

    pb.set_message("the clock moves past the order TTL");
    expire_pending(engine, clock, report, ledger).await?;
    pb.inc(1);

    pb.set_message("the ranking is refreshed");
    let ranking = rank(engine, report, ledger).await?;
    pb.inc(1);
    Ok((coupon, ranking))
}

/// Phase 1: products (some limited), the coupon campaign, and the users.
async fn set_up(
    engine: &Engine,
    args: &SimulateArgs,
    rng: &mut Rng,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) -> Step<(Vec<ProductId>, CouponId, Vec<UserId>)> {
    let products = create_products(engine, args, rng, ledger).await?;
    let coupon = engine
        .create_coupon(
            NewCoupon {
                name: "flash-sale".into(),
                discount: Discount::Percent {
                    percent: DISCOUNT_PERCENT,
                },
                quantity: args.coupon_quantity,
                expires_at: Some(engine.now().plus_ms(86_400_000)),
                terms: Default::default(),
            },
            None,
        )
        .await?
        .id;
    let names: Vec<String> = (0..args.users).map(|i| format!("shopper-{i}")).collect();
    let users = join_all(names.iter().map(|n| engine.create_user(n, None)))
        .await
        .into_iter()
        .map(|r| r.map(|u| u.id))
        .collect::<Result<Vec<UserId>, Error>>()?;
    report.units_stocked = args.stock * products.len() as u64;
    Ok((products, coupon, users))
}

/// A seeded `percent` share of `users`.
fn some_of(users: &[UserId], rng: &mut Rng, percent: u64) -> Vec<UserId> {
    users
        .iter()
        .copied()
        .filter(|_| rng.percent(percent))
        .collect()
}

/// Phase 5: each placed order is paid, cancelled or left to expire (seeded);
/// payments and cancels run at once.
async fn pay_or_cancel(
    engine: &Engine,
    placed: Vec<OrderId>,
    rng: &mut Rng,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) {
    let mut pays = Vec::new();
    let mut cancels = Vec::new();
    for id in placed {
        match rng.below(100) {
            n if n < PAY_PCT => pays.push(id),
            n if n < PAY_PCT + CANCEL_PCT => cancels.push(id),
            _ => {} // left to expire
        }
    }
    let cancel = join_all(cancels.iter().map(|id| engine.cancel_order(*id, None)));
    let (cancelled, ()) = tokio::join!(cancel, pay_all(engine, &pays, report, ledger));
    for (id, r) in cancels.iter().zip(cancelled) {
        match r {
            Ok(o) => {
                ledger.status.insert(o.id, o.status);
                report.orders.cancelled += 1;
            }
            Err(e) => report
                .violations
                .push(format!("cancel of pending order {id} refused: {e}")),
        }
    }
}

/// Phase 8: the clock moves past the order TTL and due orders expire.
async fn expire_pending(
    engine: &Engine,
    clock: &ManualClock,
    report: &mut SimulationReport,
    ledger: &mut Ledger,
) -> Step<()> {
    clock.advance_ms(ORDER_TTL_MS + 1_000);
    engine.expire_due_orders().await?;
    let pending: Vec<OrderId> = ledger
        .status
        .iter()
        .filter(|(_, s)| **s == OrderStatus::Pending)
        .map(|(id, _)| *id)
        .collect();
    for id in pending {
        // The periodic sweep may have expired some first: read what happened.
        let o = engine.order(id).await?;
        ledger.status.insert(id, o.status);
        if o.status == OrderStatus::Expired {
            report.orders.expired += 1;
        }
    }
    Ok(())
}

/// Phase 9: the ranking is refreshed; answers its violations.
async fn rank(
    engine: &Engine,
    report: &mut SimulationReport,
    ledger: &Ledger,
) -> Step<Vec<String>> {
    let top = engine.refresh_stats().await?;
    report.top5 = top
        .items
        .iter()
        .map(|i| RankedProduct {
            rank: i.rank,
            product_id: i.product_id,
            sold_quantity: i.sold_quantity,
        })
        .collect();
    let ranking = check_ranking(&report.top5, &ledger.sold);
    report.units_sold = ledger.sold.values().sum();
    Ok(ranking)
}
