//! Pure business rules: no actors, no I/O, no clock. Each entity is a state
//! machine: `decide_*` checks a command against the state and returns `Ok`
//! or a `Rejection` without changing anything; `hold*` marks what a decision
//! takes until its record is durable; `apply_*` applies a durable event and
//! cannot fail. `World` replays records over all entities at once.

pub mod coupon;
pub mod event;
pub mod id_bitmap;
pub mod ids;
pub mod key_hash;
pub mod limits;
pub mod money;
pub mod order;
pub mod platform;
pub mod product;
pub mod refund;
pub mod rejection;
pub mod stats;
pub mod time;
pub mod user;
pub mod views;
pub mod world;
