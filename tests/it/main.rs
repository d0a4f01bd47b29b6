//! Every integration test of the crate, in one test binary: each module
//! below was its own crate, and each crate linked the whole dependency graph
//! again (most of the test command's time). Shared helpers are modules too.

mod browser;
mod cluster_support;
mod common_http;
mod durability_support;
mod engine_support;
mod model_reference;
mod platform_sink;
mod quiet;

mod bench_embedded;
mod bench_http;
mod cluster_engine;
mod cluster_failover;
mod cluster_lease;
mod cluster_model;
mod cluster_stream;
mod cluster_trim;
mod crash_limits;
mod crash_sigkill;
mod dashboard_browser;
mod dashboard_http;
mod durability_codec;
mod durability_disk_full;
mod durability_faults;
mod durability_restart;
mod durability_verify;
mod engine_archive;
mod engine_flows;
mod engine_limits;
mod engine_model;
mod engine_races;
mod golden_decode;
mod http_admin_lists;
mod http_api;
mod http_auth;
mod http_bad_input;
mod http_concurrency;
mod http_limits;
mod http_openapi;
mod http_ops;
mod http_serve;
mod lifetime;
mod ops_files;
mod outbox_delivery;
mod outbox_http;
mod platform_nats;
mod refunds;
mod simulate_flash_sale;
mod stored_values;
