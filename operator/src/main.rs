//! The `wasmover` command: parses the arguments and runs the command
//! (see [`cli`]), printing a failure as one line on stderr.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMOVER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr);
    // One JSON object a line for log collectors; text otherwise, in
    // colours only on a terminal (a Pod's log or a pipe gets plain text).
    match std::env::var("WASMOVER_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().init(),
        Ok("text") | Err(_) => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Ok(other) => {
            eprintln!("wasmover: WASMOVER_LOG_FORMAT must be text or json, not {other:?}");
            return ExitCode::FAILURE;
        }
    }
    let cli = cli::Cli::parse();
    match cli::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmover: {e:#}");
            ExitCode::FAILURE
        }
    }
}
