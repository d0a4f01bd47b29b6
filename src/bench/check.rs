//! The invariant check after a run.
//!
//! Embedded: the engine is shut down, the store recovered from disk
//! (`recover_store`), and the recovered [`World`] must satisfy every
//! invariant (`World::violations`) *and* hold every effect the run saw
//! acknowledged. Over HTTP only what the API shows can be checked: stock,
//! balances and coupons left, against the same tallies.
//!
//! A read over HTTP that could not reach the server (refused, reset, no
//! answer) is reported apart, as unreachable: it neither passes nor
//! violates anything.
//!
//! Money: each user's balance = charges − payments + refunds acknowledged;
//! stock: each product's units = stocked − placed + returned + refunded,
//! and sold = paid − refunded. Each order seen paid is recovered paid, or
//! refunded if its refund was acknowledged.
//!
//! With no unknown outcome the tallies are exact (`==`); otherwise an
//! operation may have happened without its answer arriving, so only
//! "every acknowledgement is there" (`>=`) is demanded.

use crate::bench::target::{OpError, Target};
use crate::bench::workload::{Fixture, Tally, STOCK};
use crate::domain::ids::{CouponId, OrderId};
use crate::domain::order::OrderStatus;
use crate::domain::world::World;
use futures_util::stream::{self, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};

fn get(v: &[AtomicU64], i: usize) -> u64 {
    v[i].load(Ordering::Relaxed)
}

/// The orders a run saw paid, by what each must be recovered as.
#[derive(Clone, Debug, Default)]
pub struct SettledOrders {
    /// Paid, and not refunded since.
    pub paid: Vec<OrderId>,
    /// Paid, then refunded whole.
    pub refunded: Vec<OrderId>,
    /// Paid, then asked a refund whose answer never came: either.
    pub refund_unknown: Vec<OrderId>,
}

/// What an order seen paid may be recovered as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Paid,
    Refunded,
    PaidOrRefunded,
}

impl Expect {
    fn allows(self, status: OrderStatus) -> bool {
        matches!(
            (self, status),
            (Expect::Paid | Expect::PaidOrRefunded, OrderStatus::Paid)
                | (
                    Expect::Refunded | Expect::PaidOrRefunded,
                    OrderStatus::Refunded
                )
        )
    }

    /// The same, of a status as `API.md` spells it.
    fn allows_name(self, status: &str) -> bool {
        match status {
            "paid" => self.allows(OrderStatus::Paid),
            "refunded" => self.allows(OrderStatus::Refunded),
            _ => false,
        }
    }
}

impl SettledOrders {
    /// Orders seen paid, none refunded.
    pub fn paid(ids: Vec<OrderId>) -> SettledOrders {
        SettledOrders {
            paid: ids,
            ..SettledOrders::default()
        }
    }

    pub fn len(&self) -> usize {
        self.paid.len() + self.refunded.len() + self.refund_unknown.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expectations(&self) -> impl Iterator<Item = (OrderId, Expect)> + '_ {
        fn with(ids: &[OrderId], e: Expect) -> impl Iterator<Item = (OrderId, Expect)> + '_ {
            ids.iter().map(move |id| (*id, e))
        }
        with(&self.paid, Expect::Paid)
            .chain(with(&self.refunded, Expect::Refunded))
            .chain(with(&self.refund_unknown, Expect::PaidOrRefunded))
    }
}

/// A user's balance as the acknowledgements say: charges − payments + refunds.
fn expected_balance(tally: &Tally, i: usize) -> Option<u64> {
    get(&tally.charged, i)
        .checked_sub(get(&tally.paid, i))?
        .checked_add(get(&tally.refunded, i))
}

/// A product's stock as the acknowledgements say.
fn expected_stock(tally: &Tally, i: usize) -> u64 {
    let (placed, returned, refunded) = (
        get(&tally.placed_units, i),
        get(&tally.returned_units, i),
        get(&tally.refunded_units, i),
    );
    STOCK - placed + returned + refunded
}

/// Checks a recovered world against the run's tallies.
pub fn check_world(
    world: &World,
    fixture: &Fixture,
    tally: &Tally,
    orders: &SettledOrders,
) -> Vec<String> {
    let mut out = world.violations();
    let exact = tally.unknown.load(Ordering::Relaxed) == 0;
    check_balances(world, fixture, tally, exact, &mut out);
    check_units(world, fixture, tally, exact, &mut out);
    for (id, expect) in orders.expectations() {
        match world.orders.get(&id).map(|o| o.status) {
            Some(status) if expect.allows(status) => {}
            other => out.push(format!(
                "order {id}: {expect:?} acknowledged but recovered as {other:?}"
            )),
        }
    }
    check_coupon(world, fixture, tally, exact, &mut out);
    out
}

