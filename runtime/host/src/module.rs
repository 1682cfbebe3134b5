//! A loaded module: compiled once, linked once (`InstancePre`), with the
//! exports it has detected at load time; [`MoverEngine::load`] makes one.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};
use wasmtime_wasi::p2::bindings::sync::exports::wasi::cli::run;

use crate::bindings::{control, transfer, v0_2, validate};
use crate::engine::MoverEngine;
use crate::error::RunError;
use crate::state::HostState;

/// The version of the contract (`wit/`) this host serves.
pub const CONTRACT_VERSION: &str = wasmover_contract::VERSION;

/// Every contract version this host runs modules of, newest first: the
/// current one, and the previous one through adapters.
pub const CONTRACT_VERSIONS: [&str; 2] = [CONTRACT_VERSION, wasmover_contract::PREVIOUS_VERSION];

/// An export a module may have. `Control` and `Transfer` make a mover;
/// `Validate` is an optional capability; `Command` is a test harness or
/// tool (`wasi:cli/run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `wasmover:mover/control`: builder and mover resource.
    Control,
    /// `wasmover:mover/transfer`: the data plane.
    Transfer,
    /// `wasmover:mover/validate`: parameter validation.
    Validate,
    /// `wasi:cli/run`: a command.
    Command,
}

impl Capability {
    /// The export's fully qualified name.
    pub fn export_name(self) -> &'static str {
        match self {
            Capability::Control => wasmover_contract::export_name!("control"),
            Capability::Transfer => wasmover_contract::export_name!("transfer"),
            Capability::Validate => wasmover_contract::export_name!("validate"),
            Capability::Command => "wasi:cli/run@0.2.x",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.export_name())
    }
}

/// An export's indices, of the contract version the module was built for.
#[derive(Clone)]
pub(crate) enum Versioned<Current, V0_2> {
    /// The contract this host serves.
    Current(Current),
    /// Contract 0.2, run through adapters.
    V0_2(V0_2),
}

impl<C, P> Versioned<C, P> {
    /// Resolves an export in the current contract, else in 0.2.
    fn resolve(current: Option<C>, previous: impl FnOnce() -> Option<P>) -> Option<Self> {
        match current {
            Some(c) => Some(Self::Current(c)),
            None => previous().map(Self::V0_2),
        }
    }

    fn version(&self) -> &'static str {
        match self {
            Self::Current(_) => CONTRACT_VERSION,
            Self::V0_2(_) => wasmover_contract::PREVIOUS_VERSION,
        }
    }
}

/// Export indices resolved once per module.
#[derive(Clone)]
pub(crate) struct Exports {
    pub(crate) control: Option<Versioned<control::GuestIndices, v0_2::control::GuestIndices>>,
    pub(crate) transfer: Option<Versioned<transfer::GuestIndices, v0_2::transfer::GuestIndices>>,
    pub(crate) validate: Option<Versioned<validate::GuestIndices, v0_2::validate::GuestIndices>>,
    pub(crate) run: Option<run::GuestIndices>,
}

/// A compiled, linked module, ready to instantiate many times.
#[derive(Clone)]
pub struct MoverModule {
    pub(crate) name: Arc<str>,
    digest: String,
    pub(crate) engine: MoverEngine,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) exports: Exports,
}

impl fmt::Debug for MoverModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoverModule")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("capabilities", &self.capabilities())
            .finish()
    }
}

impl MoverModule {
    pub(crate) fn new(
        engine: MoverEngine,
        name: &str,
        digest: String,
        component: Component,
    ) -> Result<Self, RunError> {
        let pre =
            engine
                .linker()
                .instantiate_pre(&component)
                .map_err(|e| RunError::Incompatible {
                    module: name.to_owned(),
                    contract: CONTRACT_VERSION,
                    source: e.into(),
                })?;
        let exports = Exports {
            control: Versioned::resolve(control::GuestIndices::new(&pre).ok(), || {
                v0_2::control::GuestIndices::new(&pre).ok()
            }),
            transfer: Versioned::resolve(transfer::GuestIndices::new(&pre).ok(), || {
                v0_2::transfer::GuestIndices::new(&pre).ok()
            }),
            validate: Versioned::resolve(validate::GuestIndices::new(&pre).ok(), || {
                v0_2::validate::GuestIndices::new(&pre).ok()
            }),
            run: run::GuestIndices::new(&pre).ok(),
        };
        let module = Self {
            name: name.into(),
            digest,
            engine,
            pre,
            exports,
        };
        if module.capabilities().is_empty() {
            return Err(RunError::MissingExport {
                module: name.to_owned(),
                export: format!(
                    "any of {}, {} or {}",
                    Capability::Control,
                    Capability::Transfer,
                    Capability::Command
                ),
            });
        }
        Ok(module)
    }

    /// The module's name (built-in name or file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The contract version the module's mover exports were built for
    /// (one of [`CONTRACT_VERSIONS`]); `None` for a module without them,
    /// such as a test harness.
    pub fn contract(&self) -> Option<&'static str> {
        let e = &self.exports;
        (e.control.as_ref().map(Versioned::version))
            .or_else(|| e.transfer.as_ref().map(Versioned::version))
    }

    /// `sha256:<hex>` of the module's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The exports detected at load time.
    pub fn capabilities(&self) -> Vec<Capability> {
        let e = &self.exports;
        [
            (e.control.is_some(), Capability::Control),
            (e.transfer.is_some(), Capability::Transfer),
            (e.validate.is_some(), Capability::Validate),
            (e.run.is_some(), Capability::Command),
        ]
        .into_iter()
        .filter_map(|(has, c)| has.then_some(c))
        .collect()
    }

    /// Names the component imports (`wasmover:mover/kube@0.2.0`,
    /// `wasi:io/streams@0.2.6`, ...), in its order.
    pub fn imports(&self) -> Vec<String> {
        let ty = self.pre.component().component_type();
        let names = ty
            .imports(self.engine.engine())
            .map(|(name, _)| name.to_owned());
        names.collect()
    }

    /// Names the component exports, in its order.
    pub fn exports(&self) -> Vec<String> {
        let ty = self.pre.component().component_type();
        let names = ty
            .exports(self.engine.engine())
            .map(|(name, _)| name.to_owned());
        names.collect()
    }

    /// Whether the module has an export.
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities().contains(&capability)
    }

    /// Fails with a clear error unless the module has `capability`.
    pub fn require(&self, capability: Capability) -> Result<(), RunError> {
        if self.has(capability) {
            Ok(())
        } else {
            Err(RunError::MissingExport {
                module: self.name.to_string(),
                export: capability.export_name().to_owned(),
            })
        }
    }
}

impl MoverEngine {
    /// Loads a module from a file; its name is the file stem.
    pub fn load_file(&self, path: &Path) -> Result<MoverModule, RunError> {
        let bytes = std::fs::read(path).map_err(|source| RunError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        self.load(&name, &bytes)
    }

    /// Compiles (or fetches from the precompiled cache) a module, links it
    /// against the contract and detects which exports it has.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<MoverModule, RunError> {
        let (component, digest) = self.component(name, bytes)?;
        MoverModule::new(self.clone(), name, digest, component)
    }
}
