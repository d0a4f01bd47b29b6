pub mod domain;
pub mod engine;
pub mod store;
pub mod http;
pub mod bench;
pub mod simulate;
pub mod verify;

/// What a command of the binary fails with (`anyhow` stays in `main.rs`).
pub type CliError = Box<dyn std::error::Error + Send + Sync>;
