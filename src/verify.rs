//! `commerce-engine verify`. PLACEHOLDER: being built.

use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {}

pub fn run(_args: VerifyArgs) -> Result<ExitCode, crate::CliError> {
    Err("verify is not built yet".into())
}
