//! The `wasmover` command: parses the arguments and runs the command
//! (see [`cli`]), printing a failure as one line on stderr.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMOVER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a Pod's log or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = cli::Cli::parse();
    match cli::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmover: {e:#}");
            ExitCode::FAILURE
        }
    }
}
