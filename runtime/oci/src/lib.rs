//! Mover modules as OCI artifacts, in the CNCF wasm layout (config
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer), the
//! layout wasm-pkg-tools and Kubewarden use.
//!
//! - [`ModuleRef`], `oci://host[:port]/repo[:tag][@sha256:...]`.
//! - [`Registry`], to push, and to fetch through the content-addressed
//!   [`ModuleStore`] (every blob verified by digest on every read; a pinned
//!   reference is served from the store without the registry).
//! - [`Credentials`], basic or bearer auth from a Docker config file.
//!
//! ```no_run
//! use wasmover_oci::{Credentials, ModuleRef, ModuleStore, Registry};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let reference: ModuleRef = "oci://127.0.0.1:5000/movers/blocksync:v1".parse()?;
//! let auth = Credentials::from_default_file()?.for_registry(reference.registry());
//! let registry = Registry::new(ModuleStore::new("/var/cache/wasmover/modules"));
//! let fetched = registry.fetch(&reference, &auth).await?;
//! println!("{} is module {}", fetched.reference, fetched.module);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod credentials;
mod digest;
mod reference;
mod registry;
mod store;

pub use credentials::{Credentials, CredentialsError};
pub use digest::{Digest, DigestParseError};
pub use oci_client::secrets::RegistryAuth;
pub use reference::{DEFAULT_TAG, ModuleRef, RefParseError, SCHEME};
pub use registry::{
    ComponentInfo, Fetched, MAX_MANIFEST_BYTES, OciError, Registry, WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE, WasmConfig,
};
pub use store::{DEFAULT_MAX_MODULE_BYTES, ModuleStore, StoreError};
