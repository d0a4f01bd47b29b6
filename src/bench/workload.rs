//! The workloads: what is set up before measuring, and what one operation does.
//!
//! Every acknowledged effect is tallied (charges, payments and refunds per
//! user, units placed, returned, sold and refunded per product, coupons
//! issued, ids of paid and refunded orders) so that, after the run, the
//! invariant check can demand that every acknowledgement is in the
//! recovered state — "acknowledged means durable" is checked, not assumed.

use crate::bench::rng::Rng;
use crate::bench::target::{OpError, OpResult, Target};
use crate::check::{Acknowledged, Issued, Units, Wallet};
use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::money::Krw;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[value(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Charge a random user's balance.
    Charge,
    /// Place a one-line order on a random product, then pay it.
    OrderPay,
    /// Place and pay, every order on the same product.
    HotProduct,
    /// Every user asks once for a coupon of one campaign.
    CouponFlash,
    /// 55% product reads, 20% place+pay, 10% charges, 10% coupon issues,
    /// 5% whole refunds of paid orders (admin).
    Mixed,
}

impl Workload {
    pub fn default_users(self) -> usize {
        match self {
            // One issue per user: the run needs as many users as issues.
            Workload::CouponFlash => 300_000,
            _ => 10_000,
        }
    }

    pub fn default_products(self) -> usize {
        match self {
            Workload::HotProduct => 1,
            Workload::Charge | Workload::CouponFlash => 0,
            _ => 1_000,
        }
    }

    pub(crate) fn needs_coupon(self) -> bool {
        matches!(self, Workload::CouponFlash | Workload::Mixed)
    }

    /// Whether the workload refunds paid orders.
    pub(crate) fn refunds(self) -> bool {
        self == Workload::Mixed
    }

    pub(crate) fn needs_balance(self) -> bool {
        matches!(
            self,
            Workload::OrderPay | Workload::HotProduct | Workload::Mixed
        )
    }
}

/// What one operation was; each kind has its own latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    ReadProduct,
    /// Place and pay: two requests, one paid order.
    OrderPay,
    Charge,
    IssueCoupon,
    /// A whole refund of an order the worker paid (one request, admin).
    Refund,
}

impl OpKind {
    pub const ALL: [OpKind; 5] = [
        OpKind::ReadProduct,
        OpKind::OrderPay,
        OpKind::Charge,
        OpKind::IssueCoupon,
        OpKind::Refund,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            OpKind::ReadProduct => "read_product",
            OpKind::OrderPay => "order_pay",
            OpKind::Charge => "charge",
            OpKind::IssueCoupon => "issue_coupon",
            OpKind::Refund => "refund",
        }
    }

    /// Requests the operation makes when it succeeds.
    pub fn requests(self) -> u64 {
        match self {
            OpKind::OrderPay => 2,
            _ => 1,
        }
    }
}

pub const PRICE: Krw = Krw(1_000);
/// Per-request charge limit of `API.md`: one setup charge pays 10,000 orders.
pub const SETUP_CHARGE: Krw = Krw(10_000_000);
pub const CHARGE_AMOUNT: Krw = Krw(100);
/// Enough that no run of any length sells out.
pub const STOCK: u64 = 1_000_000_000;
const SETUP_IN_FLIGHT: usize = 256;
/// Paid orders a worker keeps for its refunds; past this the oldest is
/// forgotten (it stays paid).
pub const REFUNDABLE_MAX: usize = 64;

/// The entities a run works on, made before measuring.
pub struct Fixture {
    pub users: Vec<UserId>,
    pub products: Vec<ProductId>,
    pub coupon: Option<(CouponId, u64)>,
}

/// Acknowledged effects, shared by every worker.
pub struct Tally {
    pub charged: Vec<AtomicU64>,
    pub paid: Vec<AtomicU64>,
    pub placed_units: Vec<AtomicU64>,
    pub returned_units: Vec<AtomicU64>,
    pub sold_units: Vec<AtomicU64>,
    /// KRW refunded to each user, and units refunded of each product.
    pub refunded: Vec<AtomicU64>,
    pub refunded_units: Vec<AtomicU64>,
    /// Units of refunds whose answer never came: back in stock, or not.
    pub refund_unknown_units: Vec<AtomicU64>,
    pub issued: AtomicU64,
    /// Operations whose outcome is unknown (timeouts, shutdown).
    pub unknown: AtomicU64,
    /// Next user to ask for a coupon in `coupon_flash`.
    pub coupon_cursor: AtomicUsize,
}

