//! `wasmover operator`: the operator's flags turned into its catalog and
//! run options, then [`controller::serve`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use wasmover_host::{Grants, MoverEngine, MoverLimits};
use wasmover_operator::builtin;
use wasmover_operator::controller::{self, RunOptions};
use wasmover_operator::leader::LeaseConfig;
use wasmover_operator::modules::OciModules;
use wasmover_operator::policy::Policy;

use super::Cli;

/// The `operator` command's flags.
pub struct Flags<'a> {
    /// Where to serve /metrics, /healthz and /readyz.
    pub metrics_addr: SocketAddr,
    /// Mover components to offer besides the built-in ones.
    pub modules: &'a [PathBuf],
    /// Reconcile without taking the leader Lease.
    pub no_leader_election: bool,
    /// Namespace of the leader Lease.
    pub lease_namespace: &'a str,
    /// This replica's identity in the Lease, if given.
    pub identity: Option<&'a str>,
    /// Seconds between orphan collections.
    pub gc_interval_secs: u64,
    /// The admin's policy file; `None`: anything is allowed.
    pub policy: Option<&'a Path>,
    /// The agents' image, by digest.
    pub agent_image: Option<&'a str>,
}

/// Serves until told to stop or the leader Lease is lost.
pub fn run(engine: &MoverEngine, cli: &Cli, flags: Flags) -> anyhow::Result<ExitCode> {
    let policy = match flags.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };
    if let Some(image) = flags.agent_image {
        anyhow::ensure!(
            image.contains("@sha256:"),
            "--agent-image {image}: agents run an image pinned by digest (REPOSITORY@sha256:...), not a tag that can move"
        );
    }
    let mut catalog = builtin::catalog(engine)?;
    for path in flags.modules {
        catalog.register(engine.load_file(path)?)?;
    }
    // What this operator offers, as each module says of itself.
    for module in catalog.modules() {
        let info = module
            .instantiate(MoverLimits::default(), Grants::new())
            .and_then(|mut instance| instance.version_info())?;
        let capabilities: Vec<String> = module
            .capabilities()
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(
            module = %format_args!("{}@{}", module.name(), module.digest()),
            version = info.version,
            contract = info.contract,
            capabilities = capabilities.join(" "),
            "mover available"
        );
    }
    let identity = flags.identity.map(str::to_owned).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "wasmover".into());
        format!("{host}-{}", std::process::id())
    });
    let options = RunOptions {
        leader: (!flags.no_leader_election)
            .then(|| LeaseConfig::new(flags.lease_namespace, &identity)),
        gc_interval: Duration::from_secs(flags.gc_interval_secs),
        oci: Some(Arc::new(OciModules::new(
            engine.clone(),
            super::modules::oci(&cli.registry)?,
        ))),
        policy: Arc::new(policy),
        agent_image: flags.agent_image.map(str::to_owned),
    };
    tokio::runtime::Runtime::new()?.block_on(controller::serve(
        flags.metrics_addr,
        catalog,
        options,
    ))?;
    Ok(ExitCode::SUCCESS)
}
