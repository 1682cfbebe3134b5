//! Embeds the built-in mover components, built by `cargo xtask build-guests`.

use std::path::PathBuf;

/// Movers shipped inside the binary.
const BUILTIN: &[&str] = &["blocksync"];

fn main() {
    println!("cargo:rerun-if-env-changed=WASMOVER_GUESTS_DIR");
    let dir = std::env::var_os("WASMOVER_GUESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../target/guests/wasm")
        });
    for name in BUILTIN {
        let path = dir.join(format!("{name}.wasm"));
        if !path.exists() {
            panic!(
                "{} is missing: build the guest components first with `cargo xtask build-guests` \
                 (scripts/setup installs the wasm toolchain and does it)",
                path.display()
            );
        }
        println!("cargo:rerun-if-changed={}", path.display());
        println!(
            "cargo:rustc-env=WASMOVER_BUILTIN_{}={}",
            name.to_uppercase(),
            path.display()
        );
    }
}
