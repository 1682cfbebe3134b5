//! Per-call limits on a mover module, and the limiter that enforces them.
//!
//! [`MoverLimits`] is the one place raw numbers live: the CRD carries it, the
//! CLI takes it, and the store, the epoch callback and the host-call
//! accounting read it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;

/// Limits applied to every call of a module's export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MoverLimits {
    /// CPU time the guest may spend executing wasm in one call, in
    /// milliseconds (the calling thread's CPU clock, checked every epoch
    /// tick). Time inside host functions (hashing, I/O, API calls) is not
    /// counted, so a transfer of a large volume is bounded by its guest work
    /// only. Prevents a module that loops forever from holding a worker.
    pub cpu_time_ms: u64,
    /// Bytes of linear memory (all memories of the instance together).
    /// Prevents a module from allocating without bound.
    pub memory_bytes: u64,
    /// Host calls per call of an export. Prevents a module from flooding the
    /// host (or the API server through it).
    pub host_calls: u64,
    /// Kubernetes calls per call of an export (each is also a host call).
    /// Prevents a module from flooding the API server: a mover needs a
    /// few dozen per step.
    pub kube_calls: u64,
    /// Bytes of log text per call of an export; records past it are dropped
    /// and counted, not fatal.
    pub log_bytes: u64,
    /// Size of one channel message the host accepts, in bytes.
    pub message_bytes: u64,
}

impl Default for MoverLimits {
    fn default() -> Self {
        Self {
            cpu_time_ms: 60_000,
            memory_bytes: 256 << 20,
            host_calls: 10_000_000,
            kube_calls: 1_000,
            log_bytes: 1 << 20,
            message_bytes: 64 << 20,
        }
    }
}

impl MoverLimits {
    /// The guest CPU-time budget as a [`Duration`].
    pub fn cpu_time(&self) -> Duration {
        Duration::from_millis(self.cpu_time_ms)
    }
}

/// The limit a module ran into. Carried as the error of the trap that
/// stopped it, so that the caller can name it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// The guest spent more than its CPU time executing wasm.
    #[error("CPU time limit of {limit_ms} ms exceeded")]
    CpuTime {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// The guest tried to grow its memory past the limit.
    #[error("memory limit of {limit} bytes exceeded (growing to {desired} bytes)")]
    Memory {
        /// The limit, in bytes.
        limit: u64,
        /// The size the guest asked for.
        desired: u64,
    },
    /// The guest made more Kubernetes calls than its budget allows.
    #[error("Kubernetes-call budget of {limit} calls exceeded")]
    KubeCalls {
        /// The budget.
        limit: u64,
    },
    /// The guest made more host calls than its budget allows.
    #[error("host-call budget of {limit} calls exceeded")]
    HostCalls {
        /// The budget.
        limit: u64,
    },
}

/// The store's [`ResourceLimiter`]: bounds memory across all the instance's
/// memories and reports the limit by name when it refuses.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    /// Bytes currently committed by memories other than the one growing.
    used: u64,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self { limit, used: 0 }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = (desired - current) as u64;
        let total = self.used + grow;
        if total > self.limit {
            return Err(LimitExceeded::Memory {
                limit: self.limit,
                desired: total,
            }
            .into());
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond
        // any real module and bounds what a hostile one can take.
        Ok(desired <= 1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limit_counts_all_memories_and_names_itself() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        // A second memory may only take what is left.
        let err = limiter.memory_growing(0, 50, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<LimitExceeded>(),
            Some(&LimitExceeded::Memory {
                limit: 100,
                desired: 110
            })
        );
        assert!(limiter.memory_growing(60, 100, None).unwrap());
    }

    #[test]
    fn limits_deserialize_with_defaults_for_missing_fields() {
        let limits: MoverLimits = serde_json::from_str(r#"{"cpuTimeMs": 5}"#).unwrap();
        assert_eq!(limits.cpu_time_ms, 5);
        assert_eq!(limits.memory_bytes, MoverLimits::default().memory_bytes);
    }
}
