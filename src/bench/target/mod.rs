//! What a benchmark talks to: the embedded [`Engine`] or a running server.
//!
//! Both offer the same few operations with the same answers, so workloads
//! and invariant checks are written once. An enum rather than a trait
//! object: async methods stay plain `async fn`, with no boxing per request.
//!
//! [`Target`] dispatches each operation to its two implementations:
//! `embedded` (the engine's facade) and `http` ([`HttpTarget`], requests to
//! the API, with the `credentials` they carry and the `reach` that says
//! whether the server still answers). Why an operation failed is an
//! [`OpError`] (`error`).

mod credentials;
mod embedded;
mod error;
mod http;
mod reach;

pub use credentials::{KeySource, Tokens};
pub use error::{OpError, OpResult, TIMEOUT, TRANSPORT, UNREACHABLE};
pub use http::HttpTarget;
pub use reach::{UNREACHABLE_ATTEMPTS, UNREACHABLE_MS};

use crate::check::{ApiView, Unread};
use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::money::Krw;
use crate::domain::order::OrderStatus;
use crate::engine::Engine;
use hdrhistogram::Histogram;
use std::time::Instant;

/// A placed order, as far as a workload needs it.
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    pub order_id: OrderId,
    pub pay_amount: Krw,
}

#[derive(Clone)]
pub enum Target {
    Embedded(Engine),
    Http(HttpTarget),
}

impl Target {
    /// Over HTTP, starts timing each request on its own from `from` on.
    pub fn time_requests_from(&self, from: Instant) {
        if let Target::Http(h) = self {
            h.time_requests_from(from);
        }
    }

    /// Over HTTP, stops timing requests (the workers are done).
    pub fn stop_timing_requests(&self) {
        if let Target::Http(h) = self {
            h.stop_timing_requests();
        }
    }

    /// Over HTTP: the latency of every answered request in the measured
    /// window, and how many of them succeeded (2xx).
    pub fn request_latencies(&self) -> Option<(Histogram<u64>, u64)> {
        match self {
            Target::Embedded(_) => None,
            Target::Http(h) => Some(h.request_latencies()),
        }
    }

    /// Embedded: the data platform's backlog (events pending) now.
    pub fn backlog(&self) -> Option<u64> {
        match self {
            Target::Embedded(e) => Some(e.metrics().outbox_pending),
            Target::Http(_) => None,
        }
    }

    /// With `--url`: the server's resident memory (MiB), from its
    /// `/metrics`; `None` embedded, or when the server does not say. Not
    /// counted among the workers' requests. Gives up after half a second,
    /// so a slow server does not hold up the run's once-a-second timeline.
    pub async fn server_rss_mib(&self) -> Option<f64> {
        match self {
            Target::Embedded(_) => None,
            Target::Http(h) => h.server_rss_mib().await,
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Target::Embedded(_))
    }

    /// Over HTTP: the server is taken for gone (see [`UNREACHABLE_ATTEMPTS`]).
    pub fn is_gone(&self) -> bool {
        matches!(self, Target::Http(h) if h.is_gone())
    }

    /// Over HTTP, once the server is taken for gone: why.
    pub fn unreachable(&self) -> Option<String> {
        match self {
            Target::Embedded(_) => None,
            Target::Http(h) => h.unreachable(),
        }
    }

    /// Over HTTP, the last attempt that reached no server, if any.
    pub fn last_transport_error(&self) -> Option<String> {
        match self {
            Target::Embedded(_) => None,
            Target::Http(h) => h.last_transport_error(),
        }
    }

    pub async fn create_user(&self, name: &str) -> OpResult<UserId> {
        match self {
            Target::Embedded(e) => embedded::create_user(e, name).await,
            Target::Http(h) => h.create_user(name).await,
        }
    }

    pub async fn charge(&self, user: UserId, amount: Krw) -> OpResult<()> {
        match self {
            Target::Embedded(e) => embedded::charge(e, user, amount).await,
            Target::Http(h) => h.charge(user, amount).await,
        }
    }

    pub async fn balance(&self, user: UserId) -> OpResult<Krw> {
        match self {
            Target::Embedded(e) => embedded::balance(e, user).await,
            Target::Http(h) => h.balance(user).await,
        }
    }

    pub async fn create_product(&self, name: &str, price: Krw, stock: u64) -> OpResult<ProductId> {
        match self {
            Target::Embedded(e) => embedded::create_product(e, name, price, stock).await,
            Target::Http(h) => h.create_product(name, price, stock).await,
        }
    }

    /// The stock a product can still sell now.
    pub async fn product_stock(&self, id: ProductId) -> OpResult<u64> {
        match self {
            Target::Embedded(e) => embedded::product_stock(e, id).await,
            Target::Http(h) => h.product_stock(id).await,
        }
    }

    pub async fn create_coupon(&self, name: &str, off: Krw, quantity: u64) -> OpResult<CouponId> {
        match self {
            Target::Embedded(e) => embedded::create_coupon(e, name, off, quantity).await,
            Target::Http(h) => h.create_coupon(name, off, quantity).await,
        }
    }

    /// Coupons of a campaign still to issue.
    pub async fn coupon_remaining(&self, id: CouponId) -> OpResult<u64> {
        match self {
            Target::Embedded(e) => embedded::coupon_remaining(e, id).await,
            Target::Http(h) => h.coupon_remaining(id).await,
        }
    }

    pub async fn issue_coupon(&self, coupon: CouponId, user: UserId) -> OpResult<()> {
        match self {
            Target::Embedded(e) => embedded::issue_coupon(e, coupon, user).await,
            Target::Http(h) => h.issue_coupon(coupon, user).await,
        }
    }

    /// Places a one-line order.
    pub async fn place(&self, user: UserId, product: ProductId, quantity: u64) -> OpResult<Placed> {
        match self {
            Target::Embedded(e) => embedded::place(e, user, product, quantity).await,
            Target::Http(h) => h.place(user, product, quantity).await,
        }
    }

    /// Pays `order`, as its user `user`.
    pub async fn pay(&self, user: UserId, order: OrderId) -> OpResult<()> {
        match self {
            Target::Embedded(e) => embedded::pay(e, order).await,
            Target::Http(h) => h.pay(user, order).await,
        }
    }

    /// Refunds all of `order` (admin).
    pub async fn refund(&self, order: OrderId) -> OpResult<()> {
        match self {
            Target::Embedded(e) => embedded::refund(e, order).await,
            Target::Http(h) => h.refund(order).await,
        }
    }

    pub async fn order_status(&self, order: OrderId) -> OpResult<OrderStatus> {
        match self {
            Target::Embedded(e) => embedded::order_status(e, order).await,
            Target::Http(h) => h.order_status(order).await,
        }
    }
}

/// The invariant check reads a target as it reads any server's API.
impl ApiView for Target {
    async fn balance(&self, user: UserId) -> Result<u64, Unread> {
        Target::balance(self, user)
            .await
            .map(|b| b.0)
            .map_err(unread)
    }

    async fn stock(&self, product: ProductId) -> Result<u64, Unread> {
        self.product_stock(product).await.map_err(unread)
    }

    async fn coupon_remaining(&self, coupon: CouponId) -> Result<u64, Unread> {
        Target::coupon_remaining(self, coupon).await.map_err(unread)
    }

    async fn order_status(&self, order: OrderId) -> Result<OrderStatus, Unread> {
        Target::order_status(self, order).await.map_err(unread)
    }
}

fn unread(e: OpError) -> Unread {
    if e.is_unreachable() {
        Unread::Unreachable(e.to_string())
    } else {
        Unread::Refused(e.to_string())
    }
}
