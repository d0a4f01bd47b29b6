//! Orders: pricing, and the status machine pending → paid | failed |
//! cancelled | expired, then paid → partially_refunded → refunded
//! ([`crate::domain::refund`]).

#[cfg(test)]
use crate::domain::coupon::Discount;
use crate::domain::coupon_terms::Offer;
use crate::domain::ids::{OrderId, ProductId, UserCouponId, UserId};
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::refund::{Refund, Refunds};
use crate::domain::rejection::{Decision, Rejection};
use crate::domain::time::Timestamp;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    Failed,
    Cancelled,
    Expired,
    PartiallyRefunded,
    Refunded,
}

impl OrderStatus {
    /// Every status, in declaration order.
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Failed,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
    ];

    /// Whether the order is no longer pending. A paid order may still be
    /// refunded ([`crate::domain::refund`]); nothing else changes a final one.
    pub fn is_final(self) -> bool {
        self != OrderStatus::Pending
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub name: String,
    pub unit_price: Krw,
    pub quantity: u64,
}

/// An order. Its JSON and stored (bincode) shape is `OrderFields`: the
/// refunds are two fields there, `refunded_amount` and `refunds`, and one
/// out-of-line value here ([`Refunds`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub items: Vec<OrderLine>,
    pub total_amount: Krw,
    pub discount_amount: Krw,
    pub pay_amount: Krw,
    pub user_coupon_id: Option<UserCouponId>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub paid_at: Option<Timestamp>,
    pub refunds: Refunds,
}

impl Order {
    /// KRW returned by refunds so far.
    pub fn refunded_amount(&self) -> Krw {
        self.refunds.amount()
    }
}

// Stored layout (bincode: field order): `refunded_amount` and `refunds`
// came in format version 3; older frames hold the version 2 layout, which
// `store::legacy` reads (its `Deserialize` impl for `Order` picks the
// layout of the frame being decoded, and reads this one from version 3).
// An order as JSON and the store see it (the OpenAPI schema `Order`; a
// doc comment here would become the schema's description).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = Order)]
pub(crate) struct OrderFields {
    id: OrderId,
    user_id: UserId,
    status: OrderStatus,
    items: Vec<OrderLine>,
    total_amount: Krw,
    discount_amount: Krw,
    pay_amount: Krw,
    /// Always present; null when none.
    #[schema(required = true)]
    user_coupon_id: Option<UserCouponId>,
    created_at: Timestamp,
    expires_at: Timestamp,
    /// Always present; null when none.
    #[schema(required = true)]
    paid_at: Option<Timestamp>,
    /// KRW returned by refunds so far.
    refunded_amount: Krw,
    /// Refunds so far, oldest first.
    refunds: Vec<Refund>,
}

impl From<OrderFields> for Order {
    fn from(o: OrderFields) -> Order {
        Order {
            id: o.id,
            user_id: o.user_id,
            status: o.status,
            items: o.items,
            total_amount: o.total_amount,
            discount_amount: o.discount_amount,
            pay_amount: o.pay_amount,
            user_coupon_id: o.user_coupon_id,
            created_at: o.created_at,
            expires_at: o.expires_at,
            paid_at: o.paid_at,
            refunds: Refunds::from_parts(o.refunded_amount, o.refunds),
        }
    }
}

/// Written field by field in [`OrderFields`]' order, without copying the order.
impl Serialize for Order {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Order", 13)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("user_id", &self.user_id)?;
        st.serialize_field("status", &self.status)?;
        st.serialize_field("items", &self.items)?;
        st.serialize_field("total_amount", &self.total_amount)?;
        st.serialize_field("discount_amount", &self.discount_amount)?;
        st.serialize_field("pay_amount", &self.pay_amount)?;
        st.serialize_field("user_coupon_id", &self.user_coupon_id)?;
        st.serialize_field("created_at", &self.created_at)?;
        st.serialize_field("expires_at", &self.expires_at)?;
        st.serialize_field("paid_at", &self.paid_at)?;
        st.serialize_field("refunded_amount", &self.refunded_amount())?;
        st.serialize_field("refunds", &*self.refunds)?;
        st.end()
    }
}

