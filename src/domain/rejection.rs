//! Domain rejections: a command the rules refuse. Named by what is wrong.

use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("amount must be between {min} and {max} KRW")]
    InvalidAmount { min: u64, max: u64 },
    #[error("user {0} not found")]
    UserNotFound(UserId),
    #[error("product {0} not found")]
    ProductNotFound(ProductId),
    #[error("coupon {0} not found")]
    CouponNotFound(CouponId),
    #[error("order {0} not found")]
    OrderNotFound(OrderId),
    #[error("balance would exceed the limit of {max} KRW")]
    BalanceLimitExceeded { max: u64 },
    #[error("balance {balance} KRW is below the amount due {due} KRW")]
    InsufficientBalance { balance: u64, due: u64 },
    #[error("product {product_id} has {available} in stock, {requested} requested")]
    OutOfStock {
        product_id: ProductId,
        available: u64,
        requested: u64,
    },
    #[error("coupon {0} is sold out")]
    CouponSoldOut(CouponId),
    #[error("user already holds coupon {0}")]
    CouponAlreadyIssued(CouponId),
    #[error("coupon {0} has expired")]
    CouponExpired(CouponId),
    #[error("coupon cannot be used: {0}")]
    InvalidCoupon(String),
    #[error("order {0} is not pending and cannot be cancelled")]
    OrderNotCancellable(OrderId),
    #[error("order {0} is not pending and cannot be paid")]
    OrderNotPayable(OrderId),
    #[error("coupon {0} is not issued yet")]
    CouponNotStarted(CouponId),
    #[error(
        "product {product_id} allows at most {max} per user ({held} held, {requested} requested)"
    )]
    PurchaseLimitExceeded {
        product_id: ProductId,
        max: u64,
        held: u64,
        requested: u64,
    },
    #[error("order {0} is not paid (or is refunded whole) and cannot be refunded")]
    OrderNotRefundable(OrderId),
    #[error("the refund exceeds order {order_id}: {why}")]
    RefundExceedsOrder { order_id: OrderId, why: String },
}

impl Rejection {
    /// The documented error code of `API.md`.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InvalidRequest(_) => "INVALID_REQUEST",
            Rejection::InvalidAmount { .. } => "INVALID_AMOUNT",
            Rejection::UserNotFound(_) => "USER_NOT_FOUND",
            Rejection::ProductNotFound(_) => "PRODUCT_NOT_FOUND",
            Rejection::CouponNotFound(_) => "COUPON_NOT_FOUND",
            Rejection::OrderNotFound(_) => "ORDER_NOT_FOUND",
            Rejection::BalanceLimitExceeded { .. } => "BALANCE_LIMIT_EXCEEDED",
            Rejection::InsufficientBalance { .. } => "INSUFFICIENT_BALANCE",
            Rejection::OutOfStock { .. } => "OUT_OF_STOCK",
            Rejection::CouponSoldOut(_) => "COUPON_SOLD_OUT",
            Rejection::CouponAlreadyIssued(_) => "COUPON_ALREADY_ISSUED",
            Rejection::CouponExpired(_) => "COUPON_EXPIRED",
            Rejection::InvalidCoupon(_) => "INVALID_COUPON",
            Rejection::OrderNotCancellable(_) => "ORDER_NOT_CANCELLABLE",
            Rejection::OrderNotPayable(_) => "ORDER_NOT_PAYABLE",
            Rejection::CouponNotStarted(_) => "COUPON_NOT_STARTED",
            Rejection::PurchaseLimitExceeded { .. } => "PURCHASE_LIMIT_EXCEEDED",
            Rejection::OrderNotRefundable(_) => "ORDER_NOT_REFUNDABLE",
            Rejection::RefundExceedsOrder { .. } => "REFUND_EXCEEDS_ORDER",
        }
    }
}

pub type Decision<T> = Result<T, Rejection>;
