//! What the data platform receives: one event per fact it is told about,
//! derived from a durable journal record and the world it was applied to.
//!
//! Two forms of the same event: [`PlatformEvent`] as the outbox stores it
//! (through the codec, so bincode's field order is its layout: variants and
//! fields are only ever added at the end), and the JSON of `API.md`
//! written by [`PlatformEvent::write_json`]:
//! `{"event_id","type":"order_paid","order","at"}`. A refund is one more
//! variant here and one more arm in each `match` below.

use crate::domain::event::{Event, Record};
use crate::domain::ids::OrderId;
use crate::domain::order::Order;
use crate::domain::time::Timestamp;
use serde::{Deserialize, Serialize};

/// An event for the data platform, as the outbox keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlatformEvent {
    /// An order was paid; `order` as the durable world held it then, `at`
    /// the time of the payment.
    OrderPaid { order: Order, at: Timestamp },
}

/// [`PlatformEvent`] borrowing its order: encodes to the same bytes, so the
/// journal writer hands events over without copying orders.
#[derive(Serialize)]
pub enum PlatformEventRef<'a> {
    OrderPaid { order: &'a Order, at: Timestamp },
}

/// The `type` of an order-paid event.
pub const ORDER_PAID: &str = "order_paid";

/// The stable id of the event of order `id`'s payment: a redelivery carries the same.
pub fn order_paid_id(id: OrderId) -> String {
    format!("order-paid-{id}")
}

/// The JSON `API.md` gives the data platform (field order as documented).
#[derive(Serialize)]
struct Wire<'a> {
    event_id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    order: &'a Order,
    at: Timestamp,
}

impl PlatformEvent {
    /// Stable across redeliveries and restarts.
    pub fn event_id(&self) -> String {
        match self {
            PlatformEvent::OrderPaid { order, .. } => order_paid_id(order.id),
        }
    }

    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            PlatformEvent::OrderPaid { .. } => ORDER_PAID,
        }
    }

    /// When what it tells happened.
    pub fn at(&self) -> Timestamp {
        match self {
            PlatformEvent::OrderPaid { at, .. } => *at,
        }
    }

    /// Appends the event's JSON (one object, no newline) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let wire = match self {
            PlatformEvent::OrderPaid { order, at } => Wire {
                event_id: self.event_id(),
                kind: ORDER_PAID,
                order,
                at: *at,
            },
        };
        // Serializing plain data into a Vec cannot fail: no map has
        // non-string keys and the writer never errs.
        serde_json::to_writer(out, &wire).expect("an event serializes to JSON");
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
    pub fn of(record: &Record, order: impl FnOnce(OrderId) -> Option<&'a Order>) -> Option<Self> {
        match &record.event {
            Event::OrderPaid { order_id, .. } => {
                order(*order_id).map(|order| PlatformEventRef::OrderPaid {
                    order,
                    at: record.at,
                })
            }
            _ => None,
        }
    }

    pub fn to_owned(&self) -> PlatformEvent {
        match self {
            PlatformEventRef::OrderPaid { order, at } => PlatformEvent::OrderPaid {
                order: (*order).clone(),
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
}