impl utoipa::PartialSchema for Order {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <OrderFields as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Order {
    fn name() -> std::borrow::Cow<'static, str> {
        <OrderFields as utoipa::ToSchema>::name()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <OrderFields as utoipa::ToSchema>::schemas(schemas)
    }
}

/// A requested line before prices are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRequest {
    pub product_id: ProductId,
    pub quantity: u64,
}

/// Shape rules of an order request: 1..=50 lines, each product once, quantities in range.
pub fn validate_lines(lines: &[LineRequest], limits: &Limits) -> Decision<()> {
    if lines.is_empty() || lines.len() > limits.order_lines_max {
        return Err(Rejection::InvalidRequest(format!(
            "items must hold between 1 and {} lines",
            limits.order_lines_max
        )));
    }
    for (i, line) in lines.iter().enumerate() {
        if line.quantity == 0 || line.quantity > limits.line_quantity_max {
            return Err(Rejection::InvalidRequest(format!(
                "items[{i}].quantity must be between 1 and {}",
                limits.line_quantity_max
            )));
        }
        if lines[..i].iter().any(|l| l.product_id == line.product_id) {
            return Err(Rejection::InvalidRequest(format!(
                "items[{i}].product_id {} appears more than once",
                line.product_id
            )));
        }
    }
    Ok(())
}

/// Totals of an order: a discount never exceeds the total, percent rounds down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amounts {
    pub total: Krw,
    pub discount: Krw,
    pub pay: Krw,
}

/// The sum of the lines, before any discount.
pub fn total(lines: &[OrderLine]) -> Decision<Krw> {
    let mut total = Krw::ZERO;
    for line in lines {
        total = line
            .unit_price
            .checked_mul(line.quantity)
            .and_then(|sub| total.checked_add(sub))
            .ok_or_else(|| Rejection::InvalidRequest("order total is too large".into()))?;
    }
    Ok(total)
}

pub fn price(lines: &[OrderLine], offer: Option<Offer>) -> Decision<Amounts> {
    let total = total(lines)?;
    let off = offer.map_or(Krw::ZERO, |o| o.amount_off(total));
    let pay = total
        .checked_sub(off)
        .expect("a discount never exceeds the total");
    Ok(Amounts {
        total,
        discount: off,
        pay,
    })
}

/// [`price`] with a plain discount (no cap).
#[cfg(test)]
pub fn price_with(lines: &[OrderLine], discount: Option<Discount>) -> Decision<Amounts> {
    price(
        lines,
        discount.map(|discount| Offer {
            discount,
            max_discount: None,
        }),
    )
}

/// What is asked of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderCommand {
    Pay,
    Cancel,
}

/// What a durable record does to an order (placing creates it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    /// `OrderPaid`.
    Paid,
    /// `OrderPaymentFailed`.
    PaymentFailed,
    /// `OrderCancelled`.
    Cancelled,
    /// `OrderExpired`.
    Expired,
}

impl OrderEvent {
    /// The status the order ends in.
    pub fn status(self) -> OrderStatus {
        match self {
            OrderEvent::Paid => OrderStatus::Paid,
            OrderEvent::PaymentFailed => OrderStatus::Failed,
            OrderEvent::Cancelled => OrderStatus::Cancelled,
            OrderEvent::Expired => OrderStatus::Expired,
        }
    }
}

impl Order {
    pub fn is_due_to_expire(&self, now: Timestamp) -> bool {
        self.status == OrderStatus::Pending && now >= self.expires_at
    }

