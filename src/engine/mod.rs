pub mod actor;
pub mod admin_lists;
pub mod campaign_actor;
pub mod clock;
pub mod cluster_node;
pub mod cluster_trim;
pub mod commit;
pub mod config;
pub mod coordinator;
pub mod delivery;
pub mod directory;
pub mod error;
pub mod facade;
pub mod idempotency;
pub mod keyed_request;
pub mod product_actor;
pub mod readiness;
pub mod refund;
pub mod registry;
pub mod stats_actor;
pub mod user_actor;

pub use admin_lists::OrderFilter;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{DataPlatform, EngineConfig};
pub use coordinator::OrderSource;
pub use error::{Error, Result};
pub use facade::{
    current_thread_runtime, Engine, EngineMetrics, NewCoupon, PageRequest, PlaceOrder, StartError,
};
pub use idempotency::IdempotencyKey;
pub use readiness::Readiness;
