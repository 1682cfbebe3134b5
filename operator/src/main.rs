//! The `wasmover` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::DecimalBytes as HumanBytes;
use wasmover::builtin::{self, DEFAULT_MOVER};
use wasmover::{guest_test, replicate};
use wasmover_runtime::bindings::types::Parameter;
use wasmover_runtime::{EngineConfig, MoverEngine, MoverLimits};

/// Replicate volumes with movers that run as WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Directory of precompiled modules [default: $XDG_CACHE_HOME/wasmover or ~/.cache/wasmover]
    #[arg(long, global = true, env = "WASMOVER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile modules every time instead of caching them.
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make DST equal to SRC (content, modes, mtimes, symlinks; extraneous
    /// entries removed) with a mover's data plane, both sides in this process.
    Replicate {
        /// The source directory (read-only to the mover).
        src: PathBuf,
        /// The destination directory (created if missing).
        dst: PathBuf,
        /// A built-in mover name or a path to a mover component (.wasm).
        #[arg(long, default_value = DEFAULT_MOVER)]
        mover: String,
        /// A parameter for the mover, KEY=VALUE (repeatable).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<Parameter>,
        /// Guest CPU time per side, in milliseconds.
        #[arg(long, default_value_t = MoverLimits::default().cpu_time_ms)]
        cpu_time_ms: u64,
        /// Linear memory per side, in bytes.
        #[arg(long, default_value_t = MoverLimits::default().memory_bytes)]
        memory_bytes: u64,
    },
    /// Run a guest's wasm unit-test harness inside the runtime.
    Test {
        /// The harness, a command component (see `cargo xtask guest-tests`).
        harness: PathBuf,
        /// Arguments for the harness (libtest's: filters, --skip, --exact).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// List the built-in movers and what they export.
    Movers,
    /// Run the Kubernetes operator (KUBECONFIG or in-cluster config).
    Operator {
        /// Where to serve /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: std::net::SocketAddr,
        /// A mover component to offer besides the built-in ones (repeatable).
        #[arg(long = "module", value_name = "FILE.wasm")]
        modules: Vec<PathBuf>,
        /// Reconcile without taking the leader Lease (only with one replica).
        #[arg(long)]
        no_leader_election: bool,
        /// Namespace of the leader Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// This replica's identity in the Lease [default: the Pod name, else host name and process id]
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Seconds between passes that delete objects whose owner is gone.
        #[arg(long, default_value_t = 300)]
        gc_interval_secs: u64,
    },
}

fn parse_param(s: &str) -> Result<Parameter, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    Ok(Parameter {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

fn cache_dir(cli: &Cli) -> Option<PathBuf> {
    if cli.no_cache {
        return None;
    }
    cli.cache_dir.clone().or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("wasmover/precompiled"))
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMOVER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmover: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let engine = MoverEngine::new(EngineConfig {
        cache_dir: cache_dir(cli),
        ..EngineConfig::default()
    })?;
    match &cli.command {
        Command::Replicate {
            src,
            dst,
            mover,
            params,
            cpu_time_ms,
            memory_bytes,
        } => {
            let module = builtin::resolve(&engine, mover)?;
            let limits = MoverLimits {
                cpu_time_ms: *cpu_time_ms,
                memory_bytes: *memory_bytes,
                ..MoverLimits::default()
            };
            let bar = Arc::new(wasmover::ProgressBar::on_stderr());
            let started = Instant::now();
            let report = replicate::replicate(&module, src, dst, limits, params, bar.clone());
            bar.finish();
            let r = report?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "replicated {} -> {} with {} in {secs:.2}s: {} entries ({} files rebuilt, {} removed); \
                 {} of files: {} matched, {} sent as literals, {} on the wire",
                src.display(),
                dst.display(),
                module.name(),
                r.entries_total,
                r.files_transferred,
                r.entries_deleted,
                HumanBytes(r.bytes_total),
                HumanBytes(r.bytes_matched),
                HumanBytes(r.bytes_literal),
                HumanBytes(r.bytes_on_wire),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { harness, args } => Ok(if guest_test::run(&engine, harness, args)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Operator {
            metrics_addr,
            modules,
            no_leader_election,
            lease_namespace,
            identity,
            gc_interval_secs,
        } => {
            let mut catalog = builtin::catalog(&engine)?;
            for path in modules {
                catalog.register(engine.load_file(path)?)?;
            }
            let identity = identity.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "wasmover".into());
                format!("{host}-{}", std::process::id())
            });
            let options = wasmover::controller::RunOptions {
                leader: (!no_leader_election)
                    .then(|| wasmover::leader::LeaseConfig::new(lease_namespace, &identity)),
                gc_interval: std::time::Duration::from_secs(*gc_interval_secs),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let metrics = Arc::new(wasmover::metrics::Metrics::default());
                let config = kube::Config::infer().await?;
                let client = wasmover::client::instrumented(config, metrics.clone())?;
                let listener = tokio::net::TcpListener::bind(metrics_addr).await?;
                let server = axum::serve(listener, wasmover::metrics::router(metrics.clone()));
                tokio::select! {
                    result = wasmover::controller::run(client, catalog, metrics, options) => result,
                    result = server => Ok(result?),
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Movers => {
            for module in builtin::catalog(&engine)?.modules() {
                let capabilities: Vec<String> = module
                    .capabilities()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                println!(
                    "{}\t{}\t{}",
                    module.name(),
                    module.digest(),
                    capabilities.join(" ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
