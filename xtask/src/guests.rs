//! What the guest workspace declares: its crates, which of them are
//! components, and which movers the operator's binary embeds.
//!
//! `movers/Cargo.toml` is the one list: its `members` are the guest crates
//! (each one's `#[test]`s run as wasm, unless its library says `test = false`;
//! each one with a `cdylib` target is
//! built as a component) and `[workspace.metadata.wasmover] builtin` names
//! the movers shipped inside the operator. Adding a mover is adding it there.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// The guest workspace, relative to the repository root.
pub const WORKSPACE: &str = "movers";
/// The file `build-guests` writes beside the components, naming the
/// built-in movers one a line, for `operator/build.rs`.
pub const BUILTIN_LIST: &str = "builtin.txt";

/// The crates of the guest workspace.
pub struct Guests {
    /// Every member whose library has tests (not `test = false`): their
    /// `#[test]`s run as wasm.
    pub crates: Vec<String>,
    /// Members with a `cdylib` target, built as components.
    pub components: Vec<String>,
    /// Components embedded in the operator's binary.
    pub builtin: Vec<String>,
}

impl Guests {
    /// Reads the guest workspace's manifest (`cargo metadata`).
    pub fn load(root: &Path) -> Result<Self> {
        let out = Command::new(cargo())
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(root.join(WORKSPACE))
            .output()
            .context("running cargo metadata")?;
        ensure!(
            out.status.success(),
            "cargo metadata of {WORKSPACE}/ failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let metadata: Value = serde_json::from_slice(&out.stdout)?;
        let packages = metadata["packages"]
            .as_array()
            .context("cargo metadata lists no packages")?;
        let name = |p: &Value| p["name"].as_str().map(str::to_owned);
        let lib_tested = |p: &&Value| {
            p["targets"].as_array().into_iter().flatten().any(|t| {
                t["kind"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k == "lib" || k == "cdylib")
                    && t["test"].as_bool() != Some(false)
            })
        };
        let crates = packages
            .iter()
            .filter(lib_tested)
            .filter_map(name)
            .collect();
        let components: Vec<String> = packages
            .iter()
            .filter(|p| {
                p["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|t| t["crate_types"].as_array().into_iter().flatten())
                    .any(|kind| kind == "cdylib")
            })
            .filter_map(name)
            .collect();
        let builtin: Vec<String> =
            serde_json::from_value(metadata["metadata"]["wasmover"]["builtin"].clone())
                .with_context(|| {
                    format!(
                        "{WORKSPACE}/Cargo.toml must list the built-in movers in \
                         [workspace.metadata.wasmover] builtin"
                    )
                })?;
        for mover in &builtin {
            ensure!(
                components.contains(mover),
                "built-in mover {mover} is not a component (a cdylib member) of {WORKSPACE}/"
            );
        }
        Ok(Guests {
            crates,
            components,
            builtin,
        })
    }

    /// The contents of [`BUILTIN_LIST`].
    pub fn builtin_list(&self) -> String {
        self.builtin
            .iter()
            .map(|name| format!("{name}\n"))
            .collect()
    }
}

/// The cargo that runs xtask, for commands of the host toolchain.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}