/// Every user recovered, with the balance its acknowledgements say.
fn check_balances(
    world: &World,
    fixture: &Fixture,
    tally: &Tally,
    exact: bool,
    out: &mut Vec<String>,
) {
    for (i, id) in fixture.users.iter().enumerate() {
        let Some(u) = world.users.get(id.index()) else {
            out.push(format!("user {id} was acknowledged but is not recovered"));
            continue;
        };
        let (charged, paid) = (get(&tally.charged, i), get(&tally.paid, i));
        let refunded = get(&tally.refunded, i);
        let expected = expected_balance(tally, i);
        if charged.checked_sub(paid).is_none() {
            out.push(format!("user {id}: paid {paid} but only {charged} charged"));
        }
        if exact && Some(u.balance.0) != expected {
            out.push(format!(
                "user {id}: balance {} but charges {charged} - payments {paid} + refunds {refunded} acknowledged",
                u.balance.0
            ));
        }
    }
}

/// Every product recovered, its units in stock, reserved and sold as its
/// acknowledgements say.
fn check_units(
    world: &World,
    fixture: &Fixture,
    tally: &Tally,
    exact: bool,
    out: &mut Vec<String>,
) {
    for (i, id) in fixture.products.iter().enumerate() {
        let Some(p) = world.products.get(id.index()) else {
            out.push(format!(
                "product {id} was acknowledged but is not recovered"
            ));
            continue;
        };
        let (placed, returned, sold, refunded) = (
            get(&tally.placed_units, i),
            get(&tally.returned_units, i),
            get(&tally.sold_units, i),
            get(&tally.refunded_units, i),
        );
        let reserved = placed.saturating_sub(returned + sold);
        let kept = sold.saturating_sub(refunded);
        let units_ok = if exact {
            p.sold == kept && p.reserved == reserved && p.stock == expected_stock(tally, i)
        } else {
            // A refund whose answer never came may have taken its unit back.
            p.sold.saturating_add(get(&tally.refund_unknown_units, i)) >= kept
        };
        if !units_ok {
            out.push(format!(
                "product {id}: stock {} reserved {} sold {}, but acknowledged: placed {placed}, returned {returned}, sold {sold}, refunded {refunded}",
                p.stock, p.reserved, p.sold
            ));
        }
    }
}

/// The fixture's coupon recovered, with as many issued as acknowledged
/// and no more than its quantity.
fn check_coupon(
    world: &World,
    fixture: &Fixture,
    tally: &Tally,
    exact: bool,
    out: &mut Vec<String>,
) {
    let Some((coupon, quantity)) = fixture.coupon else {
        return;
    };
    let issued_ok = tally.issued.load(Ordering::Relaxed);
    match world.campaigns.get(coupon.index()) {
        None => out.push(format!("coupon {coupon} is not recovered")),
        Some(c) => {
            let issued = c.issued.len();
            if (exact && issued != issued_ok) || issued < issued_ok || issued > quantity {
                out.push(format!(
                    "coupon {coupon}: {issued} issued of {quantity}, {issued_ok} acknowledged"
                ));
            }
        }
    }
}

/// How many paid orders a check over HTTP reads back at most.
const PAID_SAMPLE_MAX: usize = 2_000;
const CHECK_IN_FLIGHT: usize = 64;
/// Checks that could not reach the server, listed one by one at most.
const UNREACHABLE_LISTED_MAX: usize = 20;

/// What a check over HTTP found.
#[derive(Debug, Default)]
pub struct RemoteCheck {
    /// What the server answered that contradicts the acknowledgements.
    pub violations: Vec<String>,
    /// Checks that could not reach the server (refused, reset, no answer):
    /// neither passed nor violated. At most [`UNREACHABLE_LISTED_MAX`]
    /// listed, then how many more.
    pub unreachable: Vec<String>,
}

/// One check's finding.
enum Finding {
    Fine,
    Violated(String),
    Unreachable(String),
}

/// A read that failed: a violation if the server answered, else unreachable.
fn failed(what: String, e: &OpError) -> Finding {
    if e.is_unreachable() {
        Finding::Unreachable(format!("{what}: could not reach the server ({e})"))
    } else {
        Finding::Violated(format!("{what}: cannot read: {e}"))
    }
}

impl RemoteCheck {
    fn add(&mut self, findings: Vec<Finding>) {
        for f in findings {
            match f {
                Finding::Fine => {}
                Finding::Violated(v) => self.violations.push(v),
                Finding::Unreachable(u) => self.unreachable.push(u),
            }
        }
    }

    fn bounded(mut self) -> RemoteCheck {
        let n = self.unreachable.len();
        if n > UNREACHABLE_LISTED_MAX {
            self.unreachable.truncate(UNREACHABLE_LISTED_MAX);
            self.unreachable.push(format!(
                "... and {} more checks that could not reach the server",
                n - UNREACHABLE_LISTED_MAX
            ));
        }
        self
    }
}

