//! Events: the durable facts, named in the past tense. One record holds
//! every effect of one decision, however many entities it touches, so a
//! placed order (stock on several products, a coupon, the order) is atomic.

use crate::domain::coupon::Discount;
use crate::domain::coupon_terms::CouponTerms;
use crate::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use crate::domain::money::Krw;
use crate::domain::order::Order;
use crate::domain::product::ProductPatch;
use crate::domain::time::Timestamp;
use crate::domain::views::Reply;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    UserRegistered {
        user_id: UserId,
        name: String,
    },
    BalanceCharged {
        user_id: UserId,
        amount: Krw,
    },
    ProductCreated {
        product_id: ProductId,
        name: String,
        price: Krw,
        stock: u64,
    },
    ProductRestocked {
        product_id: ProductId,
        quantity: u64,
    },
    CampaignCreated {
        coupon_id: CouponId,
        name: String,
        discount: Discount,
        quantity: u64,
        expires_at: Option<Timestamp>,
    },
    CouponIssued {
        coupon_id: CouponId,
        user_id: UserId,
        user_coupon_id: UserCouponId,
    },
    CartLineSet {
        user_id: UserId,
        product_id: ProductId,
        name: String,
        price: Krw,
        quantity: u64,
    },
    CartLineRemoved {
        user_id: UserId,
        product_id: ProductId,
    },
    /// Stock of every line reserved, the coupon used, cart lines removed
    /// when `from_cart`, every line's units held by the user (purchase limits).
    OrderPlaced {
        order: Box<Order>,
        from_cart: bool,
    },
    /// Balance debited, reserved units sold, the sale counted; its event
    /// goes to the data platform's outbox once durable.
    OrderPaid {
        order_id: OrderId,
        user_id: UserId,
        amount: Krw,
    },
    /// Payment refused for want of balance: stock and coupon return.
    OrderPaymentFailed {
        order_id: OrderId,
    },
    OrderCancelled {
        order_id: OrderId,
    },
    OrderExpired {
        order_id: OrderId,
    },
    /// Legacy, no longer written: the data platform accepted these paid
    /// orders (`sink_len`: the JSON-lines file's length after them). Journals
    /// of older data dirs still hold it; it replays as nothing.
    OutboxDelivered {
        order_ids: Vec<OrderId>,
        sink_len: Option<u64>,
    },
    /// A request made with an idempotency key was refused, changing
    /// nothing: the record only keeps the refusal under its key, so a retry
    /// gets the same answer.
    RequestRefused,
    /// `CampaignCreated` with terms (written only when some term is given).
    CampaignCreatedWithTerms {
        coupon_id: CouponId,
        name: String,
        discount: Discount,
        quantity: u64,
        expires_at: Option<Timestamp>,
        /// Boxed (the same bytes stored): it would widen every record.
        terms: Box<CouponTerms>,
    },
    /// `ProductCreated` with a per-user limit.
    ProductCreatedWithLimit {
        product_id: ProductId,
        name: String,
        price: Krw,
        stock: u64,
        max_per_user: u64,
    },
    /// A product's name, price or limit changed; orders placed after it see it.
    ProductUpdated {
        product_id: ProductId,
        /// Boxed (the same bytes stored): it would widen every record.
        patch: Box<ProductPatch>,
    },
    /// `OrderPlaced` as journaled when only some products counted per user
    /// (`counted` names them). No longer written: replayed as `OrderPlaced`,
    /// every line counting, as every unit counts now.
    OrderPlacedCounted {
        order: Box<Order>,
        from_cart: bool,
        counted: Vec<ProductId>,
    },
    /// A paid order was refunded, whole or in part: `order` as it reads
    /// after the refund, whose last refund is this one. One record holds
    /// every effect (the user's credit, the units back in stock and out of
    /// the sales count, a wholly refunded order's coupon available again),
    /// so a crash never leaves half a refund. The whole order, not just
    /// the refund, because a paid order may have left memory for the
    /// archive: applying the record brings it back.
    OrderRefunded {
        order: Box<Order>,
    },
}

/// An idempotency key stored in the same record as the effect it guards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyEntry {
    pub key: String,
    /// Hash of what the request asked (route and body): another body is a reuse.
    pub fingerprint: u64,
    pub reply: Reply,
}

/// One journal record: when it was decided, what happened, and the key that guards it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub at: Timestamp,
    pub event: Event,
    /// Boxed: most records carry none, and every record is moved through
    /// the journal's queue into its batch (stored bytes are the same).
    pub idempotency: Option<Box<IdempotencyEntry>>,
}

// Each record is moved through the journal's queue into its batch: with
// the key boxed it is this small (it was 208 bytes).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Record>() <= 96);

impl Record {
    pub fn new(at: Timestamp, event: Event) -> Record {
        Record {
            at,
            event,
            idempotency: None,
        }
    }
}
