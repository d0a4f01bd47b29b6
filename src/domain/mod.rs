//! Pure business rules: no actors, no I/O, no clock. Each entity is a state
//! machine over its own command and event types:
//!
//! - `decide(&self, command, now, ..) -> Decision<Event>` checks a command
//!   against the state (holds counted) and answers the entity's event, or a
//!   `Rejection`, changing nothing;
//! - `hold` marks what a decided event takes until its record is durable,
//!   `drop_hold` lets go of it (durable or not);
//! - `apply(&mut self, event, at)` applies a durable event and cannot fail.
//!
//! A journal [`Event`](event::Event) is one record of one decision and may
//! touch several entities: a paid order is `OrderEvent::Paid` for the
//! order, `ProductEvent::Sold` for each line's product and
//! `UserEvent::Paid` for the wallet. The actors give each entity its part
//! through `apply` once the record is durable; `World::apply` (recovery,
//! the journal writer's view, a standby) dispatches the same parts to the
//! same `apply`. Adding an event means one arm in each touched entity's
//! `apply` and one line in `World`'s dispatch.

pub mod coupon;
pub mod coupon_terms;
pub mod event;
pub mod id_bitmap;
pub mod ids;
pub mod invariants;
pub mod key_hash;
pub mod limits;
pub mod money;
pub mod order;
pub mod platform;
pub mod platform_json;
pub mod product;
pub mod purchase_limit;
pub mod refund;
pub mod rejection;
pub mod stats;
pub mod time;
pub mod user;
pub mod varint;
pub mod views;
pub mod world;
