//! The `wasmover` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::DecimalBytes as HumanBytes;
use wasmover_operator::builtin::{self, DEFAULT_MOVER};
use wasmover_operator::modules::{Oci, OciModules};
use wasmover_operator::{agent, guest_test, replicate};
use wasmover_oci::{Credentials, Fetched, ModuleRef, ModuleStore};
use wasmover_host::bindings::types::{Parameter, TransferReport};
use wasmover_host::{
    CONTRACT_VERSION, Capability, EngineConfig, MoverEngine, MoverLimits, MoverModule,
};

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
}

impl MoverArgs {
    fn limits(&self) -> MoverLimits {
        MoverLimits {
            cpu_time_ms: self.cpu_time_ms,
            memory_bytes: self.memory_bytes,
            ..MoverLimits::default()
        }
    }
}

#[derive(Subcommand)]
enum AgentRole {
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
struct AgentArgs {
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
    /// After a transfer, write its report here as JSON (the transfer
    /// report's fields in camelCase: `treeDigest`, `verified`,
    /// `bytesOnWire`, ...). In a Pod, `/dev/termination-log`: the mover's
    /// control plane reads it from the Pod's status.
    #[arg(long)]
    report_file: Option<PathBuf>,
    #[command(flatten)]
    verify: VerifyArgs,
    #[command(flatten)]
    mover: MoverArgs,
}

/// How the end-to-end digest reads the volumes.
#[derive(clap::Args)]
struct VerifyArgs {
    /// Where the sending side's digest keeps the content hash of every
    /// file between runs, so that the next digest reads only the files
    /// whose inode, size, mtime or ctime changed. A receiving directory
    /// keeps its own in `.wasmover/hashes` inside it (on `agent receive`,
    /// this file instead) [default: under the cache directory, per source
    /// path; none with --no-cache]
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

/// Where sending sides keep their file hashes: `hashes` beside the
/// precompiled modules.
fn hash_dir(cli: &Cli) -> Option<PathBuf> {
    Some(cache_dir(cli)?.join("hashes"))
}

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
            journal,
            verify,
            mover,
        } => {
            let module = resolve_mover(&engine, cli, &mover.mover)?;
            let bar = Arc::new(wasmover_operator::ProgressBar::on_stderr());
            let started = Instant::now();
            let report = replicate::replicate(
                &module,
                src,
                dst,
                &replicate::ReplicateOptions {
                    journal: journal.clone(),
                    source_hashes: verify.source_hashes(cli, src),
                    read_every_file: verify.read_every_file,
                },
                mover.limits(),
                &mover.params,
                bar.clone(),
            );
            bar.finish();
            let r = report?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "replicated {} -> {} with {} in {secs:.2}s: {}",
                src.display(),
                dst.display(),
                module.name(),
                summary(&r),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent { role } => run_agent(&engine, cli, role),
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
            let options = wasmover_operator::controller::RunOptions {
                leader: (!no_leader_election)
                    .then(|| wasmover_operator::leader::LeaseConfig::new(lease_namespace, &identity)),
                gc_interval: std::time::Duration::from_secs(*gc_interval_secs),
                oci: Some(Arc::new(OciModules::new(
                    engine.clone(),
                    oci(&cli.registry)?,
                ))),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let metrics = Arc::new(wasmover_operator::metrics::Metrics::default());
                let config = kube::Config::infer().await?;
                let client = wasmover_operator::client::instrumented(config, metrics.clone())?;
                let listener = tokio::net::TcpListener::bind(metrics_addr).await?;
                let server = axum::serve(listener, wasmover_operator::metrics::router(metrics.clone()));
                tokio::select! {
                    result = wasmover_operator::controller::run(client, catalog, metrics, options) => result,
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
        Command::Push { file, reference } => {
            let reference: ModuleRef = reference.parse()?;
            let oci = oci(&cli.registry)?;
            let digest = current_thread()?.block_on(oci.push(&engine, file, &reference))?;
            println!("{digest}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull { reference, output } => {
            let (fetched, _) = pull(&engine, &oci(&cli.registry)?, reference)?;
            if let Some(output) = output {
                std::fs::write(output, &fetched.bytes)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))?;
            }
            println!("{}", fetched.reference);
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { module } => {
            let (module, manifest, size) = if module.starts_with(wasmover_oci::SCHEME) {
                let (fetched, module) = pull(&engine, &oci(&cli.registry)?, module)?;
                (module, Some(fetched.reference), fetched.bytes.len())
            } else {
                let size = std::fs::metadata(module)
                    .map_err(|e| anyhow::anyhow!("{module}: {e}"))?
                    .len();
                (engine.load_file(module.as_ref())?, None, size as usize)
            };
            inspect(&module, manifest.as_ref(), size);
            Ok(ExitCode::SUCCESS)
        }
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
        pull(engine, &oci(&cli.registry)?, mover)?.1
    } else {
        builtin::resolve(engine, mover)?
    })
}

/// `wasmover agent receive|send`: one line per transfer on stdout, refused
/// or failed connections on stderr.
fn run_agent(engine: &MoverEngine, cli: &Cli, role: &AgentRole) -> anyhow::Result<ExitCode> {
    let (AgentRole::Receive { agent: args, .. } | AgentRole::Send { agent: args, .. }) = role;
    let module = resolve_mover(engine, cli, &args.mover.mover)?;
    let key = wasmover_net::Psk::from_file(&args.key_file)?;
    let options = args.options()?;
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
            module.name(),
            f.elapsed.as_secs_f64(),
            summary(&f.report),
            HumanBytes(f.tls_bytes.0),
            HumanBytes(f.tls_bytes.1),
        );
        if let Some(path) = &args.report_file {
            let json = serde_json::to_string(&wasmover_contract::AgentReport::from(&f.report))
                .expect("a report serializes");
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
            let bar = Arc::new(wasmover_operator::ProgressBar::on_stderr());
            let sent = agent::send(
                &transfer,
                &volume,
                connect,
                &key,
                &options,
                retry,
                bar.clone(),
            );
            bar.finish();
            report("sent", "to", &sent?);
            Ok(ExitCode::SUCCESS)
        }
        AgentRole::Receive {
            listen,
            keep_serving,
            max_failures,
            ..
        } => {
            let receiver = agent::Receiver::bind(&transfer, listen, &volume, &key, options)?;
            // One write, so that a script polling a log file never reads
            // half the address (eprintln! writes it piece by piece).
            let line = format!("wasmover: listening on {}\n", receiver.local_addr()?);
            std::io::stderr().write_all(line.as_bytes())?;
            let mut failures = 0;
            loop {
                let bar = Arc::new(wasmover_operator::ProgressBar::on_stderr());
                let received = receiver.receive(&transfer, bar.clone());
                bar.finish();
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

/// Where modules come from and how registries are reached.
#[derive(clap::Args)]
struct RegistryArgs {
    /// Reach every registry over plain HTTP (by default only loopback
    /// registries are; others need HTTPS).
    #[arg(long, global = true)]
    insecure: bool,
    /// Docker config file with registry credentials [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json]
    #[arg(long, global = true, env = "WASMOVER_REGISTRY_CONFIG")]
    registry_config: Option<PathBuf>,
    /// Where pulled modules are kept, by digest [default: $XDG_CACHE_HOME/wasmover/modules or ~/.cache/wasmover/modules]
    #[arg(long, global = true, env = "WASMOVER_MODULE_STORE")]
    module_store: Option<PathBuf>,
    /// Largest module to push or pull, in bytes.
    #[arg(long, global = true, default_value_t = wasmover_oci::DEFAULT_MAX_MODULE_BYTES)]
    max_module_bytes: u64,
}

fn oci(args: &RegistryArgs) -> anyhow::Result<Oci> {
    let credentials = match &args.registry_config {
        Some(path) => Credentials::from_file(path)?,
        None => Credentials::from_default_file()?,
    };
    let store = args
        .module_store
        .clone()
        .or_else(wasmover_operator::modules::default_store_dir)
        .ok_or_else(|| anyhow::anyhow!("no module store: pass --module-store DIR"))?;
    let store = ModuleStore::new(store).with_max_bytes(args.max_module_bytes);
    Ok(Oci::new(store, args.insecure, credentials))
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Fetches `reference` (the store first when pinned) and loads it, which
/// also precompiles it into the cache.
fn pull(
    engine: &MoverEngine,
    oci: &Oci,
    reference: &str,
) -> anyhow::Result<(Fetched, MoverModule)> {
    let reference: ModuleRef = reference.parse()?;
    let fetched = current_thread()?.block_on(oci.fetch(&reference, None))?;
    let module = wasmover_operator::modules::load(engine, &fetched)?;
    Ok((fetched, module))
}

fn inspect(module: &MoverModule, reference: Option<&ModuleRef>, size: usize) {
    let (imports, exports) = (module.imports(), module.exports());
    let mut contracts: Vec<&str> = imports
        .iter()
        .chain(&exports)
        .filter(|name| name.starts_with("wasmover:mover/"))
        .filter_map(|name| name.rsplit_once('@').map(|(_, version)| version))
        .collect();
    contracts.sort_unstable();
    contracts.dedup();
    println!("module:    {}", module.name());
    if let Some(reference) = reference {
        println!("reference: {reference}");
    }
    println!("digest:    {}", module.digest());
    println!("size:      {size} bytes");
    println!(
        "contract:  wasmover:mover@{} (this host serves {CONTRACT_VERSION})",
        contracts.join(", ")
    );
    let mut found = Vec::new();
    for capability in [
        Capability::Control,
        Capability::Transfer,
        Capability::Command,
    ] {
        if module.has(capability) {
            found.push(capability.export_name());
        }
    }
    println!("exports:   {}", found.join(" "));
    println!(
        "optional:  {} {}",
        Capability::Validate.export_name(),
        if module.has(Capability::Validate) {
            "(present)"
        } else {
            "(absent)"
        }
    );
    println!("imports:");
    for import in imports {
        println!("  {import}");
    }
}
