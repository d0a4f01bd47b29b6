//! The HTTP API of `API.md` (axum).

pub mod serve;
