//! The catalog of movers (VolSync's `Catalog`): modules registered by name;
//! for a replication spec exactly one must claim it.

use crate::bindings::types::{DestinationSpec, SourceSpec};
use crate::error::RunError;
use crate::instance::{Mover, MoverInstance};
use crate::limits::MoverLimits;
use crate::module::{Capability, MoverModule};
use crate::state::Grants;

/// Why no single mover could be built for a spec.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Two modules registered under one name.
    #[error("a mover named {0} is registered already")]
    Duplicate(String),
    /// The spec selected a module the catalog does not have.
    #[error("no mover named {name} (known: {})", known.join(", "))]
    UnknownModule {
        /// The selected name.
        name: String,
        /// The names registered.
        known: Vec<String>,
    },
    /// Every candidate declined.
    #[error("no mover found for this {role}: {} declined it", tried.join(", "))]
    NoMoverFound {
        /// `source` or `destination`.
        role: &'static str,
        /// The modules asked.
        tried: Vec<String>,
    },
    /// More than one candidate claimed the spec.
    #[error("multiple movers claim this {role}: {}; select one with spec.mover.module", names.join(", "))]
    MultipleMovers {
        /// `source` or `destination`.
        role: &'static str,
        /// The modules that claimed it.
        names: Vec<String>,
    },
    /// A candidate failed while being asked.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The mover that claimed a spec, in its live instance.
#[derive(Debug)]
pub struct Claimed {
    /// The module's name.
    pub module: String,
    /// Its instance, to drive `synchronize` and `cleanup`.
    pub instance: MoverInstance,
    /// The mover it built.
    pub mover: Mover,
}

/// Movers registered by name.
#[derive(Debug, Default)]
pub struct Catalog {
    modules: Vec<MoverModule>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a module under its name.
    pub fn register(&mut self, module: MoverModule) -> Result<(), CatalogError> {
        if self.get(module.name()).is_some() {
            return Err(CatalogError::Duplicate(module.name().to_owned()));
        }
        self.modules.push(module);
        Ok(())
    }

    /// The module registered as `name`.
    pub fn get(&self, name: &str) -> Option<&MoverModule> {
        self.modules.iter().find(|m| m.name() == name)
    }

    /// Every registered module, in registration order.
    pub fn modules(&self) -> &[MoverModule] {
        &self.modules
    }

    /// The module named `name`, or an error listing the known ones.
    pub fn select(&self, name: &str) -> Result<&MoverModule, CatalogError> {
        self.get(name).ok_or_else(|| CatalogError::UnknownModule {
            name: name.to_owned(),
            known: self.modules.iter().map(|m| m.name().to_owned()).collect(),
        })
    }

    /// Builds the source mover: asks `selected` (or every module with a
    /// control plane) and requires exactly one claim. `grants` gives each
    /// candidate its grants.
    pub fn claim_source(
        &self,
        spec: &SourceSpec,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: impl Fn(&MoverModule) -> Grants,
    ) -> Result<Claimed, CatalogError> {
        self.claim("source", selected, limits, grants, |i| i.from_source(spec))
    }

    /// Builds the destination mover, as [`Catalog::claim_source`].
    pub fn claim_destination(
        &self,
        spec: &DestinationSpec,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: impl Fn(&MoverModule) -> Grants,
    ) -> Result<Claimed, CatalogError> {
        self.claim("destination", selected, limits, grants, |i| {
            i.from_destination(spec)
        })
    }

    fn claim(
        &self,
        role: &'static str,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: impl Fn(&MoverModule) -> Grants,
        build: impl Fn(&mut MoverInstance) -> Result<Option<Mover>, RunError>,
    ) -> Result<Claimed, CatalogError> {
        let candidates: Vec<&MoverModule> = match selected {
            Some(name) => {
                let module = self.select(name)?;
                module.require(Capability::Control)?;
                vec![module]
            }
            None => self
                .modules
                .iter()
                .filter(|m| m.has(Capability::Control))
                .collect(),
        };
        let mut claims = Vec::new();
        for module in &candidates {
            let mut instance = module.instantiate(limits, grants(module))?;
            if let Some(mover) = build(&mut instance)? {
                claims.push(Claimed {
                    module: module.name().to_owned(),
                    instance,
                    mover,
                });
            }
        }
        match claims.len() {
            1 => Ok(claims.pop().expect("one claim")),
            0 => Err(CatalogError::NoMoverFound {
                role,
                tried: candidates.iter().map(|m| m.name().to_owned()).collect(),
            }),
            _ => Err(CatalogError::MultipleMovers {
                role,
                names: claims.into_iter().map(|c| c.module).collect(),
            }),
        }
    }
}
