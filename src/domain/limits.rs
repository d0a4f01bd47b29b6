//! Every limit of the public contract, in one place, with its unit in its name.

use crate::domain::money::Krw;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub charge_krw_min: Krw,
    pub charge_krw_max: Krw,
    pub balance_krw_max: Krw,
    pub price_krw_min: Krw,
    pub price_krw_max: Krw,
    /// Stock a product may hold (create and restock), so sums never overflow.
    pub stock_count_max: u64,
    pub restock_count_max: u64,
    pub line_quantity_max: u64,
    pub order_lines_max: usize,
    pub cart_lines_max: usize,
    pub name_chars_max: usize,
    pub discount_fixed_krw_max: Krw,
    pub discount_percent_max: u8,
    pub coupon_quantity_max: u64,
    /// A coupon's `min_order_amount` (no order above the balance limit can be paid).
    pub min_order_krw_max: Krw,
    /// A product's `max_per_user`: units one user may hold.
    pub purchase_limit_count_max: u64,
    pub page_size_max: usize,
    pub page_size_default: usize,
    pub idempotency_key_chars_max: usize,
    pub request_body_bytes_max: usize,
}

impl Limits {
    /// The limits of `API.md`.
    pub const API: Limits = Limits {
        charge_krw_min: Krw(1),
        charge_krw_max: Krw(10_000_000),
        balance_krw_max: Krw(1_000_000_000),
        price_krw_min: Krw(1),
        price_krw_max: Krw(100_000_000),
        stock_count_max: 1_000_000_000,
        restock_count_max: 1_000_000_000,
        line_quantity_max: 1_000,
        order_lines_max: 50,
        cart_lines_max: 50,
        name_chars_max: 200,
        discount_fixed_krw_max: Krw(100_000_000),
        discount_percent_max: 100,
        coupon_quantity_max: 10_000_000,
        min_order_krw_max: Krw(1_000_000_000),
        purchase_limit_count_max: 1_000,
        page_size_max: 100,
        page_size_default: 20,
        idempotency_key_chars_max: 128,
        request_body_bytes_max: 64 * 1024,
    };
}

/// Limits of the contract that no engine configures: fixed by its shape.
impl Limits {
    /// Refunds one order may hold; the last must take everything left.
    pub const REFUNDS_PER_ORDER_MAX: usize = 20;
    /// Characters of a refund's reason.
    pub const REFUND_REASON_CHARS_MAX: usize = 200;
    /// How long an idempotency key is kept at least.
    pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 60 * 60 * 1000;
    /// Clock skew allowed on a customer token's `exp` and `nbf`, in seconds.
    pub const TOKEN_LEEWAY_SECS: u64 = 30;
}

impl Default for Limits {
    fn default() -> Self {
        Limits::API
    }
}
