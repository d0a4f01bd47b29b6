//! The workloads: what is set up before measuring, and what one operation does.
//!
//! Every acknowledged effect is tallied (charges and payments per user,
//! units placed, returned and sold per product, coupons issued, ids of paid
//! orders) so that, after the run, the invariant check can demand that
//! every acknowledgement is in the recovered state — "acknowledged means
//! durable" is checked, not assumed.

use crate::bench::rng::Rng;
use crate::bench::target::{OpError, OpResult, Target};
use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::money::Krw;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
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
    /// 60% product reads, 20% place+pay, 10% charges, 10% coupon issues.
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
}

impl OpKind {
    pub const ALL: [OpKind; 4] = [
        OpKind::ReadProduct,
        OpKind::OrderPay,
        OpKind::Charge,
        OpKind::IssueCoupon,
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
            issued: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            coupon_cursor: AtomicUsize::new(0),
        }
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

/// What a worker did in one operation.
pub enum Outcome {
    Done {
        kind: OpKind,
        result: Result<(), OpError>,
        paid: Option<OrderId>,
    },
    /// No more work of this kind exists (every user has asked for a coupon).
    Exhausted,
}

pub fn pick(workload: Workload, rng: &mut Rng) -> OpKind {
    match workload {
        Workload::Charge => OpKind::Charge,
        Workload::OrderPay | Workload::HotProduct => OpKind::OrderPay,
        Workload::CouponFlash => OpKind::IssueCoupon,
        Workload::Mixed => match rng.below(10) {
            0..=5 => OpKind::ReadProduct,
            6 | 7 => OpKind::OrderPay,
            8 => OpKind::Charge,
            _ => OpKind::IssueCoupon,
        },
    }
}

/// Runs one operation of `kind`, tallying what was acknowledged.
pub async fn execute(
    target: &Target,
    fixture: &Fixture,
    tally: &Tally,
    workload: Workload,
    kind: OpKind,
    rng: &mut Rng,
) -> Outcome {
    let user_index = rng.below(fixture.users.len() as u64) as usize;
    let product_index = rng.below(fixture.products.len() as u64) as usize;
    let mut paid = None;
    let result = match kind {
        OpKind::ReadProduct => {
            let r = target.product_stock(fixture.products[product_index]).await;
            r.map(drop)
        }
        OpKind::Charge => {
            let r = target
                .charge(fixture.users[user_index], CHARGE_AMOUNT)
                .await;
            if r.is_ok() {
                tally.charged[user_index].fetch_add(CHARGE_AMOUNT.0, Ordering::Relaxed);
            }
            r
        }
        OpKind::OrderPay => {
            let r = order_pay(target, fixture, tally, user_index, product_index).await;
            r.map(|id| paid = Some(id))
        }
        OpKind::IssueCoupon => {
            let Some((coupon, _)) = fixture.coupon else {
                return Outcome::Exhausted;
            };
            let user_index = if workload == Workload::CouponFlash {
                let next = tally.coupon_cursor.fetch_add(1, Ordering::Relaxed);
                if next >= fixture.users.len() {
                    return Outcome::Exhausted;
                }
                next
            } else {
                user_index
            };
            let r = target.issue_coupon(coupon, fixture.users[user_index]).await;
            if r.is_ok() {
                tally.issued.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
    };
    tally.note(&result);
    Outcome::Done { kind, result, paid }
}

async fn order_pay(
    target: &Target,
    fixture: &Fixture,
    tally: &Tally,
    user_index: usize,
    product_index: usize,
) -> OpResult<OrderId> {
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
            Ok(placed.order_id)
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
