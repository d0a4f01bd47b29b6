//! What the data platform receives: one event per fact it is told about,
//! derived from a durable journal record and the world it was applied to.
//!
//! Two forms of the same event: [`PlatformEvent`] as the outbox stores it
//! (through the codec, so bincode's field order is its layout: variants and
//! fields are only ever added at the end), and the JSON of `API.md`
//! written by [`PlatformEvent::write_json`] (through [`platform_json`]):
//! `{"event_id","type":"order_paid","order","at"}` and
//! `{"event_id","type":"order_refunded","order_id","amount","items","at"}`.

use crate::domain::event::{Event, Record};
use crate::domain::ids::OrderId;
use crate::domain::money::Krw;
use crate::domain::order::Order;
use crate::domain::platform_json;
use crate::domain::refund::RefundLine;
use crate::domain::time::Timestamp;
use serde::{Deserialize, Serialize};

/// An event for the data platform, as the outbox keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlatformEvent {
    /// An order was paid; `order` as the durable world held it then, `at`
    /// the time of the payment.
    OrderPaid { order: Order, at: Timestamp },
    /// Refund `number` (1, 2, ... of that order) returned `amount` for
    /// `items`, at `at`.
    OrderRefunded {
        order_id: OrderId,
        number: u32,
        amount: Krw,
        items: Vec<RefundLine>,
        at: Timestamp,
    },
}

/// [`PlatformEvent`] borrowing its order: encodes to the same bytes, so the
/// journal writer hands events over without copying orders.
#[derive(Serialize)]
pub enum PlatformEventRef<'a> {
    OrderPaid {
        order: &'a Order,
        at: Timestamp,
    },
    OrderRefunded {
        order_id: OrderId,
        number: u32,
        amount: Krw,
        items: &'a [RefundLine],
        at: Timestamp,
    },
}

/// The `type` of an order-paid event.
pub const ORDER_PAID: &str = "order_paid";

/// The stable id of the event of order `id`'s payment: a redelivery carries the same.
pub fn order_paid_id(id: OrderId) -> String {
    format!("order-paid-{id}")
}

/// The `type` of an order-refunded event.
pub const ORDER_REFUNDED: &str = "order_refunded";

/// The stable id of the event of refund `number` of order `id`.
pub fn order_refunded_id(id: OrderId, number: u32) -> String {
    format!("order-refunded-{id}-{number}")
}

impl PlatformEvent {
    /// Stable across redeliveries and restarts.
    pub fn event_id(&self) -> String {
        match self {
            PlatformEvent::OrderPaid { order, .. } => order_paid_id(order.id),
            PlatformEvent::OrderRefunded {
                order_id, number, ..
            } => order_refunded_id(*order_id, *number),
        }
    }

    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            PlatformEvent::OrderPaid { .. } => ORDER_PAID,
            PlatformEvent::OrderRefunded { .. } => ORDER_REFUNDED,
        }
    }

    /// When what it tells happened.
    pub fn at(&self) -> Timestamp {
        match self {
            PlatformEvent::OrderPaid { at, .. } | PlatformEvent::OrderRefunded { at, .. } => *at,
        }
    }

    /// Appends the event's JSON (one object, no newline) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            PlatformEvent::OrderPaid { order, at } => platform_json::order_paid(out, order, *at),
            PlatformEvent::OrderRefunded {
                order_id,
                number,
                amount,
                items,
                at,
            } => platform_json::order_refunded(out, *order_id, *number, *amount, items, *at),
        }
    }

    /// The event's JSON as a value (for views that embed it).
    pub fn to_json_value(&self) -> serde_json::Value {
        let mut out = Vec::new();
        self.write_json(&mut out);
        serde_json::from_slice(&out).expect("JSON just written parses")
    }
}