    /// What a payment or a cancellation does to the order. An order whose
    /// time is up is expired, whether or not the expiry sweep has reached
    /// it yet: paying or cancelling it decides `Expired`, and the caller
    /// refuses the request once that is durable, so the answer never
    /// depends on when the sweep ran. (A payment decided `Paid` may still
    /// end `PaymentFailed`: the balance is the user's to decide.)
    pub fn decide(&self, command: OrderCommand, now: Timestamp) -> Decision<OrderEvent> {
        match (self.status, command) {
            (OrderStatus::Pending, _) if now >= self.expires_at => Ok(OrderEvent::Expired),
            (OrderStatus::Pending, OrderCommand::Pay) => Ok(OrderEvent::Paid),
            (OrderStatus::Pending, OrderCommand::Cancel) => Ok(OrderEvent::Cancelled),
            (_, OrderCommand::Pay) => Err(Rejection::OrderNotPayable(self.id)),
            (_, OrderCommand::Cancel) => Err(Rejection::OrderNotCancellable(self.id)),
        }
    }

    /// Applies a durable event: the end of a pending order.
    pub fn apply(&mut self, event: OrderEvent, at: Timestamp) {
        assert_eq!(
            self.status,
            OrderStatus::Pending,
            "order {}: {event:?} applied to a finished order",
            self.id
        );
        self.status = event.status();
        if event == OrderEvent::Paid {
            self.paid_at = Some(at);
        }
    }

    /// (product, quantity) of every line.
    pub fn quantities(&self) -> impl Iterator<Item = (ProductId, u64)> + '_ {
        self.items.iter().map(|l| (l.product_id, l.quantity))
    }
}

/// A paid order of one line (two mugs at 1,000 KRW), for tests of what
/// is made of paid orders.
#[cfg(test)]
pub(crate) fn sample_paid_order(id: u64) -> Order {
    Order {
        id: OrderId(id),
        user_id: UserId(3),
        status: OrderStatus::Paid,
        items: vec![OrderLine {
            product_id: ProductId(2),
            name: "mug".into(),
            unit_price: Krw(1_000),
            quantity: 2,
        }],
        total_amount: Krw(2_000),
        discount_amount: Krw(0),
        pay_amount: Krw(2_000),
        user_coupon_id: None,
        created_at: Timestamp(1_000),
        expires_at: Timestamp(601_000),
        paid_at: Some(Timestamp(2_000)),
        refunds: Refunds::NONE,
    }
}

