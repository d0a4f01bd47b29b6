//! The data platform's JSON, written directly into the outgoing buffer.
//!
//! Every paid order becomes one event, so this is the delivery thread's
//! main work. Going through serde, each of an event's thirty or so keys
//! and strings was scanned for characters to escape and each time was
//! formatted into a `String` of its own. Here the keys are literals, the
//! times are written on the stack (`Timestamp::write_rfc3339`), numbers go
//! through `serde_json`'s integer writer and only text a client chose
//! (product names, refund reasons) through its escaping.
//!
//! The bytes are exactly those of `serde_json` over the types' `Serialize`
//! impls (the HTTP API's order JSON), field for field: the tests compare
//! both over arbitrary orders and refunds, and every struct is destructured
//! without `..`, so a new field fails to compile until it is written here.

use crate::domain::ids::OrderId;
use crate::domain::money::Krw;
use crate::domain::order::{Order, OrderLine, OrderStatus};
use crate::domain::refund::{Refund, RefundLine};
use crate::domain::time::Timestamp;

/// `{"event_id","type":"order_paid","order","at"}`.
pub fn order_paid(out: &mut Vec<u8>, order: &Order, at: Timestamp) {
    field(out, r#"{"event_id":"order-paid-"#, order.id.0);
    raw(out, r#"","type":"order_paid","order":"#);
    self::order(out, order);
    time_field(out, r#","at":"#, at);
    out.push(b'}');
}

/// `{"event_id","type":"order_refunded","order_id","amount","items","at"}`.
pub fn order_refunded(
    out: &mut Vec<u8>,
    order_id: OrderId,
    number_of_refund: u32,
    amount: Krw,
    items: &[RefundLine],
    at: Timestamp,
) {
    field(out, r#"{"event_id":"order-refunded-"#, order_id.0);
    out.push(b'-');
    number(out, u64::from(number_of_refund));
    field(out, r#"","type":"order_refunded","order_id":"#, order_id.0);
    field(out, r#","amount":"#, amount.0);
    raw(out, r#","items":"#);
    refund_lines(out, items);
    time_field(out, r#","at":"#, at);
    out.push(b'}');
}

/// An order as the HTTP API answers it.
pub fn order(out: &mut Vec<u8>, order: &Order) {
    let Order {
        id,
        user_id,
        status,
        items,
        total_amount,
        discount_amount,
        pay_amount,
        user_coupon_id,
        created_at,
        expires_at,
        paid_at,
        refunds,
    } = order;
    field(out, r#"{"id":"#, id.0);
    field(out, r#","user_id":"#, user_id.0);
    raw(out, r#","status":""#);
    raw(out, status_name(*status));
    raw(out, r#"","items":"#);
    list(out, items, order_line);
    field(out, r#","total_amount":"#, total_amount.0);
    field(out, r#","discount_amount":"#, discount_amount.0);
    field(out, r#","pay_amount":"#, pay_amount.0);
    raw(out, r#","user_coupon_id":"#);
    or_null(out, user_coupon_id.as_ref(), |out, id| number(out, id.0));
    time_field(out, r#","created_at":"#, *created_at);
    time_field(out, r#","expires_at":"#, *expires_at);
    raw(out, r#","paid_at":"#);
    or_null(out, paid_at.as_ref(), |out, at| time(out, *at));
    field(out, r#","refunded_amount":"#, refunds.amount().0);
    raw(out, r#","refunds":"#);
    list(out, refunds, refund);
    out.push(b'}');
}

fn order_line(out: &mut Vec<u8>, line: &OrderLine) {
    let OrderLine {
        product_id,
        name,
        unit_price,
        quantity,
    } = line;
    field(out, r#"{"product_id":"#, product_id.0);
    raw(out, r#","name":"#);
    text(out, name);
    field(out, r#","unit_price":"#, unit_price.0);
    field(out, r#","quantity":"#, *quantity);
    out.push(b'}');
}

fn refund(out: &mut Vec<u8>, refund: &Refund) {
    let Refund {
        items,
        amount,
        reason,
        at,
    } = refund;
    raw(out, r#"{"items":"#);
    refund_lines(out, items);
    field(out, r#","amount":"#, amount.0);
    raw(out, r#","reason":"#);
    or_null(out, reason.as_deref(), text);
    time_field(out, r#","at":"#, *at);
    out.push(b'}');
}

fn refund_lines(out: &mut Vec<u8>, lines: &[RefundLine]) {
    list(out, lines, refund_line);
}

fn refund_line(out: &mut Vec<u8>, line: &RefundLine) {
    let RefundLine {
        product_id,
        quantity,
    } = line;
    field(out, r#"{"product_id":"#, product_id.0);
    field(out, r#","quantity":"#, *quantity);
    out.push(b'}');
}

/// `[` each of `items` written by `write`, comma-separated, `]`.
fn list<T>(out: &mut Vec<u8>, items: &[T], write: fn(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

/// `value` written by `write`, or `null`.
fn or_null<T: ?Sized>(out: &mut Vec<u8>, value: Option<&T>, write: fn(&mut Vec<u8>, &T)) {
    match value {
        Some(value) => write(out, value),
        None => raw(out, "null"),
    }
}

/// The status as its `Serialize` impl names it (`snake_case`).
fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "pending",
        OrderStatus::Paid => "paid",
        OrderStatus::Failed => "failed",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Expired => "expired",
        OrderStatus::PartiallyRefunded => "partially_refunded",
        OrderStatus::Refunded => "refunded",
    }
}

fn raw(out: &mut Vec<u8>, json: &str) {
    out.extend_from_slice(json.as_bytes());
}

/// `key` (the JSON before a number: a key, or the text of an id) and `value`.
fn field(out: &mut Vec<u8>, key: &str, value: u64) {
    raw(out, key);
    number(out, value);
}

/// `key` and the time `at`.
fn time_field(out: &mut Vec<u8>, key: &str, at: Timestamp) {
    raw(out, key);
    time(out, at);
}

fn number(out: &mut Vec<u8>, value: u64) {
    // serde_json writes an integer with `itoa`; into a Vec it cannot fail.
    let _ = serde_json::to_writer(&mut *out, &value);
}

fn time(out: &mut Vec<u8>, at: Timestamp) {
    out.push(b'"');
    at.write_rfc3339(out);
    out.push(b'"');
}

/// A string a client chose, escaped as `serde_json` escapes it.
fn text(out: &mut Vec<u8>, value: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{ProductId, UserCouponId, UserId};
    use crate::domain::refund::Refunds;
    use proptest::prelude::*;
    use serde::Serialize;

    /// The event shapes of API.md through serde: what this module must equal.
    #[derive(Serialize)]
    struct PaidWire<'a> {
        event_id: String,
        #[serde(rename = "type")]
        kind: &'static str,
        order: &'a Order,
        at: Timestamp,
    }

    #[derive(Serialize)]
    struct RefundWire<'a> {
        event_id: String,
        #[serde(rename = "type")]
        kind: &'static str,
        order_id: OrderId,
        amount: Krw,
        items: &'a [RefundLine],
        at: Timestamp,
    }

    fn any_text() -> impl Strategy<Value = String> {
        // quotes, backslashes, control characters, non-ASCII
        prop_oneof![
            "[a-z -]{0,12}",
            any::<String>(),
            Just("\"\\/\u{0}\u{1f}\n\t\u{7f}\u{2028}한글".to_string()),
        ]
    }

    fn any_time() -> impl Strategy<Value = Timestamp> {
        prop_oneof![
            (0u64..4_102_444_800_000).prop_map(Timestamp),
            any::<u64>().prop_map(Timestamp),
        ]
    }

    fn any_refund_lines() -> impl Strategy<Value = Vec<RefundLine>> {
        prop::collection::vec(
            (any::<u64>(), any::<u64>()).prop_map(|(p, quantity)| RefundLine {
                product_id: ProductId(p),
                quantity,
            }),
            0..4,
        )
    }

    prop_compose! {
        fn any_order()(
            ids in any::<(u64, u64)>(),
            status in prop::sample::select(OrderStatus::ALL.to_vec()),
            items in prop::collection::vec(
                (any::<u64>(), any_text(), any::<u64>(), any::<u64>()),
                0..4,
            ),
            amounts in any::<(u64, u64, u64, u64)>(),
            coupon in any::<Option<u64>>(),
            times in (any_time(), any_time(), prop::option::of(any_time())),
            refunds in prop::collection::vec(
                (any_refund_lines(), any::<u64>(), prop::option::of(any_text()), any_time()),
                0..3,
            ),
        ) -> Order {
            Order {
                id: OrderId(ids.0),
                user_id: UserId(ids.1),
                status,
                items: items
                    .into_iter()
                    .map(|(p, name, price, quantity)| OrderLine {
                        product_id: ProductId(p),
                        name,
                        unit_price: Krw(price),
                        quantity,
                    })
                    .collect(),
                total_amount: Krw(amounts.0),
                discount_amount: Krw(amounts.1),
                pay_amount: Krw(amounts.2),
                user_coupon_id: coupon.map(UserCouponId),
                created_at: times.0,
                expires_at: times.1,
                paid_at: times.2,
                refunds: Refunds::from_parts(
                    Krw(amounts.3),
                    refunds
                        .into_iter()
                        .map(|(items, amount, reason, at)| Refund {
                            items,
                            amount: Krw(amount),
                            reason,
                            at,
                        })
                        .collect(),
                ),
            }
        }
    }

    proptest! {
        #[test]
        fn an_order_paid_event_is_serde_jsons_byte_for_byte(order in any_order(), at in any_time()) {
            let mut written = b"[".to_vec();
            order_paid(&mut written, &order, at);
            let expected = serde_json::to_vec(&PaidWire {
                event_id: format!("order-paid-{}", order.id),
                kind: "order_paid",
                order: &order,
                at,
            })
            .unwrap();
            prop_assert_eq!(&written[1..], &expected[..]);
            let mut alone = Vec::new();
            self::order(&mut alone, &order);
            prop_assert_eq!(alone, serde_json::to_vec(&order).unwrap());
        }

        #[test]
        fn an_order_refunded_event_is_serde_jsons_byte_for_byte(
            order_id: u64,
            number_of_refund: u32,
            amount: u64,
            items in any_refund_lines(),
            at in any_time(),
        ) {
            let mut written = Vec::new();
            order_refunded(&mut written, OrderId(order_id), number_of_refund, Krw(amount), &items, at);
            let expected = serde_json::to_vec(&RefundWire {
                event_id: format!("order-refunded-{order_id}-{number_of_refund}"),
                kind: "order_refunded",
                order_id: OrderId(order_id),
                amount: Krw(amount),
                items: &items,
                at,
            })
            .unwrap();
            prop_assert_eq!(written, expected);
        }
    }

    #[test]
    fn numbers_are_written_whole() {
        // proves the edges of the hand-written decimal
        for value in [0, 9, 10, 99, 100, 1_000_000_007, u64::MAX] {
            let mut out = Vec::new();
            number(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }
}
