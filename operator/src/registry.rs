//! The registry client as the CLI and the operator use it: pushing a
//! component as a wasm OCI artifact, fetching one into the module store,
//! and loading what was fetched through the engine's precompiled cache
//! (keyed by the module's digest, wasmtime's version and the engine's
//! settings).

use std::path::Path;

use wasmover_host::{MoverEngine, MoverModule, RunError};
use wasmover_oci::{
    Credentials, Digest, Fetched, ModuleRef, ModuleStore, OciError, RegistryAuth, WasmConfig,
};

/// Why a module could not be pushed, fetched or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The reference does not parse.
    #[error(transparent)]
    Reference(#[from] wasmover_oci::RefParseError),
    /// The registry or the store failed.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// The module does not compile or link.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] wasmover_oci::CredentialsError),
    /// Loading the module panicked.
    #[error("loading the module failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Only binary components are pushed.
    #[error(
        "{path} is not a binary WebAssembly component (no \\0asm header); push the built .wasm"
    )]
    NotBinary {
        /// The file.
        path: String,
    },
    /// An `oci://` reference, but the operator has no module store.
    #[error("{reference}: this operator was started without OCI modules (no module store)")]
    NoStore {
        /// The reference.
        reference: String,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// A registry client with its store and credentials, as the CLI and the
/// operator use it.
#[derive(Clone, Debug)]
pub struct Oci {
    registry: wasmover_oci::Registry,
    credentials: Credentials,
}

impl Oci {
    /// Pulls into `store`; plain HTTP for every registry when `insecure`
    /// (else only loopback ones); `credentials` per registry.
    pub fn new(store: ModuleStore, insecure: bool, credentials: Credentials) -> Self {
        Self {
            registry: wasmover_oci::Registry::new(store).with_insecure(insecure),
            credentials,
        }
    }

    /// The registry client.
    pub fn registry(&self) -> &wasmover_oci::Registry {
        &self.registry
    }

    /// Validates the component in `file` (it must load as a mover or a
    /// command), pushes it to `reference` with its imports and exports in
    /// the config, and returns the manifest digest.
    pub async fn push(
        &self,
        engine: &MoverEngine,
        file: &Path,
        reference: &ModuleRef,
    ) -> Result<Digest, ModuleError> {
        let bytes = std::fs::read(file).map_err(|source| ModuleError::Io {
            path: file.display().to_string(),
            source,
        })?;
        if !bytes.starts_with(b"\0asm") {
            return Err(ModuleError::NotBinary {
                path: file.display().to_string(),
            });
        }
        let module = engine.load(reference.name(), &bytes)?;
        let config = WasmConfig::component(&Digest::of(&bytes), module.imports(), module.exports());
        let auth = self.credentials.for_registry(reference.registry());
        Ok(self
            .registry
            .push(reference, &bytes, &config, &auth)
            .await?)
    }

    /// The module at `reference`, from the store if pinned and there, else
    /// from the registry with `auth` (default: the credentials for its
    /// registry).
    pub async fn fetch(
        &self,
        reference: &ModuleRef,
        auth: Option<RegistryAuth>,
    ) -> Result<Fetched, ModuleError> {
        let auth = auth.unwrap_or_else(|| self.credentials.for_registry(reference.registry()));
        Ok(self.registry.fetch(reference, &auth).await?)
    }
}

/// Compiles (or loads precompiled) a fetched module, named after its
/// repository.
pub fn load(engine: &MoverEngine, fetched: &Fetched) -> Result<MoverModule, RunError> {
    engine.load(fetched.reference.name(), &fetched.bytes)
}
