//! Lets blocksync's cdylib link in Debian's wasm test flavour (the one
//! that sets `cfg(wasmover_pthread_stubs)`, see xtask), where every link
//! gets the command entry point `crt1-command.o` and so needs a `main`.
//! Cargo builds that cdylib, which nothing uses, whenever another guest's
//! test harness depends on blocksync as a library.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_CFG_WASMOVER_PTHREAD_STUBS").is_some() {
        println!("cargo:rustc-cdylib-link-arg=--allow-undefined");
    }
}
