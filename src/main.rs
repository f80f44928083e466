//! The `authd` binary: parse the CLI, start telemetry, dispatch.

use std::process::ExitCode;

use authd::cli::{run, Cli};

// Every request allocates a few dozen small blocks across threads; glibc's
// malloc showed as ~12 % of the bearer check's CPU, mimalloc serves them from
// per-thread pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
