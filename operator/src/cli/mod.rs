//! The `wasmover` command line: the arguments, shared by the commands,
//! and the dispatch to one file per command group.

mod agent;
pub mod kubectl;
mod modules;
mod operator;
mod replicate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::DecimalBytes as HumanBytes;
use wasmover_host::bindings::types::{Parameter, TransferReport};
use wasmover_host::{EngineConfig, MoverEngine, MoverLimits, MoverModule};
use wasmover_operator::builtin::{self, DEFAULT_MOVER};
use wasmover_operator::guest_test;
use wasmover_operator::replicate::StateDir;

use agent::AgentRole;
use modules::RegistryArgs;

/// Replicate volumes with movers that run as WebAssembly components.
#[derive(Parser)]
#[command(name = "wasmover", version, about)]
pub struct Cli {
    /// Directory of precompiled modules [default: $XDG_CACHE_HOME/wasmover or ~/.cache/wasmover]
    #[arg(long, global = true, env = "WASMOVER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile modules every time instead of caching them.
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make DST equal to SRC (content, modes, mtimes, symlinks; extraneous
    /// entries removed) with a mover's data plane, both sides in this process.
    Replicate {
        /// The source (read-only to the mover): a directory, or a block
        /// device or image file.
        src: PathBuf,
        /// The destination, of the source's kind: a directory (created if
        /// missing), or a block device or image file (an image file is
        /// created if missing and takes the source's length; a device must
        /// have it).
        dst: PathBuf,
        /// Undo journal of a block-volume destination (see `agent
        /// --journal`) [default for an image file: beside it]
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Where a directory destination keeps what one run leaves for the
        /// next (partial content of cut-off files, file and granule hashes,
        /// the undo journal of a patch in place), outside it: a directory
        /// of its own [default: under the cache directory, named for the
        /// destination's canonical path; a temporary one with --no-cache]
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        #[command(flatten)]
        verify: VerifyArgs,
        #[command(flatten)]
        mover: MoverArgs,
    },
    /// One side of a transfer between two hosts: `receive` listens, `send`
    /// connects; TLS 1.3, both ends authenticated by a pre-shared key.
    Agent {
        #[command(subcommand)]
        role: AgentRole,
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
    /// Push a mover component to a registry as a wasm OCI artifact
    /// (config application/vnd.wasm.config.v0+json, one application/wasm
    /// layer) and print its manifest digest.
    Push {
        /// The component (.wasm); it must load as a mover or a command.
        file: PathBuf,
        /// Where to push: oci://host[:port]/repo[:tag].
        reference: String,
    },
    /// Pull a module into the module store, precompile it, and print the
    /// reference pinned by digest.
    Pull {
        /// oci://host[:port]/repo[:tag][@sha256:...]
        reference: String,
        /// Also write the module's bytes to this file.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Describe a module (an OCI reference or a .wasm file): contract
    /// version, exports, optional capabilities, imports, size and digest.
    Inspect {
        /// oci://... or a path to a component.
        module: String,
    },
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
        /// The admin's policy (YAML): allowed module sources, whether tags
        /// without digests are allowed, default and maximum limits
        /// [default: anything is allowed]
        #[arg(long, value_name = "FILE.yaml", env = "WASMOVER_POLICY")]
        policy: Option<PathBuf>,
        /// The image movers' agents run (this operator's own), pinned by
        /// digest: REPOSITORY@sha256:... [default: movers may start no
        /// agents, and say so]
        #[arg(long, value_name = "IMAGE@DIGEST", env = "WASMOVER_AGENT_IMAGE")]
        agent_image: Option<String>,
    },
}

/// The mover a transfer runs and its limits.
#[derive(clap::Args)]
struct MoverArgs {
    /// A built-in mover name, a path to a mover component (.wasm), or oci://...
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
    /// Host calls per side.
    #[arg(long, default_value_t = MoverLimits::default().host_calls)]
    host_calls: u64,
    /// Bytes of log text per side; records past it are dropped.
    #[arg(long, default_value_t = MoverLimits::default().log_bytes)]
    log_bytes: u64,
    /// Largest channel message the host accepts, in bytes.
    #[arg(long, default_value_t = MoverLimits::default().message_bytes)]
    message_bytes: u64,
    /// The module's content digest (sha256:...) as pinned by the operator:
    /// the loaded module must have it, or nothing runs.
    #[arg(long, value_name = "DIGEST")]
    module_digest: Option<String>,
}

impl MoverArgs {
    /// The mover, loaded, and refused unless it is the one `--module-digest`
    /// pinned.
    fn load(&self, engine: &MoverEngine, cli: &Cli) -> anyhow::Result<MoverModule> {
        let module = resolve_mover(engine, cli, &self.mover)?;
        if let Some(pinned) = &self.module_digest {
            wasmover_operator::agent::check_pinned(&module, pinned)?;
        }
        Ok(module)
    }

    fn limits(&self) -> MoverLimits {
        MoverLimits {
            cpu_time_ms: self.cpu_time_ms,
            memory_bytes: self.memory_bytes,
            host_calls: self.host_calls,
            log_bytes: self.log_bytes,
            message_bytes: self.message_bytes,
            // The data plane makes no Kubernetes calls: their budget stays.
            ..MoverLimits::default()
        }
    }
}
/// How the end-to-end digest reads the volumes.
#[derive(clap::Args)]
struct VerifyArgs {
    /// Where the sending side's digest keeps the content hash of every
    /// file between runs, so that the next digest reads only the files
    /// whose inode, size, mtime or ctime changed. A receiving directory
    /// keeps its own in its state directory (on `agent receive`, this file
    /// instead) [default: under the cache directory, per source path; none
    /// with --no-cache]
    #[arg(long, value_name = "FILE")]
    hashes: Option<PathBuf>,
    /// Make both digests read every file, trusting no kept hash (a full
    /// check, e.g. now and then); the hashes are kept again for next time.
    #[arg(long)]
    read_every_file: bool,
}

impl VerifyArgs {
    /// Where the sending side at `volume` keeps its hashes: `--hashes`,
    /// else a file under the cache directory named for the volume's
    /// canonical path.
    fn source_hashes(&self, cli: &Cli, volume: &std::path::Path) -> Option<PathBuf> {
        self.hashes.clone().or_else(|| {
            let root = hash_dir(cli)?;
            let path = volume.canonicalize().ok()?;
            let key = blake3::hash(path.as_os_str().as_encoded_bytes());
            Some(root.join(&key.to_hex()[..32]))
        })
    }
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
    cli.cache_dir
        .clone()
        .or_else(|| Some(wasmover_operator::dirs::cache_home()?.join("precompiled")))
}

/// Where sending sides keep their file hashes: `hashes` beside the
/// precompiled modules.
fn hash_dir(cli: &Cli) -> Option<PathBuf> {
    Some(cache_dir(cli)?.join("hashes"))
}

/// Where a receiving directory keeps what one run leaves for the next:
/// `state_dir` if given, else a directory under `state` beside the
/// precompiled modules named for its canonical path; a temporary one with
/// --no-cache.
fn state_dir(cli: &Cli, state_dir: Option<&std::path::Path>) -> StateDir {
    match (state_dir, cache_dir(cli)) {
        (Some(dir), _) => StateDir::At(dir.to_owned()),
        (None, Some(cache)) => StateDir::Under(cache.join("state")),
        (None, None) => StateDir::Temporary,
    }
}

/// Runs the command.
pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let engine = MoverEngine::new(EngineConfig {
        cache_dir: cache_dir(cli),
        ..EngineConfig::default()
    })?;
    match &cli.command {
        Command::Replicate {
            src,
            dst,
            journal,
            state_dir: state,
            verify,
            mover,
        } => replicate::run(
            &engine,
            cli,
            (src, dst),
            journal.as_deref(),
            state_dir(cli, state.as_deref()),
            verify,
            mover,
        ),
        Command::Agent { role } => agent::run(&engine, cli, role),
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
            policy,
            agent_image,
        } => operator::run(
            &engine,
            cli,
            operator::Flags {
                metrics_addr: *metrics_addr,
                modules,
                no_leader_election: *no_leader_election,
                lease_namespace,
                identity: identity.as_deref(),
                gc_interval_secs: *gc_interval_secs,
                policy: policy.as_deref(),
                agent_image: agent_image.as_deref(),
            },
        ),
        Command::Movers => modules::movers(&engine),
        Command::Push { file, reference } => modules::push(&engine, cli, file, reference),
        Command::Pull { reference, output } => {
            modules::pull(&engine, cli, reference, output.as_deref())
        }
        Command::Inspect { module } => modules::inspect(&engine, cli, module),
    }
}

