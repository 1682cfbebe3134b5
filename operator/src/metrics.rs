//! Prometheus metrics with VolSync's names, and the operator's HTTP
//! endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of VolSync's per-object metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// The object's name.
    pub obj_name: String,
    /// Its namespace.
    pub obj_namespace: String,
    /// `source` or `destination`.
    pub role: String,
    /// The mover module.
    pub method: String,
}

/// What the controllers do in one go, timed by
/// `wasmover_operation_duration_seconds`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Operation {
    /// A reconcile of a live object: decide, run the mover's step, record.
    Sync,
    /// One write of an object's status.
    Save,
    /// A reconcile of an object being deleted: its mover's `cleanup`.
    Delete,
}

impl Operation {
    /// The label value: `sync`, `save` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Sync => "sync",
            Operation::Save => "save",
            Operation::Delete => "delete",
        }
    }
}

impl EncodeLabelValue for Operation {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of the controllers' operation durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// `source` or `destination`.
    pub role: String,
    /// What was timed.
    pub operation: Operation,
}

/// Observes the time since its creation in an operation histogram when
/// dropped, whichever way the operation ends.
pub struct OperationTimer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for OperationTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Labels of `wasmover_sync_progress`: the object's and the status field.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgressLabels {
    /// The object.
    #[prometheus(flatten)]
    pub object: ObjectLabels,
    /// The status field: `bytesTransferred`, `bytesTotal`,
    /// `filesTransferred` or `filesToTransfer`.
    pub field: String,
}

/// Labels of error counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `source` or `destination`.
    pub role: String,
    /// The failure's class (`kube`, `cpu_time_limit`, `mover_error`, ...).
    pub error: String,
}

/// Labels of Kubernetes API requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The Kubernetes verb: get, list, watch, create, update, patch, delete.
    pub verb: String,
    /// The HTTP status code, or `error` if no response came.
    pub code: String,
}

/// Labels of the host's refusals of movers' Kubernetes calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `source` or `destination`.
    pub role: String,
    /// The rule that refused (`ownership`, `agent-template`, ...; see
    /// docs/security.md).
    pub rule: String,
}

