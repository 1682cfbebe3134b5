//! Prometheus metrics with VolSync's names, and the operator's HTTP
//! endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
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
    /// `volsync_sync_duration_seconds`: how long synchronizations take.
    pub sync_duration: Family<ObjectLabels, Histogram>,
    /// `volsync_missed_intervals_total`: scheduled runs that started late,
    /// after the following run was already due.
    pub missed_intervals: Family<ObjectLabels, Counter>,
    /// `volsync_volume_out_of_sync`: 1 while the last synchronization
    /// failed or is overdue, 0 once it completed.
    pub out_of_sync: Family<ObjectLabels, Gauge>,
    /// `wasmover_bytes_transferred_total`: bytes movers reported moving in
    /// completed synchronizations.
    pub bytes_transferred: Family<ObjectLabels, Counter>,
    /// `wasmover_files_transferred_total`: files whose content completed
    /// synchronizations rebuilt, as movers report them.
    pub files_transferred: Family<ObjectLabels, Counter>,
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
        let bytes_transferred = Family::default();
        let files_transferred = Family::default();
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
            "Duration of synchronizations",
            sync_duration.clone(),
        );
        registry.register(
            "volsync_missed_intervals",
            "Scheduled synchronizations that started after the next was due",
            missed_intervals.clone(),
        );
        registry.register(
            "volsync_volume_out_of_sync",
            "1 while the volume is not synchronized",
            out_of_sync.clone(),
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
            bytes_transferred,
            files_transferred,
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

    /// Marks the controllers as started (`/readyz` answers 200).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }
}

/// The HTTP endpoints.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.encode() }),
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
