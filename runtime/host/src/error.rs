//! Errors of loading and running a module, each naming the module and what
//! stopped it.

use crate::limits::LimitExceeded;

/// A boxed error from wasmtime or I/O.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a module could not be loaded or a call of it failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine could not be configured.
    #[error("configuring the wasm engine: {0}")]
    Engine(#[source] Source),
    /// Reading a module or the precompiled cache failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly component.
    #[error("module {module} is not a valid WebAssembly component: {source}")]
    Compile {
        /// The module.
        module: String,
        /// Why.
        #[source]
        source: Source,
    },
    /// The module imports something this host does not provide, typically
    /// another version of the contract.
    #[error(
        "module {module} is not compatible with this host (contract wasmover:mover@{contract}, or @{} through adapters): {source}",
        wasmover_contract::PREVIOUS_VERSION
    )]
    Incompatible {
        /// The module.
        module: String,
        /// The contract version this host serves.
        contract: &'static str,
        /// What did not link.
        #[source]
        source: Source,
    },
    /// The module lacks an export the operation needs.
    #[error("module {module} does not export {export}")]
    MissingExport {
        /// The module.
        module: String,
        /// The missing export.
        export: String,
    },
    /// Instantiation failed (for example its start function trapped).
    #[error("module {module} failed to instantiate: {source}")]
    Instantiate {
        /// The module.
        module: String,
        /// Why.
        #[source]
        source: Source,
    },
    /// The module ran into one of its limits and was stopped.
    #[error("module {module} was stopped in {export}: {limit}")]
    Limit {
        /// The module.
        module: String,
        /// The export being called.
        export: &'static str,
        /// The limit.
        limit: LimitExceeded,
    },
    /// The module overflowed its stack.
    #[error("module {module} was stopped in {export}: wasm stack overflow (limit {limit_kib} KiB)")]
    StackOverflow {
        /// The module.
        module: String,
        /// The export being called.
        export: &'static str,
        /// The stack limit.
        limit_kib: usize,
    },
    /// The module trapped (a panic, `unreachable`, an out-of-bounds access).
    #[error("module {module} trapped in {export}: {message}")]
    Trap {
        /// The module.
        module: String,
        /// The export being called.
        export: &'static str,
        /// The trap, with the tail of what the module wrote to stderr.
        message: String,
    },
    /// The module returned its own error.
    #[error("module {module} failed in {export}: {reason}: {message}")]
    Mover {
        /// The module.
        module: String,
        /// The export being called.
        export: &'static str,
        /// CamelCase reason.
        reason: String,
        /// Its message.
        message: String,
    },
    /// A command component exited with a non-zero status.
    #[error("module {module} exited with status {code}")]
    Exit {
        /// The module.
        module: String,
        /// The status.
        code: i32,
    },
}

impl RunError {
    /// A short label for metrics and conditions.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RunError::Engine(_) => "engine",
            RunError::Io { .. } => "io",
            RunError::Compile { .. } => "invalid_component",
            RunError::Incompatible { .. } => "incompatible",
            RunError::MissingExport { .. } => "missing_export",
            RunError::Instantiate { .. } => "instantiate",
            RunError::Limit { limit, .. } => match limit {
                LimitExceeded::CpuTime { .. } => "cpu_time_limit",
                LimitExceeded::Memory { .. } => "memory_limit",
                LimitExceeded::HostCalls { .. } => "host_call_limit",
                LimitExceeded::KubeCalls { .. } => "kube_call_limit",
            },
            RunError::StackOverflow { .. } => "stack_overflow",
            RunError::Trap { .. } => "trap",
            RunError::Mover { .. } => "mover_error",
            RunError::Exit { .. } => "exit",
        }
    }
}

/// Most bytes of a module's error message the host keeps: it ends up in a
/// status condition and an Event.
pub const MAX_MESSAGE_BYTES: usize = 4 << 10;
/// Most bytes of an Event's note: Kubernetes refuses longer ones.
pub const MAX_EVENT_NOTE_BYTES: usize = 1 << 10;
/// Most bytes of a module's CamelCase reason (or Event action).
pub const MAX_REASON_BYTES: usize = 128;

/// `text` cut to at most `max` bytes (at a character boundary), saying how
/// much was cut: what a module hands the host ends up in bounded places.
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let cut = text.len();
    let end = text.floor_char_boundary(max.saturating_sub(32));
    text.truncate(end);
    text.push_str(&format!("… ({} bytes cut)", cut - end));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_is_cut_at_a_character_and_says_so() {
        assert_eq!(bounded("short".into(), 10), "short");
        let cut = bounded("é".repeat(100), 64);
        assert!(cut.len() <= 64, "{cut}");
        assert!(cut.ends_with("bytes cut)"), "{cut}");
    }
}
