//! # commerce-engine
//!
//! A commerce engine for a shop's hot path: wallets, stock, first-come
//! coupons, carts, orders, payment, cancellation, expiry, a best-seller
//! ranking and delivery of paid orders to a data platform, where
//! correctness under concurrency is the whole point.
//!
//! ## A tour of the layout
//!
//! - [`domain`]: the business rules, pure. Each entity (user, product,
//!   campaign, order) is a state machine: `decide` checks a command and
//!   returns the entity's event or a
//!   [`Rejection`](domain::rejection::Rejection) without changing anything;
//!   `hold*` marks what a decision takes until its record is durable;
//!   `apply` applies a durable event and cannot fail. The actors and
//!   [`World`](domain::world::World) (which replays journal records over
//!   every entity and checks the invariants) call the same `apply`. No
//!   actors, I/O or clock in here.
//! - [`engine`]: one actix actor per user, product and coupon campaign,
//!   an order coordinator running sagas, a stats actor, all thin shells
//!   over the domain; and [`Engine`](engine::Engine), the async facade with
//!   one method per use case. Idempotency keys live here.
//! - [`store`]: durability. The codec (checksummed frames; bincode 1.3.3
//!   pinned inside it), the [`Store`](store::Store) trait with sled, memory
//!   and fault-injecting backends, the group-commit journal writer, and
//!   recovery from snapshots and the journal.
//! - [`cluster`]: replication (optional): the journal as a NATS JetStream
//!   stream, one leader by a lease, stale writers fenced by the stream.
//! - [`http`]: the axum API of `API.md`, with one error type mapped to the
//!   documented codes.
//! - [`bench`], [`simulate`], [`verify`]: the other subcommands of the binary.
//! - [`check`]: what clients saw acknowledged, and the check that a
//!   recovered world, or a server through its API, holds it.
//!
//! ## Why it is shaped this way
//!
//! Actors own their state, so no lock guards any domain state: per entity,
//! commands run one at a time in arrival order. A decision is made
//! synchronously inside one handler, never across an await. Restrictive
//! effects (stock reserved, a debit, a coupon issued or used) are *held*
//! at once; credits and returns are applied only once durable. Every
//! durable record is therefore valid when replayed in journal order, and a
//! crash loses only holds, which were never acknowledged.
//!
//! ```
//! use commerce_engine::domain::money::Krw;
//! use commerce_engine::engine::{Engine, EngineConfig, SystemClock};
//! use commerce_engine::store::MemoryStore;
//! use std::sync::Arc;
//!
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let engine = Engine::start(EngineConfig::default(), Box::new(MemoryStore::new()), Arc::new(SystemClock)).unwrap();
//! rt.block_on(async {
//!     let user = engine.create_user("kim", None).await.unwrap();
//!     let balance = engine.charge(user.id, Krw(10_000), None).await.unwrap();
//!     assert_eq!(balance.balance, Krw(10_000));
//! });
//! engine.shutdown();
//! ```

pub mod bench;
pub mod check;
pub mod cluster;
pub mod domain;
pub mod engine;
pub mod http;
pub mod process;
pub mod simulate;
pub mod store;
pub mod verify;

/// What a command of the binary fails with (`anyhow` stays in `main.rs`).
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// Prints a command's report (JSON or its table) and turns its verdict into
/// the exit code. A closed pipe (`| head`) is not a failure of the run.
pub(crate) fn emit_report(
    json: bool,
    report: &impl serde::Serialize,
    table: impl FnOnce() -> String,
    ok: bool,
) -> Result<std::process::ExitCode, CliError> {
    let text = if json {
        serde_json::to_string_pretty(report)? + "\n"
    } else {
        table()
    };
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