impl<'a> PlatformEventRef<'a> {
    /// The event `record` (applied at `world`'s state) gives the data
    /// platform, if any: `order` is looked up in the orders the world
    /// holds, and a paid order is held until a snapshot archives it.
    pub fn of(
        record: &'a Record,
        order: impl FnOnce(OrderId) -> Option<&'a Order>,
    ) -> Option<Self> {
        match &record.event {
            Event::OrderPaid { order_id, .. } => {
                order(*order_id).map(|order| PlatformEventRef::OrderPaid {
                    order,
                    at: record.at,
                })
            }
            Event::OrderRefunded { order } => Self::refunded(order),
            _ => None,
        }
    }

    /// The event of an order's last refund (the record holds the order as
    /// it reads after it: no lookup needed).
    pub fn refunded(order: &'a Order) -> Option<Self> {
        let refund = order.refunds.last()?;
        Some(PlatformEventRef::OrderRefunded {
            order_id: order.id,
            number: order.refunds.len() as u32,
            amount: refund.amount,
            items: &refund.items,
            at: refund.at,
        })
    }

    /// When what it tells happened.
    pub fn at(&self) -> Timestamp {
        match self {
            PlatformEventRef::OrderPaid { at, .. } | PlatformEventRef::OrderRefunded { at, .. } => {
                *at
            }
        }
    }

    pub fn to_owned(&self) -> PlatformEvent {
        match self {
            PlatformEventRef::OrderPaid { order, at } => PlatformEvent::OrderPaid {
                order: (*order).clone(),
                at: *at,
            },
            PlatformEventRef::OrderRefunded {
                order_id,
                number,
                amount,
                items,
                at,
            } => PlatformEvent::OrderRefunded {
                order_id: *order_id,
                number: *number,
                amount: *amount,
                items: items.to_vec(),
                at: *at,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        crate::domain::order::sample_paid_order(7)
    }

    #[test]
    fn an_order_paid_event_is_the_json_of_the_contract() {
        // proves the field names, type, stable id and RFC 3339 time of API.md
        let event = PlatformEvent::OrderPaid {
            order: order(),
            at: Timestamp(2_000),
        };
        let mut out = Vec::new();
        event.write_json(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(r#"{"event_id":"order-paid-7","type":"order_paid","order":{"#));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["order"]["id"], 7);
        assert_eq!(v["order"]["status"], "paid");
        assert_eq!(v["at"], "1970-01-01T00:00:02Z");
        assert_eq!(v.as_object().unwrap().len(), 4);
    }

    #[test]
    fn an_order_refunded_event_is_the_json_of_the_contract_with_an_id_per_refund() {
        // proves the fields of API.md and that each refund of an order has an id of its own
        use crate::domain::refund::RefundRequest;
        let mut o = order();
        for at in [3_000, 4_000] {
            let req = RefundRequest {
                items: Some(vec![RefundLine {
                    product_id: o.items[0].product_id,
                    quantity: 1,
                }]),
                reason: None,
            };
            let refund = o.decide_refund(&req, Timestamp(at)).unwrap();
            o.apply_refund(refund);
        }
        let record = Record::new(
            Timestamp(4_000),
            Event::OrderRefunded {
                order: Box::new(o.clone()),
            },
        );
        let event = PlatformEventRef::of(&record, |_| None).unwrap().to_owned();
        let mut out = Vec::new();
        event.write_json(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            r#"{"event_id":"order-refunded-7-2","type":"order_refunded","order_id":7,"amount":1000,"items":[{"product_id":2,"quantity":1}],"at":"1970-01-01T00:00:04Z"}"#
        ));
        assert_eq!(event.kind(), ORDER_REFUNDED);
        // the borrowed form encodes to the owned form's bytes
        let owned = crate::store::codec::encode(crate::store::codec::Kind::PlatformEvent, &event);
        let borrowed = crate::store::codec::encode(
            crate::store::codec::Kind::PlatformEvent,
            &PlatformEventRef::refunded(&o).unwrap(),
        );
        assert_eq!(owned.unwrap(), borrowed.unwrap());
    }
}
