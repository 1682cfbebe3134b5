//! `log`, `events`, `progress` and `clock`: what a module tells the world.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bindings::{clock, events, log};
use crate::error::{MAX_EVENT_NOTE_BYTES, MAX_REASON_BYTES, bounded};
use crate::state::{Event, HostState, Progress};

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.host_call(|s| {
            let len = message.len() as u64;
            if s.meter.log_bytes + len > s.limits.log_bytes {
                if s.meter.logs_dropped == 0 {
                    tracing::warn!(
                        module = &*s.module,
                        limit = s.limits.log_bytes,
                        "log budget exhausted; dropping further records of this call"
                    );
                }
                s.meter.logs_dropped += 1;
                return;
            }
            s.meter.log_bytes += len;
            let module = &*s.module;
            match level {
                log::Level::Trace => tracing::trace!(module, "{message}"),
                log::Level::Debug => tracing::debug!(module, "{message}"),
                log::Level::Info => tracing::info!(module, "{message}"),
                log::Level::Warn => tracing::warn!(module, "{message}"),
                log::Level::Error => tracing::error!(module, "{message}"),
            }
        })
    }
}

impl events::Host for HostState {
    fn publish(
        &mut self,
        event_type: events::EventType,
        reason: String,
        action: String,
        note: String,
    ) -> wasmtime::Result<()> {
        self.host_call(|s| {
            let event = Event {
                warning: matches!(event_type, events::EventType::Warning),
                reason: bounded(reason, MAX_REASON_BYTES),
                action: bounded(action, MAX_REASON_BYTES),
                note: bounded(note, MAX_EVENT_NOTE_BYTES),
            };
            s.grants.observer.event(&s.module, &event);
        })
    }
}

impl crate::bindings::progress::Host for HostState {
    fn report(
        &mut self,
        bytes_done: u64,
        bytes_total: u64,
        entries_done: u64,
        entries_total: u64,
    ) -> wasmtime::Result<()> {
        self.host_call(|s| {
            let progress = Progress {
                bytes_done,
                bytes_total,
                entries_done,
                entries_total,
            };
            s.progress = progress;
            s.grants.observer.progress(&s.module, progress);
        })
    }
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        self.host_call(|_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        })
    }
}
