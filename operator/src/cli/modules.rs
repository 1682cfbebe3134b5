//! The module commands: `movers` lists the built-in ones; `push`, `pull`
//! and `inspect` work with registries and the module store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use wasmover_host::{CONTRACT_VERSION, Capability, Grants, MoverEngine, MoverLimits, MoverModule};
use wasmover_oci::{Credentials, Fetched, ModuleRef, ModuleStore};
use wasmover_operator::builtin;
use wasmover_operator::modules::Oci;

use super::Cli;

/// `wasmover movers`: the built-in movers, one per line: name, version,
/// digest, the contract each was built against, its exports.
pub fn movers(engine: &MoverEngine) -> anyhow::Result<ExitCode> {
    for module in builtin::catalog(engine)?.modules() {
        let capabilities: Vec<String> = module
            .capabilities()
            .iter()
            .map(ToString::to_string)
            .collect();
        let info = module
            .instantiate(MoverLimits::default(), Grants::new())
            .and_then(|mut instance| instance.version_info())?;
        println!(
            "{}\t{}\t{}\tcontract {}\t{}",
            module.name(),
            info.version,
            module.digest(),
            info.contract,
            capabilities.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `wasmover push FILE REFERENCE`: prints the manifest digest.
pub fn push(
    engine: &MoverEngine,
    cli: &Cli,
    file: &Path,
    reference: &str,
) -> anyhow::Result<ExitCode> {
    let reference: ModuleRef = reference.parse()?;
    let oci = oci(&cli.registry)?;
    let digest = current_thread()?.block_on(oci.push(engine, file, &reference))?;
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}

/// `wasmover pull REFERENCE`: prints the reference pinned by digest.
pub fn pull(
    engine: &MoverEngine,
    cli: &Cli,
    reference: &str,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (fetched, _) = fetch_and_load(engine, &oci(&cli.registry)?, reference)?;
    if let Some(output) = output {
        std::fs::write(output, &fetched.bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))?;
    }
    println!("{}", fetched.reference);
    Ok(ExitCode::SUCCESS)
}

/// `wasmover inspect MODULE`: an OCI reference or a .wasm file.
pub fn inspect(engine: &MoverEngine, cli: &Cli, module: &str) -> anyhow::Result<ExitCode> {
    let (module, manifest, size) = if module.starts_with(wasmover_oci::SCHEME) {
        let (fetched, module) = fetch_and_load(engine, &oci(&cli.registry)?, module)?;
        (module, Some(fetched.reference), fetched.bytes.len())
    } else {
        let size = std::fs::metadata(module)
            .map_err(|e| anyhow::anyhow!("{module}: {e}"))?
            .len();
        (engine.load_file(module.as_ref())?, None, size as usize)
    };
    describe(&module, manifest.as_ref(), size);
    Ok(ExitCode::SUCCESS)
}

/// Where modules come from and how registries are reached.
#[derive(clap::Args)]
pub struct RegistryArgs {
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

/// The registry client `args` describe.
pub fn oci(args: &RegistryArgs) -> anyhow::Result<Oci> {
    let credentials = match &args.registry_config {
        Some(path) => Credentials::from_file(path)?,
        None => Credentials::from_default_file()?,
    };
    let store = args
        .module_store
        .clone()
        .or_else(|| Some(wasmover_operator::dirs::cache_home()?.join("modules")))
        .ok_or_else(|| anyhow::anyhow!("no module store: pass --module-store DIR"))?;
    let store = ModuleStore::new(store).with_max_bytes(args.max_module_bytes);
    Ok(Oci::new(store, args.insecure, credentials))
}

/// One runtime thread for a registry call.
fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Fetches `reference` (the store first when pinned) and loads it, which
/// also precompiles it into the cache.
pub fn fetch_and_load(
    engine: &MoverEngine,
    oci: &Oci,
    reference: &str,
) -> anyhow::Result<(Fetched, MoverModule)> {
    let reference: ModuleRef = reference.parse()?;
    let fetched = current_thread()?.block_on(oci.fetch(&reference, None))?;
    let module = wasmover_operator::modules::load(engine, &fetched)?;
    Ok((fetched, module))
}

/// Prints what `module` is and what it needs.
fn describe(module: &MoverModule, reference: Option<&ModuleRef>, size: usize) {
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
    if module.has(Capability::Control) {
        match module
            .instantiate(MoverLimits::default(), Grants::new())
            .and_then(|mut instance| instance.version_info())
        {
            Ok(info) => println!(
                "version:   {} {} (built against contract {})",
                info.name, info.version, info.contract
            ),
            Err(e) => println!("version:   unknown: {e}"),
        }
    }
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
