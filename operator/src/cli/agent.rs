//! `wasmover agent receive|send`: one side of a transfer between two
//! hosts.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use indicatif::DecimalBytes as HumanBytes;
use wasmover_host::{MoverEngine, Observer};
use wasmover_operator::agent;
use wasmover_operator::agent_log::ProgressLines;

use super::{Cli, MoverArgs, VerifyArgs, summary};

#[derive(Subcommand)]
pub enum AgentRole {
    /// Listen for a sending agent and make VOLUME equal to its volume.
    Receive {
        /// Where to listen, HOST:PORT.
        #[arg(long)]
        listen: String,
        /// Keep serving transfers instead of exiting after the first.
        #[arg(long)]
        keep_serving: bool,
        /// Refused or failed connections to tolerate; the next one is the
        /// agent's error.
        #[arg(long, default_value_t = 2)]
        max_failures: u32,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Connect to a receiving agent and send VOLUME (read-only).
    Send {
        /// The receiver, HOST:PORT.
        #[arg(long)]
        connect: String,
        /// Keep trying to connect this many seconds while nothing listens.
        #[arg(long, default_value_t = 0.0)]
        connect_retry_secs: f64,
        #[command(flatten)]
        agent: AgentArgs,
    },
}

/// What both agent roles take.
#[derive(clap::Args)]
pub(super) struct AgentArgs {
    /// The volume: a directory, or a block device or image file (a block
    /// volume, moved as one image and patched in place). A missing
    /// receiving volume is created as a directory.
    #[arg(long)]
    volume: PathBuf,
    /// Where a receiving block volume keeps its undo journal while it is
    /// patched: a file on a filesystem that outlives the run, with room
    /// for the bytes one run overwrites. Required for a block device
    /// [default for an image file: `.NAME.wasmover-journal` beside it]
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Where a receiving directory keeps what one run leaves for the next
    /// (partial content of cut-off files, file and granule hashes, the
    /// undo journal of a patch in place), outside the volume: a directory
    /// of its own on a filesystem that outlives the agent (in a cluster,
    /// the destination's metadata PVC) [default: under the cache
    /// directory, named for the volume's canonical path; a temporary one
    /// with --no-cache]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The pre-shared key: at least 32 random bytes, as hex text (e.g. the
    /// Secret blocksync creates) or raw.
    #[arg(long)]
    key_file: PathBuf,
    /// Seconds to wait for the TCP connection.
    #[arg(long, default_value_t = wasmover_net::Options::default().connect_timeout.as_secs_f64())]
    connect_timeout_secs: f64,
    /// Seconds the TLS handshake and greeting may take.
    #[arg(long, default_value_t = wasmover_net::Options::default().handshake_timeout.as_secs_f64())]
    handshake_timeout_secs: f64,
    /// Seconds without progress after which the peer is declared dead.
    #[arg(long, default_value_t = wasmover_net::Options::default().idle_timeout.as_secs_f64())]
    idle_timeout_secs: f64,
    /// Most bytes per second to send (TLS bytes) [default: no limit]
    #[arg(long)]
    rate_limit: Option<u64>,
    /// The zstd level at which the deltas this agent sends compress their
    /// literals (chunks that do not compress go as they are), or `off`
    #[arg(long, value_name = "LEVEL|off", default_value = "3")]
    compress_level: String,
    /// After a transfer, write its report here as JSON (the transfer
    /// report's fields in camelCase: `treeDigest`, `verified`,
    /// `bytesOnWire`, ..., and `module`, the `name@digest` that ran). In a
    /// Pod, `/dev/termination-log`: the mover's control plane reads it
    /// from the Pod's status.
    #[arg(long)]
    report_file: Option<PathBuf>,
    #[command(flatten)]
    verify: VerifyArgs,
    #[command(flatten)]
    mover: MoverArgs,
}

impl AgentArgs {
    fn options(&self) -> anyhow::Result<wasmover_net::Options> {
        let secs = |s: f64| {
            std::time::Duration::try_from_secs_f64(s)
                .map_err(|_| anyhow::anyhow!("{s} is not a number of seconds"))
        };
        Ok(wasmover_net::Options {
            connect_timeout: secs(self.connect_timeout_secs)?,
            handshake_timeout: secs(self.handshake_timeout_secs)?,
            idle_timeout: secs(self.idle_timeout_secs)?,
            rate_limit: self.rate_limit,
            ..wasmover_net::Options::default()
        })
    }
}

/// `wasmover agent receive|send`: one line per transfer on stdout; on
/// stderr refused or failed connections, and progress: a bar on a
/// terminal, else [`ProgressLines`] for the operator to read.
pub fn run(engine: &MoverEngine, cli: &Cli, role: &AgentRole) -> anyhow::Result<ExitCode> {
    let (AgentRole::Receive { agent: args, .. } | AgentRole::Send { agent: args, .. }) = role;
    let module = args.mover.load(engine, cli)?;
    // The module that ran, as the summary and the report name it.
    let module_id = format!("{}@{}", module.name(), module.digest());
    let key = wasmover_net::Psk::from_file(&args.key_file)?;
    let options = args.options()?;
    wasmover_host::Channel::set_network_default(match args.compress_level.as_str() {
        "off" => None,
        level => Some(level.parse().map_err(|_| {
            anyhow::anyhow!("--compress-level {level}: expected a zstd level or off")
        })?),
    });
    let volume = agent::VolumePath {
        path: args.volume.clone(),
        journal: args.journal.clone(),
        hashes: match role {
            AgentRole::Send { .. } => args.verify.source_hashes(cli, &args.volume),
            AgentRole::Receive { .. } => args.verify.hashes.clone(),
        },
        read_every_file: args.verify.read_every_file,
    };
    let transfer = agent::Transfer {
        module: &module,
        limits: args.mover.limits(),
        parameters: &args.mover.params,
    };
    // One line per finished transfer: `sent DIR to PEER ...` or
    // `received DIR from PEER ...`.
    let report = |action: &str, direction: &str, f: &agent::Finished| {
        println!(
            "{action} {} {direction} {} with {} in {:.2}s: {}; {} in and {} out through TLS",
            args.volume.display(),
            f.peer,
            module_id,
            f.elapsed.as_secs_f64(),
            summary(&f.report),
            HumanBytes(f.tls_bytes.0),
            HumanBytes(f.tls_bytes.1),
        );
        if let Some(path) = &args.report_file {
            let report = wasmover_contract::AgentReport {
                module: module_id.clone(),
                ..wasmover_contract::AgentReport::from(&f.report)
            };
            let json = serde_json::to_string(&report).expect("a report serializes");
            if let Err(e) = std::fs::write(path, json) {
                eprintln!(
                    "wasmover: cannot write the report to {}: {e}",
                    path.display()
                );
            }
        }
    };
    match role {
        AgentRole::Send {
            connect,
            connect_retry_secs,
            ..
        } => {
            let retry = std::time::Duration::try_from_secs_f64(*connect_retry_secs)?;
            let progress = ProgressOut::on_stderr();
            let sent = agent::send(
                &transfer,
                &volume,
                connect,
                &key,
                &options,
                retry,
                progress.observer(),
            );
            progress.finish();
            report("sent", "to", &sent?);
            Ok(ExitCode::SUCCESS)
        }
        AgentRole::Receive {
            listen,
            keep_serving,
            max_failures,
            ..
        } => {
            let state = super::state_dir(cli, args.state_dir.as_deref());
            let receiver = agent::Receiver::bind(&transfer, listen, &volume, state, &key, options)?;
            // One write, so that a script polling a log file never reads
            // half the address (eprintln! writes it piece by piece).
            let line = format!("wasmover: listening on {}\n", receiver.local_addr()?);
            std::io::stderr().write_all(line.as_bytes())?;
            let mut failures = 0;
            loop {
                let progress = ProgressOut::on_stderr();
                let received = receiver.receive(&transfer, progress.observer());
                progress.finish();
                match received {
                    Ok(f) => {
                        report("received", "from", &f);
                        if !keep_serving {
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                    Err(e) if failures < *max_failures => {
                        failures += 1;
                        eprintln!("wasmover: {e}; waiting for the next connection");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// Where an agent's progress goes: a bar on a terminal; otherwise (a
/// Pod's log) progress lines, which the operator reads into the status.
enum ProgressOut {
    Bar(Arc<wasmover_operator::ProgressBar>),
    Lines(Arc<ProgressLines>),
}

impl ProgressOut {
    fn on_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Bar(Arc::new(wasmover_operator::ProgressBar::on_stderr()))
        } else {
            Self::Lines(Arc::default())
        }
    }

    fn observer(&self) -> Arc<dyn Observer> {
        match self {
            Self::Bar(bar) => bar.clone(),
            Self::Lines(lines) => lines.clone(),
        }
    }

    /// Removes the bar, or writes the last progress held back.
    fn finish(&self) {
        match self {
            Self::Bar(bar) => bar.finish(),
            Self::Lines(lines) => lines.finish(),
        }
    }
}