fn zeros(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Tally {
    pub fn new(users: usize, products: usize) -> Tally {
        Tally {
            charged: zeros(users),
            paid: zeros(users),
            placed_units: zeros(products),
            returned_units: zeros(products),
            sold_units: zeros(products),
            refunded: zeros(users),
            refunded_units: zeros(products),
            refund_unknown_units: zeros(products),
            issued: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            coupon_cursor: AtomicUsize::new(0),
        }
    }

    /// What the run acknowledged, by id, for the check after it; its
    /// orders come from the workers.
    pub fn acknowledged(&self, fixture: &Fixture) -> Acknowledged {
        let get = |v: &[AtomicU64], i: usize| v[i].load(Ordering::Relaxed);
        let mut acked = Acknowledged {
            unknown: self.unknown.load(Ordering::Relaxed),
            ..Acknowledged::default()
        };
        for (i, id) in fixture.users.iter().enumerate() {
            *acked.user(*id) = Wallet {
                charged: get(&self.charged, i),
                paid: get(&self.paid, i),
                refunded: get(&self.refunded, i),
            };
        }
        for (i, id) in fixture.products.iter().enumerate() {
            *acked.product(*id) = Units {
                stocked: STOCK,
                placed: get(&self.placed_units, i),
                returned: get(&self.returned_units, i),
                sold: get(&self.sold_units, i),
                refunded: get(&self.refunded_units, i),
                refund_unknown: get(&self.refund_unknown_units, i),
            };
        }
        if let Some((id, quantity)) = fixture.coupon {
            *acked.coupon(id) = Issued {
                quantity,
                issued: self.issued.load(Ordering::Relaxed),
            };
        }
        acked
    }

    fn note<T>(&self, r: &OpResult<T>) {
        if matches!(r, Err(e) if e.unknown_outcome) {
            self.unknown.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Creates users, products and the campaign; charges users that will pay.
pub async fn setup(
    target: &Target,
    workload: Workload,
    users: usize,
    products: usize,
    coupon_quantity: Option<u64>,
) -> OpResult<(Fixture, Tally)> {
    let user_ids: Vec<UserId> = stream::iter(0..users)
        .map(|i| async move { target.create_user(&format!("bench-user-{i}")).await })
        .buffered(SETUP_IN_FLIGHT)
        .try_collect()
        .await?;
    let product_ids: Vec<ProductId> = stream::iter(0..products)
        .map(|i| async move {
            target
                .create_product(&format!("bench-product-{i}"), PRICE, STOCK)
                .await
        })
        .buffered(SETUP_IN_FLIGHT)
        .try_collect()
        .await?;
    let tally = Tally::new(users, products);
    if workload.needs_balance() {
        let tally = &tally;
        stream::iter(user_ids.iter().enumerate())
            .map(|(i, id)| async move {
                target.charge(*id, SETUP_CHARGE).await?;
                tally.charged[i].fetch_add(SETUP_CHARGE.0, Ordering::Relaxed);
                Ok::<_, OpError>(())
            })
            .buffer_unordered(SETUP_IN_FLIGHT)
            .try_collect::<()>()
            .await?;
    }
    let coupon = if workload.needs_coupon() {
        let quantity = coupon_quantity.unwrap_or(users.max(1) as u64);
        let id = target
            .create_coupon("bench-flash", Krw(100), quantity)
            .await?;
        Some((id, quantity))
    } else {
        None
    };
    let fixture = Fixture {
        users: user_ids,
        products: product_ids,
        coupon,
    };
    Ok((fixture, tally))
}

/// A paid order a worker may refund later.
#[derive(Clone, Copy, Debug)]
pub struct PaidOrder {
    pub order_id: OrderId,
    pub user_index: usize,
    pub product_index: usize,
    pub pay_amount: Krw,
}

/// A worker's paid orders not yet refunded, oldest first: its refunds take
/// from here, so no two workers ask a refund of the same order.
#[derive(Default)]
pub struct Refundable(VecDeque<PaidOrder>);

impl Refundable {
    fn keep(&mut self, order: PaidOrder) {
        if self.0.len() >= REFUNDABLE_MAX {
            self.0.pop_front();
        }
        self.0.push_back(order);
    }

    fn take(&mut self) -> Option<PaidOrder> {
        self.0.pop_front()
    }
}

/// What became of an order in one operation, for the check after the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Paid(OrderId),
    Refunded(OrderId),
    /// A refund asked whose answer never came: paid or refunded.
    RefundUnknown(OrderId),
}

/// What a worker did in one operation.
pub enum Outcome {
    Done {
        kind: OpKind,
        result: Result<(), OpError>,
        settled: Option<Settled>,
    },
    /// No more work of this kind exists (every user has asked for a coupon).
    Exhausted,
}

pub fn pick(workload: Workload, rng: &mut Rng) -> OpKind {
    match workload {
        Workload::Charge => OpKind::Charge,
        Workload::OrderPay | Workload::HotProduct => OpKind::OrderPay,
        Workload::CouponFlash => OpKind::IssueCoupon,
        Workload::Mixed => match rng.below(20) {
            0..=10 => OpKind::ReadProduct,
            11..=14 => OpKind::OrderPay,
            15 | 16 => OpKind::Charge,
            17 | 18 => OpKind::IssueCoupon,
            _ => OpKind::Refund,
        },
    }
}

/// Runs one operation of `kind`, tallying what was acknowledged. A refund
/// with no paid order of the worker's to take (at the start of a run)
/// places and pays one instead.
pub async fn execute(
    target: &Target,
    fixture: &Fixture,
    tally: &Tally,
    workload: Workload,
    kind: OpKind,
    rng: &mut Rng,
    refundable: &mut Refundable,
) -> Outcome {
    let user_index = rng.below(fixture.users.len() as u64) as usize;
    let product_index = rng.below(fixture.products.len() as u64) as usize;
    if kind == OpKind::Refund {
        if let Some(order) = refundable.take() {
            return refund_whole(target, tally, order).await;
        }
    }
    let kind = match kind {
        OpKind::Refund => OpKind::OrderPay,
        other => other,
    };
    let mut settled = None;
    let result = match kind {
        OpKind::ReadProduct => {
            let r = target.product_stock(fixture.products[product_index]).await;
            r.map(drop)
        }
        OpKind::Charge => charge(target, fixture, tally, user_index).await,
        OpKind::OrderPay | OpKind::Refund => {
            let r = order_pay(target, fixture, tally, user_index, product_index).await;
            r.map(|order| {
                settled = Some(Settled::Paid(order.order_id));
                if workload.refunds() {
                    refundable.keep(order);
                }
            })
        }
        OpKind::IssueCoupon => {
            match issue_coupon(target, fixture, tally, workload, user_index).await {
                Some(r) => r,
                None => return Outcome::Exhausted,
            }
        }
    };
    tally.note(&result);
    Outcome::Done {
        kind,
        result,
        settled,
    }
}

/// Charges the user at `user_index` [`CHARGE_AMOUNT`], tallied if acknowledged.
async fn charge(
    target: &Target,
    fixture: &Fixture,
    tally: &Tally,
    user_index: usize,
) -> Result<(), OpError> {
    let r = target
        .charge(fixture.users[user_index], CHARGE_AMOUNT)
        .await;
    if r.is_ok() {
        tally.charged[user_index].fetch_add(CHARGE_AMOUNT.0, Ordering::Relaxed);
    }
    r
}

/// Issues the fixture's coupon, tallied if acknowledged: to the user at
/// `user_index`, or in a coupon flash to each user in turn. `None` when
/// there is no such work left (no coupon, or every user has asked).
async fn issue_coupon(
    target: &Target,
    fixture: &Fixture,
    tally: &Tally,
    workload: Workload,
    user_index: usize,
) -> Option<Result<(), OpError>> {
    let (coupon, _) = fixture.coupon?;
    let user_index = if workload == Workload::CouponFlash {
        let next = tally.coupon_cursor.fetch_add(1, Ordering::Relaxed);
        if next >= fixture.users.len() {
            return None;
        }
        next
    } else {
        user_index
    };
    let r = target.issue_coupon(coupon, fixture.users[user_index]).await;
    if r.is_ok() {
        tally.issued.fetch_add(1, Ordering::Relaxed);
    }
    Some(r)
}

/// Refunds all of a paid one-line order: its `pay_amount` back to the
/// balance, its unit back to stock.
async fn refund_whole(target: &Target, tally: &Tally, order: PaidOrder) -> Outcome {
    let result = target.refund(order.order_id).await;
    let settled = match &result {
        Ok(()) => {
            tally.refunded[order.user_index].fetch_add(order.pay_amount.0, Ordering::Relaxed);
            tally.refunded_units[order.product_index].fetch_add(1, Ordering::Relaxed);
            Some(Settled::Refunded(order.order_id))
        }
        Err(e) if e.unknown_outcome => {
            tally.refund_unknown_units[order.product_index].fetch_add(1, Ordering::Relaxed);
            Some(Settled::RefundUnknown(order.order_id))
        }
        // Refused: nothing changed, the order stays paid.
        Err(_) => None,
    };
    tally.note(&result);
    Outcome::Done {
        kind: OpKind::Refund,
        result,
        settled,
    }
}

async fn order_pay(
    target: &Target,
    fixture: &Fixture,
    tally: &Tally,
    user_index: usize,
    product_index: usize,
) -> OpResult<PaidOrder> {
    let placed = target
        .place(
            fixture.users[user_index],
            fixture.products[product_index],
            1,
        )
        .await?;
    tally.placed_units[product_index].fetch_add(1, Ordering::Relaxed);
    match target.pay(fixture.users[user_index], placed.order_id).await {
        Ok(()) => {
            tally.sold_units[product_index].fetch_add(1, Ordering::Relaxed);
            tally.paid[user_index].fetch_add(placed.pay_amount.0, Ordering::Relaxed);
            Ok(PaidOrder {
                order_id: placed.order_id,
                user_index,
                product_index,
                pay_amount: placed.pay_amount,
            })
        }
        Err(e) => {
            // A refused payment fails the order and returns its stock.
            if e.code == "INSUFFICIENT_BALANCE" {
                tally.returned_units[product_index].fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
        }
    }
}
