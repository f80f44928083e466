//! The `authd` binary: parse the CLI, start telemetry, dispatch.

use std::process::ExitCode;

use authd::cli::{run, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_with_default();
    authd::telemetry::init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("authd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