/// What a transfer did, for the one-line summaries.
fn summary(r: &TransferReport) -> String {
    format!(
        "{} entries ({} files rebuilt, {} removed); \
         {} of files: {} matched, {} sent as literals, {} on the wire; {}",
        r.entries_total,
        r.files_transferred,
        r.entries_deleted,
        HumanBytes(r.bytes_total),
        HumanBytes(r.bytes_matched),
        HumanBytes(r.bytes_literal),
        HumanBytes(r.bytes_on_wire),
        verification(r),
    )
}

/// The end-to-end verdict of a transfer, for the summaries.
fn verification(r: &TransferReport) -> String {
    match (r.verified, r.tree_digest.is_empty()) {
        (true, _) => format!("verified: tree digest {}", r.tree_digest),
        (false, true) => "not verified (the mover compares no tree digests)".into(),
        (false, false) => format!("NOT verified: tree digest {}", r.tree_digest),
    }
}

/// A built-in name, a .wasm file, or an oci:// reference, loaded.
fn resolve_mover(engine: &MoverEngine, cli: &Cli, mover: &str) -> anyhow::Result<MoverModule> {
    Ok(if mover.starts_with(wasmover_oci::SCHEME) {
        modules::fetch_and_load(engine, &modules::oci(&cli.registry)?, mover)?.1
    } else {
        builtin::resolve(engine, mover)?
    })
}
