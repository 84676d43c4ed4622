//! `kubectl-staticpod`: found by kubectl on PATH as `kubectl staticpod`.

use std::process::ExitCode;

use clap::Parser;
use kubectl_staticpod::cli::Cli;
use kubectl_staticpod::error::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the plugin makes a handful of requests and exits; start-up time
    // matters more than parallelism.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(kubectl_staticpod::run::run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
