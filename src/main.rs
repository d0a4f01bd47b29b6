//! `commerce-engine`: parse the command line and call the library.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// jemalloc, with its background threads, rather than glibc's malloc or
/// mimalloc. The hot path allocates small messages and futures on one
/// thread and frees them on another: glibc's arenas spend about 17% of the
/// CPU on that (perf, order_pay), and mimalloc, as fast, keeps ever more of
/// what is freed so (the server's RSS rises about 4 MiB a minute under
/// mixed load while the live heap stays flat). jemalloc gives it back, so
/// RSS stays within a few percent over 10 minutes (docs/performance.md,
/// "jemalloc, with its background threads").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Remove a decommissioned node's report from a cluster, so that the
    /// journal stream's trimming no longer waits for it.
    ClusterForget(commerce_engine::cluster::forget::ForgetArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        None => Ok(serve(cli.serve)),
        Some(Command::Serve(args)) => Ok(serve(args)),
        Some(Command::Simulate(args)) => {
            Ok(commerce_engine::simulate::run(args).map_err(anyhow::Error::from_boxed)?)
        }
        Some(Command::Bench(args)) => {
            Ok(commerce_engine::bench::run(args).map_err(anyhow::Error::from_boxed)?)
        }
        Some(Command::Verify(args)) => {
            Ok(commerce_engine::verify::run(args).map_err(anyhow::Error::from_boxed)?)
        }
        Some(Command::ClusterForget(args)) => match commerce_engine::cluster::forget::run(args) {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// `serve`, its failure told as one sentence on stderr (exit code 1), never
/// as a Debug dump or a backtrace.
fn serve(args: commerce_engine::http::serve::ServeArgs) -> ExitCode {
    match commerce_engine::http::serve::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Transparent huge pages back each 2 MiB range whole, zeroed, as soon as
/// any of it is touched, and keep it whole. mimalloc asks for them on its
/// arenas (`MADV_HUGEPAGE`); jemalloc does not, but a kernel set to
/// `always` gives them anyway. Off for the process, the resident set
/// follows what is in use: with mimalloc, 27 instead of 69 MiB before
/// `bench` sets anything up, and about 70 MiB lower in 5-minute mixed runs
/// (docs/performance.md, "Transparent huge pages off for the process").
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory
        // of ours; a kernel without it answers EINVAL, which changes nothing.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            eprintln!(
                "note: transparent huge pages stay on: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
