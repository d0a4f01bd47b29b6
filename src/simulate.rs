//! `commerce-engine simulate`. PLACEHOLDER: being built.

use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {}

pub fn run(_args: SimulateArgs) -> Result<ExitCode, crate::CliError> {
    Err("simulate is not built yet".into())
}