/// Checks a server through its API against the run's tallies. A check
/// that cannot reach the server is reported as unreachable, never as a
/// violation: nothing is known from it.
pub async fn check_remote(
    target: &Target,
    fixture: &Fixture,
    tally: &Tally,
    orders: &SettledOrders,
) -> RemoteCheck {
    let exact = tally.unknown.load(Ordering::Relaxed) == 0;
    let mut out = RemoteCheck::default();
    out.add(remote_stock(target, fixture, tally, exact).await);
    out.add(remote_balances(target, fixture, tally, exact).await);
    if let Some((coupon, quantity)) = fixture.coupon {
        let finding = remote_coupon(target, coupon, quantity, tally, exact).await;
        out.add(vec![finding]);
    }
    out.add(remote_orders(target, orders).await);
    out.bounded()
}

/// Each product's stock as the server shows it, against the tallies.
async fn remote_stock(
    target: &Target,
    fixture: &Fixture,
    tally: &Tally,
    exact: bool,
) -> Vec<Finding> {
    stream::iter(fixture.products.iter().enumerate())
        .map(|(i, id)| async move {
            let (placed, returned) = (get(&tally.placed_units, i), get(&tally.returned_units, i));
            let refunded = get(&tally.refunded_units, i);
            let expected = expected_stock(tally, i);
            // Unknown places may have taken units, unknown refunds given some back.
            let unknown = get(&tally.refund_unknown_units, i);
            match target.product_stock(*id).await {
                Ok(s) if s == expected || (!exact && s <= expected.saturating_add(unknown)) => {
                    Finding::Fine
                }
                Ok(s) => Finding::Violated(format!(
                    "product {id}: stock {s}, expected {expected} (placed {placed}, returned {returned}, refunded {refunded})"
                )),
                Err(e) => failed(format!("product {id}"), &e),
            }
        })
        .buffer_unordered(CHECK_IN_FLIGHT)
        .filter(|f| std::future::ready(!matches!(f, Finding::Fine)))
        .collect()
        .await
}

/// Each user's balance as the server shows it, against the tallies.
async fn remote_balances(
    target: &Target,
    fixture: &Fixture,
    tally: &Tally,
    exact: bool,
) -> Vec<Finding> {
    stream::iter(fixture.users.iter().enumerate())
        .map(|(i, id)| async move {
            let expected = expected_balance(tally, i);
            match target.balance(*id).await {
                // A negative balance cannot even be read as a u64.
                Ok(b) if !exact || Some(b.0) == expected => Finding::Fine,
                Ok(b) => {
                    Finding::Violated(format!("user {id}: balance {}, expected {expected:?}", b.0))
                }
                Err(e) => failed(format!("user {id}"), &e),
            }
        })
        .buffer_unordered(CHECK_IN_FLIGHT)
        .filter(|f| std::future::ready(!matches!(f, Finding::Fine)))
        .collect()
        .await
}

/// The coupons left of the fixture's coupon, against those issued.
async fn remote_coupon(
    target: &Target,
    coupon: CouponId,
    quantity: u64,
    tally: &Tally,
    exact: bool,
) -> Finding {
    let issued_ok = tally.issued.load(Ordering::Relaxed);
    match target.coupon_remaining(coupon).await {
        Ok(left) => {
            let issued = quantity.checked_sub(left);
            let fine = match issued {
                Some(n) if exact => n == issued_ok,
                Some(n) => n >= issued_ok,
                None => false,
            };
            if fine {
                Finding::Fine
            } else {
                Finding::Violated(format!(
                    "coupon {coupon}: {left} left of {quantity}, {issued_ok} acknowledged"
                ))
            }
        }
        Err(e) => failed(format!("coupon {coupon}"), &e),
    }
}

/// A sample of the orders seen paid (at most [`PAID_SAMPLE_MAX`], evenly
/// spread), each with a status it may have.
async fn remote_orders(target: &Target, orders: &SettledOrders) -> Vec<Finding> {
    let step = (orders.len() / PAID_SAMPLE_MAX).max(1);
    let sample: Vec<(OrderId, Expect)> = orders.expectations().step_by(step).collect();
    stream::iter(sample)
        .map(|(id, expect)| async move {
            match target.order_status(id).await {
                Ok(s) if expect.allows_name(&s) => Finding::Fine,
                Ok(s) => Finding::Violated(format!(
                    "order {id}: {expect:?} acknowledged but status {s}"
                )),
                Err(e) => failed(format!("order {id}"), &e),
            }
        })
        .buffer_unordered(CHECK_IN_FLIGHT)
        .filter(|f| std::future::ready(!matches!(f, Finding::Fine)))
        .collect()
        .await
}