/// The operator's metrics.
pub struct Metrics {
    /// `volsync_sync_duration_seconds`: how long synchronizations take,
    /// from start to completion (VolSync's is a summary; the `_sum` and
    /// `_count` series are the same).
    pub sync_duration: Family<ObjectLabels, Histogram>,
    /// `volsync_missed_intervals_total`: scheduled synchronizations that
    /// completed after the following scheduled start.
    pub missed_intervals: Family<ObjectLabels, Counter>,
    /// `volsync_volume_out_of_sync`: 1 from a failure, or from the moment
    /// a schedule's synchronization is overdue, or before the first
    /// completes; 0 once a synchronization completes.
    pub out_of_sync: Family<ObjectLabels, Gauge>,
    /// `wasmover_operation_duration_seconds`: how long the controllers'
    /// operations take, by role and [`Operation`].
    pub operation_duration: Family<OperationLabels, Histogram>,
    /// `wasmover_bytes_transferred_total`: bytes movers reported moving in
    /// completed synchronizations.
    pub bytes_transferred: Family<ObjectLabels, Counter>,
    /// `wasmover_files_transferred_total`: files whose content completed
    /// synchronizations rebuilt, as movers report them.
    pub files_transferred: Family<ObjectLabels, Counter>,
    /// `wasmover_sync_progress`: the progress fields of the object's
    /// status (label `field`), set as the status is, during a
    /// synchronization and at its end.
    pub sync_progress: Family<ProgressLabels, Gauge>,
    /// `wasmover_reconcile_errors_total`: failed reconciles and failed
    /// synchronizations, by role and class of failure.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// `wasmover_kube_request_duration_seconds`: Kubernetes API requests
    /// (the operator's and its movers') by verb and code.
    pub kube_request_duration: Family<RequestLabels, Histogram>,
    /// `wasmover_mover_refusals_total`: Kubernetes calls of movers that
    /// the host refused, by rule.
    pub refusals: Family<RefusalLabels, Counter>,
    /// `wasmover_leader`: 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// `wasmover_orphans_deleted_total`: objects deleted because their
    /// owner was gone.
    pub orphans_deleted: Counter,
    registry: Registry,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let sync_duration = Family::<ObjectLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 16))
        });
        let missed_intervals = Family::default();
        let out_of_sync = Family::default();
        let operation_duration = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 18))
        });
        let bytes_transferred = Family::default();
        let files_transferred = Family::default();
        let sync_progress = Family::default();
        let reconcile_errors = Family::default();
        let kube_request_duration =
            Family::<RequestLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            });
        let refusals = Family::default();
        let leader = Gauge::default();
        let orphans_deleted = Counter::default();
        let mut registry = Registry::default();
        registry.register(
            "volsync_sync_duration_seconds",
            "Duration of synchronizations in seconds, from start to completion",
            sync_duration.clone(),
        );
        registry.register(
            "volsync_missed_intervals",
            "Synchronizations that completed after the next scheduled start",
            missed_intervals.clone(),
        );
        registry.register(
            "volsync_volume_out_of_sync",
            "1 while the volume is not synchronized: a failure, an overdue schedule or no synchronization yet",
            out_of_sync.clone(),
        );
        registry.register(
            "wasmover_operation_duration_seconds",
            "Duration of the controllers' operations (sync: a reconcile, save: a status write, delete: a cleanup before deletion)",
            operation_duration.clone(),
        );
        registry.register(
            "wasmover_bytes_transferred",
            "Bytes moved by completed synchronizations, as movers report them",
            bytes_transferred.clone(),
        );
        registry.register(
            "wasmover_files_transferred",
            "Files rebuilt by completed synchronizations, as movers report them",
            files_transferred.clone(),
        );
        registry.register(
            "wasmover_sync_progress",
            "The progress fields of an object's status, by field",
            sync_progress.clone(),
        );
        registry.register(
            "wasmover_reconcile_errors",
            "Failed reconciles",
            reconcile_errors.clone(),
        );
        registry.register(
            "wasmover_kube_request_duration_seconds",
            "Kubernetes API requests by verb and status code",
            kube_request_duration.clone(),
        );
        registry.register(
            "wasmover_mover_refusals",
            "Kubernetes calls of movers the host refused, by rule",
            refusals.clone(),
        );
        registry.register(
            "wasmover_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "wasmover_orphans_deleted",
            "Objects deleted because their owner was gone",
            orphans_deleted.clone(),
        );
        Self {
            sync_duration,
            missed_intervals,
            out_of_sync,
            operation_duration,
            bytes_transferred,
            files_transferred,
            sync_progress,
            reconcile_errors,
            kube_request_duration,
            refusals,
            leader,
            orphans_deleted,
            registry,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// Creates an object's series of VolSync's metrics (at 0) if new, as
    /// VolSync does on its first reconcile; returns its out-of-sync gauge.
    pub fn track(&self, object: &ObjectLabels) -> Gauge {
        let _ = self.missed_intervals.get_or_create(object);
        let _ = self.sync_duration.get_or_create(object);
        self.out_of_sync.get_or_create(object).clone()
    }

    /// Times one `operation` of a `role` object until the timer drops.
    pub fn time(&self, role: &str, operation: Operation) -> OperationTimer {
        let labels = OperationLabels {
            role: role.into(),
            operation,
        };
        OperationTimer {
            histogram: self.operation_duration.get_or_create(&labels).clone(),
            started: Instant::now(),
        }
    }

    /// Sets `wasmover_sync_progress` of `object` to its status's progress
    /// fields, `(field, value)` (an absent value is 0).
    pub fn set_progress(&self, object: &ObjectLabels, fields: [(&str, Option<u64>); 4]) {
        for (field, value) in fields {
            let labels = ProgressLabels {
                object: object.clone(),
                field: field.into(),
            };
            let value = i64::try_from(value.unwrap_or(0)).unwrap_or(i64::MAX);
            self.sync_progress.get_or_create(&labels).set(value);
        }
    }

    /// Marks the controllers as started (`/readyz` answers 200).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }
}

/// The exposition's media type: OpenMetrics, in which a counter family
/// `x` has the sample `x_total` (Prometheus reads it by this header).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The HTTP endpoints.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.encode())
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposed samples of each of VolSync's metrics and of the
    /// operation histogram, by their full name and labels.
    #[test]
    fn the_exposition_names_volsyncs_metrics_as_volsync_does() {
        let metrics = Metrics::default();
        let labels = ObjectLabels {
            obj_name: "db".into(),
            obj_namespace: "dst".into(),
            role: "destination".into(),
            method: "blocksync".into(),
        };
        metrics.missed_intervals.get_or_create(&labels).inc();
        metrics.out_of_sync.get_or_create(&labels).set(1);
        metrics.sync_duration.get_or_create(&labels).observe(3.0);
        drop(metrics.time("destination", Operation::Save));
        let text = metrics.encode();
        let object = r#"{obj_name="db",obj_namespace="dst",role="destination",method="blocksync"}"#;
        for sample in [
            format!("volsync_missed_intervals_total{object} 1"),
            format!("volsync_volume_out_of_sync{object} 1"),
            format!("volsync_sync_duration_seconds_sum{object} 3.0"),
            format!("volsync_sync_duration_seconds_count{object} 1"),
            r#"wasmover_operation_duration_seconds_count{role="destination",operation="save"} 1"#
                .into(),
        ] {
            assert!(text.contains(&sample), "{sample} in\n{text}");
        }
        for family in [
            "# TYPE volsync_missed_intervals counter",
            "# TYPE volsync_volume_out_of_sync gauge",
            "# TYPE volsync_sync_duration_seconds histogram",
            "# TYPE wasmover_operation_duration_seconds histogram",
        ] {
            assert!(text.contains(family), "{family} in\n{text}");
        }
    }
}
