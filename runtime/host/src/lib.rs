//! The wasmtime host of wasmover: loads mover components, links the
//! contract's host functions, enforces limits, and runs signature, delta and
//! patch natively through the block engine.
//!
//! ```no_run
//! use wasmover_host::{EngineConfig, Grants, MoverEngine, MoverLimits};
//! # fn main() -> Result<(), wasmover_host::RunError> {
//! let engine = MoverEngine::new(EngineConfig::default())?;
//! let module = engine.load_file("blocksync.wasm".as_ref())?;
//! let mut instance = module.instantiate(MoverLimits::default(), Grants::new())?;
//! println!("{:?}", instance.version_info()?);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod bindings;
mod blocks;
mod cache;
pub mod catalog;
pub mod channel;
pub mod engine;
pub mod error;
mod host;
pub mod instance;
pub mod kube;
pub mod limits;
pub mod module;
mod observer;
pub mod state;
pub mod volume;

pub use cache::{CacheKey, CacheStats};
pub use catalog::{Catalog, CatalogError, Claimed};
pub use channel::Channel;
pub use engine::{EngineConfig, MoverEngine};
pub use error::RunError;
pub use instance::{Mover, MoverInstance};
pub use limits::{LimitExceeded, MoverLimits};
pub use module::{CONTRACT_VERSION, CONTRACT_VERSIONS, Capability, MoverModule};
pub use observer::{Event, Observer, Progress};
pub use state::Grants;
pub use volume::{Access, HashStore, Volume};
