//! `commerce-engine serve`. PLACEHOLDER: being built (HTTP issue).

use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where the HTTP API listens.
    #[arg(long, env = "COMMERCE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
}

pub fn run(_args: ServeArgs) -> Result<ExitCode, crate::CliError> {
    Err("serve is not built yet".into())
}
