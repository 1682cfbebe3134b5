//! The `wasmover` command: parses the arguments and runs the command
//! (see [`cli`]), printing a failure as one line on stderr.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMOVER_LOG")
                // The plugin reports kube's failures itself, naming the
                // context and resource: kube's own error logs would repeat
                // them.
                .unwrap_or_else(|_| match cli::kubectl::called_as_plugin() {
                    true => "warn,kube_client=off".into(),
                    false => "warn".into(),
                }),
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
    // Called as `kubectl-wasmover` (a symlink to this binary on PATH),
    // it is the kubectl plugin.
    if cli::kubectl::called_as_plugin() {
        let plugin = cli::kubectl::Plugin::parse();
        return match cli::kubectl::run(&plugin) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
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
