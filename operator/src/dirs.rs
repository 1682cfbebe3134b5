//! Where wasmover keeps files between runs.

use std::path::PathBuf;

/// The cache directory: `$XDG_CACHE_HOME/wasmover`, else
/// `~/.cache/wasmover`; `None` without either variable. Precompiled
/// modules, file hashes and the module store live under it.
pub fn cache_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("wasmover"))
}

/// The configuration directory: `$XDG_CONFIG_HOME/wasmover`, else
/// `~/.config/wasmover`; `None` without either variable. `kubectl
/// wasmover` keeps its relationship files under it.
pub fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("wasmover"))
}
