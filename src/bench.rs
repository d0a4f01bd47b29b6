//! `commerce-engine bench`. PLACEHOLDER: being built.

use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> Result<ExitCode, crate::CliError> {
    Err("bench is not built yet".into())
}
