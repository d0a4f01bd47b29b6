//! The check through the HTTP API: only what it shows can be checked
//! (each product's stock, each user's balance, a campaign's coupons left,
//! each order's status), by the rules of [`super`].
//!
//! A read that could not reach the server (refused, reset, no answer) is
//! reported apart, as unreachable: it neither passes nor violates anything.

use super::{check_order, Acknowledged};
use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::order::OrderStatus;
use futures_util::stream::{self, StreamExt};
use std::future::Future;

/// Reads in flight at once.
const CHECK_IN_FLIGHT: usize = 64;
/// Unreachable reads listed one by one at most; then how many more.
const UNREACHABLE_LISTED_MAX: usize = 20;

/// What the API shows of a store, one value a read. The check awaits each
/// read where it is, never spawns it: no `Send` is asked of the futures.
pub trait ApiView {
    fn balance(&self, user: UserId) -> impl Future<Output = Result<u64, Unread>>;
    /// The units a product can still sell.
    fn stock(&self, product: ProductId) -> impl Future<Output = Result<u64, Unread>>;
    /// Coupons of a campaign still to issue.
    fn coupon_remaining(&self, coupon: CouponId) -> impl Future<Output = Result<u64, Unread>>;
    fn order_status(&self, order: OrderId) -> impl Future<Output = Result<OrderStatus, Unread>>;
}

/// Why a read gave no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unread {
    /// Nothing answered (refused, reset, timed out): nothing is known.
    Unreachable(String),
    /// The server answered, but not with the value (an error, a bad body).
    Refused(String),
}

/// What a check through the API found.
#[derive(Debug, Default)]
pub struct ApiFindings {
    /// What the server answered that contradicts the acknowledgements.
    pub violations: Vec<String>,
    /// Reads that could not reach the server: neither passed nor violated.
    /// At most [`UNREACHABLE_LISTED_MAX`] listed, then how many more.
    pub unreachable: Vec<String>,
}

/// One read's finding: `None` when it agrees.
type Finding = Option<Result<String, String>>;

/// A read's value through a rule (`Ok` violation), or why it has none.
fn judged<T>(
    what: String,
    read: Result<T, Unread>,
    rule: impl FnOnce(T) -> Option<String>,
) -> Finding {
    match read {
        Ok(v) => rule(v).map(Ok),
        Err(Unread::Refused(e)) => Some(Ok(format!("{what}: cannot read: {e}"))),
        Err(Unread::Unreachable(e)) => {
            Some(Err(format!("{what}: could not reach the server ({e})")))
        }
    }
}

impl Acknowledged {
    /// Checks a server through `view`: every user, product and campaign,
    /// and at most `orders_max` of the orders, evenly spread.
    pub async fn check_api(&self, view: &impl ApiView, orders_max: usize) -> ApiFindings {
        let exact = self.exact();
        let users = self.users.iter().map(|(id, w)| async move {
            judged(format!("user {id}"), view.balance(*id).await, |b| {
                w.check(*id, b, exact)
            })
        });
        let products = self.products.iter().map(|(id, u)| async move {
            let rule = |s| u.check_stock(*id, s, exact);
            judged(format!("product {id}"), view.stock(*id).await, rule)
        });
        let coupons = self.coupons.iter().map(|(id, c)| async move {
            let rule = |left| c.check(*id, c.quantity.checked_sub(left), exact);
            judged(
                format!("coupon {id}"),
                view.coupon_remaining(*id).await,
                rule,
            )
        });
        let step = (self.orders.len() / orders_max.max(1)).max(1);
        let orders = self.orders.iter().step_by(step).map(|(id, e)| async move {
            let rule = |s| check_order(*id, *e, Some(s));
            judged(format!("order {id}"), view.order_status(*id).await, rule)
        });
        let mut out = ApiFindings::default();
        out.add(stream::iter(users).buffer_unordered(CHECK_IN_FLIGHT))
            .await;
        out.add(stream::iter(products).buffer_unordered(CHECK_IN_FLIGHT))
            .await;
        out.add(stream::iter(coupons).buffer_unordered(CHECK_IN_FLIGHT))
            .await;
        out.add(stream::iter(orders).buffer_unordered(CHECK_IN_FLIGHT))
            .await;
        out.bounded()
    }
}

impl ApiFindings {
    /// Nothing violated, and nothing left unread.
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.unreachable.is_empty()
    }

    async fn add(&mut self, findings: impl stream::Stream<Item = Finding>) {
        let mut findings = std::pin::pin!(findings);
        while let Some(f) = findings.next().await {
            match f {
                None => {}
                Some(Ok(violation)) => self.violations.push(violation),
                Some(Err(unreachable)) => self.unreachable.push(unreachable),
            }
        }
    }

    fn bounded(mut self) -> ApiFindings {
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
