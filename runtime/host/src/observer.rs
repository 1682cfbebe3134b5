//! What modules report as they run, and the [`Observer`] that receives
//! it: the CLI draws a progress bar, the operator writes status, Events
//! and metrics.

use crate::kube::Refusal;

/// An Event a module published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// The verb.
    pub action: String,
    /// The message.
    pub note: String,
}

/// Progress a module reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes in all (0 when unknown).
    pub bytes_total: u64,
    /// Entries done.
    pub entries_done: u64,
    /// Entries in all (0 when unknown).
    pub entries_total: u64,
}

/// Receives what modules report; the CLI draws a progress bar, the operator
/// writes status, Events and metrics.
pub trait Observer: Send + Sync {
    /// A module published an Event.
    fn event(&self, module: &str, event: &Event) {
        let _ = (module, event);
    }
    /// The host refused a module's Kubernetes call. By default, a Warning
    /// Event `MoverForbidden` naming the rule.
    fn refused(&self, module: &str, refusal: &Refusal) {
        self.event(
            module,
            &Event {
                warning: true,
                reason: "MoverForbidden".into(),
                action: "Authorize".into(),
                note: format!("module {module} was refused: {refusal}"),
            },
        );
    }
    /// A module reported progress.
    fn progress(&self, module: &str, progress: Progress) {
        let _ = (module, progress);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {}
