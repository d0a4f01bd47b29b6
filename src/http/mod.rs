//! The HTTP API of `API.md` (axum): routes that parse, validate, call one
//! [`Engine`](crate::engine::Engine) method, and map errors to the codes of
//! `API.md` in one place.
//!
//! - [`auth`]: customer authentication (optional): JWTs (HS256, or
//!   RS256/ES256 from a JWKS file), who a request acts as, 401 and 403.
//! - [`error`]: [`ApiError`](error::ApiError), the one error type and its
//!   status mapping.
//! - [`extract`]: extractors that answer malformed input with 400/413 JSON.
//! - [`routes`]: one module per resource, each with its `router()`; the
//!   OpenAPI document is generated from their `#[utoipa::path]`s.
//! - [`edge`]: the one layer every route sits behind (the request id's
//!   scope and the access log, JSON errors, metrics, panics, admission control, timeout,
//!   body limit).
//! - [`layers`]: the tower-http layers around it: request ids and CORS.
//! - [`log_lines`]: what `serve`'s log lines look like, and the request
//!   each belongs to (its id travels with the request's task).
//! - [`logs`]: `serve`'s log lines, buffered on their way to stderr.
//! - [`server`]: the router, the bounded listener and [`serve`](server::serve), which runs until a shutdown
//!   future completes, so tests run the real server with their own signal.
//! - [`serve`]: the `serve` command (flags, data dir, demo seed, signals).
//! - [`demo`]: the embedded demo catalogue.
//! - [`dashboard`]: the operator's page, its assets compiled in, and the
//!   throughput history it charts (`routes::overview` answers its data).
//! - [`metrics`]: `/metrics` in Prometheus text.
//! - [`schema`]: OpenAPI schemas of the hand-serialized domain types.

pub mod auth;
pub mod cluster;
pub mod dashboard;
pub mod demo;
pub mod edge;
pub mod error;
pub mod extract;
pub mod layers;
pub mod log_lines;
pub mod logs;
pub mod metrics;
pub mod routes;
pub mod schema;
pub mod serve;
pub mod server;

pub use error::ApiError;
pub use server::{openapi, router, serve as serve_api, AppState, HttpSettings};
