//! Embeds the built-in mover components, built by `cargo xtask build-guests`.
//!
//! Which movers are built in is declared once, in `movers/Cargo.toml`
//! (`[workspace.metadata.wasmover] builtin`); `build-guests` writes that list
//! beside the components as `builtin.txt`, one name a line. This writes
//! `$OUT_DIR/builtin.rs`: the expression `&[(name, include_bytes!(path)), ..]`
//! of every built-in mover, which `src/builtin.rs` includes.

use std::fmt::Write as _;
use std::path::PathBuf;

/// The list `cargo xtask build-guests` writes beside the components.
const BUILTIN_LIST: &str = "builtin.txt";

fn main() {
    println!("cargo:rerun-if-env-changed=WASMOVER_GUESTS_DIR");
    let dir = std::env::var_os("WASMOVER_GUESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../target/guests/wasm")
        });
    let list = dir.join(BUILTIN_LIST);
    let names = std::fs::read_to_string(&list).unwrap_or_else(|_| missing(&list));
    println!("cargo:rerun-if-changed={}", list.display());
    let mut generated = String::from("&[\n");
    for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let path = dir.join(format!("{name}.wasm"));
        if !path.exists() {
            missing(&path);
        }
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            generated,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String");
    }
    generated.push(']');
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("builtin.rs");
    std::fs::write(&out, generated).expect("writing $OUT_DIR/builtin.rs");
}

fn missing(path: &std::path::Path) -> ! {
    panic!(
        "{} is missing: build the guest components first with `cargo xtask build-guests` \
         (scripts/setup installs the wasm toolchain and does it)",
        path.display()
    );
}