/// A pending order of user 1 with `(product, quantity)` lines at 10 KRW
/// and no amounts, for tests of what orders do to the world.
#[cfg(test)]
pub(crate) fn sample_pending_order(lines: &[(u64, u64)]) -> Order {
    Order {
        id: OrderId(1),
        user_id: UserId(1),
        status: OrderStatus::Pending,
        items: lines
            .iter()
            .map(|&(p, q)| OrderLine {
                product_id: ProductId(p),
                name: "x".into(),
                unit_price: Krw(10),
                quantity: q,
            })
            .collect(),
        total_amount: Krw(0),
        discount_amount: Krw(0),
        pay_amount: Krw(0),
        user_coupon_id: None,
        created_at: Timestamp(1),
        expires_at: Timestamp(100),
        paid_at: None,
        refunds: Refunds::NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product: u64, price: u64, quantity: u64) -> OrderLine {
        OrderLine {
            product_id: ProductId(product),
            name: "p".into(),
            unit_price: Krw(price),
            quantity,
        }
    }

    fn order(status: OrderStatus) -> Order {
        Order {
            id: OrderId(1),
            user_id: UserId(1),
            status,
            items: vec![line(1, 100, 1)],
            total_amount: Krw(100),
            discount_amount: Krw(0),
            pay_amount: Krw(100),
            user_coupon_id: None,
            created_at: Timestamp(0),
            expires_at: Timestamp(1000),
            paid_at: None,
            refunds: Refunds::NONE,
        }
    }

    #[test]
    fn an_order_keeps_its_refunds_behind_one_pointer() {
        // proves the refunds stay out of line: an order is 128 bytes (152 with a sum and a vector inline)
        assert_eq!(std::mem::size_of::<Refunds>(), 8);
        assert!(
            std::mem::size_of::<Order>() <= 128,
            "{} bytes",
            std::mem::size_of::<Order>()
        );
    }

    #[test]
    fn all_lists_every_status_once_in_declaration_order() {
        // proves ALL is complete: each status sits at its own discriminant, the last one included
        for (i, s) in OrderStatus::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i, "{s:?}");
        }
        assert_eq!(OrderStatus::ALL.len(), OrderStatus::Refunded as usize + 1);
    }

    #[test]
    fn price_sums_lines_and_subtracts_the_discount() {
        let a = price_with(
            &[line(1, 1000, 3), line(2, 999, 1)],
            Some(Discount::Percent { percent: 10 }),
        )
        .unwrap();
        assert_eq!(
            a,
            Amounts {
                total: Krw(3999),
                discount: Krw(399),
                pay: Krw(3600)
            }
        );
    }

    #[test]
    fn a_fixed_discount_larger_than_the_total_pays_nothing() {
        let a = price_with(
            &[line(1, 500, 1)],
            Some(Discount::Fixed { amount: Krw(800) }),
        )
        .unwrap();
        assert_eq!(
            a,
            Amounts {
                total: Krw(500),
                discount: Krw(500),
                pay: Krw(0)
            }
        );
    }

    #[test]
    fn order_shape_is_validated() {
        let l = Limits::API;
        let req = |p, q| LineRequest {
            product_id: ProductId(p),
            quantity: q,
        };
        assert!(validate_lines(&[], &l).is_err());
        assert!(validate_lines(&[req(1, 1)], &l).is_ok());
        assert!(validate_lines(&[req(1, 0)], &l).is_err());
        assert!(validate_lines(&[req(1, 1000)], &l).is_ok());
        assert!(validate_lines(&[req(1, 1001)], &l).is_err());
        assert!(validate_lines(&[req(1, 1), req(1, 2)], &l).is_err());
        let fifty: Vec<_> = (1..=50).map(|p| req(p, 1)).collect();
        assert!(validate_lines(&fifty, &l).is_ok());
        let fifty_one: Vec<_> = (1..=51).map(|p| req(p, 1)).collect();
        assert!(validate_lines(&fifty_one, &l).is_err());
    }

    #[test]
    fn only_a_pending_order_can_be_cancelled_or_paid() {
        assert!(order(OrderStatus::Pending)
            .decide(OrderCommand::Cancel, Timestamp(0))
            .is_ok());
        for s in [
            OrderStatus::Paid,
            OrderStatus::Failed,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
        ] {
            assert_eq!(
                order(s).decide(OrderCommand::Cancel, Timestamp(0)),
                Err(Rejection::OrderNotCancellable(OrderId(1)))
            );
            assert_eq!(
                order(s).decide(OrderCommand::Pay, Timestamp(0)),
                Err(Rejection::OrderNotPayable(OrderId(1)))
            );
        }
    }

    #[test]
    fn a_pending_order_past_its_expiry_is_expired_not_paid_nor_cancelled() {
        let o = order(OrderStatus::Pending);
        let decide = |c, t| o.decide(c, Timestamp(t));
        assert_eq!(decide(OrderCommand::Pay, 999), Ok(OrderEvent::Paid));
        assert_eq!(decide(OrderCommand::Pay, 1000), Ok(OrderEvent::Expired));
        assert_eq!(decide(OrderCommand::Cancel, 999), Ok(OrderEvent::Cancelled));
        assert_eq!(decide(OrderCommand::Cancel, 1000), Ok(OrderEvent::Expired));
        assert!(o.is_due_to_expire(Timestamp(1000)));
    }
}
