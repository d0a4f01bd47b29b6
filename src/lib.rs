pub mod domain;
pub mod engine;
pub mod store;
