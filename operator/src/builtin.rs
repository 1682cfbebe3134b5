//! Movers shipped inside the binary, and resolving a `--mover` argument.

use std::path::Path;

use wasmover_host::{Catalog, MoverEngine, MoverModule, RunError};

/// `(name, component bytes)` of every built-in mover: the movers
/// `movers/Cargo.toml` names as `builtin` (see `build.rs`).
pub const BUILTIN: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The mover used when none is named.
pub const DEFAULT_MOVER: &str = "blocksync";

/// A catalog of the built-in movers.
pub fn catalog(engine: &MoverEngine) -> Result<Catalog, RunError> {
    let mut catalog = Catalog::new();
    for (name, bytes) in BUILTIN {
        catalog
            .register(engine.load(name, bytes)?)
            .expect("built-in names are unique");
    }
    Ok(catalog)
}

/// A built-in mover by name, or a module file when `mover` names one
/// (contains a `/` or ends in `.wasm`).
pub fn resolve(engine: &MoverEngine, mover: &str) -> anyhow::Result<MoverModule> {
    if mover.ends_with(".wasm") || mover.contains('/') {
        return Ok(engine.load_file(Path::new(mover))?);
    }
    match BUILTIN.iter().find(|(name, _)| *name == mover) {
        Some((name, bytes)) => Ok(engine.load(name, bytes)?),
        None => anyhow::bail!(
            "no built-in mover named {mover:?} (built-in: {}); pass a path to a .wasm component to use another",
            BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
