//! `commerce-engine`: parse the command line and call the library.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: the hot path allocates small
/// messages and futures on one thread and frees them on another, where
/// glibc's arenas spent about 17% of the CPU (perf, order_pay).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "commerce-engine",
    version,
    about = "An actor-based commerce engine on sled",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, `serve` runs with these flags.
    #[command(flatten)]
    serve: commerce_engine::http::serve::ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve(commerce_engine::http::serve::ServeArgs),
    /// Run a seeded flash-sale scenario on the embedded engine and check the invariants.
    Simulate(commerce_engine::simulate::SimulateArgs),
    /// Load the embedded engine or a running server and report throughput and latency.
    Bench(commerce_engine::bench::BenchArgs),
    /// Recover a data dir read-only, check every invariant, print a summary.
    Verify(commerce_engine::verify::VerifyArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        None => {
            Ok(commerce_engine::http::serve::run(cli.serve).map_err(anyhow::Error::from_boxed)?)
        }
        Some(Command::Serve(args)) => {
            Ok(commerce_engine::http::serve::run(args).map_err(anyhow::Error::from_boxed)?)
        }
        Some(Command::Simulate(args)) => {
            Ok(commerce_engine::simulate::run(args).map_err(anyhow::Error::from_boxed)?)
        }
        Some(Command::Bench(args)) => {
            Ok(commerce_engine::bench::run(args).map_err(anyhow::Error::from_boxed)?)
        }
        Some(Command::Verify(args)) => {
            Ok(commerce_engine::verify::run(args).map_err(anyhow::Error::from_boxed)?)
        }
    }
}
