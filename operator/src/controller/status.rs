//! Writing what a reconcile found: the `Synchronizing` condition, the
//! status fields a run fills in, server-side apply of the whole status,
//! Events on the object and its metric labels.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde_json::json;
use wasmover_host::error::{MAX_EVENT_NOTE_BYTES, bounded};

use super::endpoint;
use super::mover::{Ran, Step};
use super::{Context, Error, Replication};
use crate::crd::{
    CONDITION_SYNCHRONIZING, ImageRef, SyncStatus, condition, endpoint_reason, reason,
};
use crate::metrics::{ObjectLabels, Operation};

/// Field manager of the operator's status writes.
pub const MANAGER: &str = "wasmover";

/// The `Synchronizing` condition, as of `generation`.
pub(super) fn synchronizing(
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    condition(CONDITION_SYNCHRONIZING, status, reason, message, generation)
}

/// Resets what the last synchronization reported and marks a new one
/// started at `now`.
pub(super) fn start(sync: &mut SyncStatus, now: Timestamp, generation: Option<i64>) {
    sync.last_sync_start_time = Some(Time(now));
    sync.latest_mover_status = None;
    sync.bytes_transferred = None;
    sync.bytes_total = None;
    sync.files_transferred = None;
    sync.files_to_transfer = None;
    sync.set_condition(synchronizing(
        "True",
        reason::SYNC_IN_PROGRESS,
        "synchronization started",
        generation,
    ));
}

/// `duration` as Go's `time.Duration.String()` writes it, as VolSync's
/// `lastSyncDuration` holds it: `1h0m0s`, `1m2.5s`, `350ms`, `1.5µs`, `0s`.
pub(super) fn go_duration(duration: SignedDuration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.unsigned_abs();
    // Under a second: the largest unit that keeps a whole part.
    let (unit, per_unit) = match nanos {
        0..1_000 => ("ns", 1),
        1_000..1_000_000 => ("µs", 1_000),
        1_000_000..1_000_000_000 => ("ms", 1_000_000),
        _ => ("s", 1_000_000_000),
    };
    let whole = nanos / per_unit;
    let fraction = nanos % per_unit;
    let decimals = per_unit.ilog10() as usize;
    let mut fraction = format!("{fraction:0decimals$}");
    fraction.truncate(fraction.trim_end_matches('0').len());
    let point = if fraction.is_empty() { "" } else { "." };
    if unit != "s" {
        return format!("{sign}{whole}{point}{fraction}{unit}");
    }
    let (hours, minutes, seconds) = (whole / 3600, whole / 60 % 60, whole % 60);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}{point}{fraction}s"),
        (0, _) => format!("{sign}{minutes}m{seconds}{point}{fraction}s"),
        _ => format!("{sign}{hours}h{minutes}m{seconds}{point}{fraction}s"),
    }
}

/// Records which module ran, its progress and, when its synchronization
/// completed, the transfer it reported; returns what the run did.
pub(super) fn record(sync: &mut SyncStatus, ran: Ran) -> Step {
    sync.module = Some(ran.module);
    sync.module_version = Some(ran.version);
    if let Some(progress) = ran.progress {
        sync.bytes_transferred = Some(progress.bytes_done);
        sync.bytes_total = Some(progress.bytes_total);
        sync.files_transferred = Some(progress.entries_done);
        sync.files_to_transfer = Some(progress.entries_total);
    }
    if let Some(transfer) = ran.synchronized {
        // What the finished synchronization's transfer reported (its
        // agents, for blocksync) outranks progress along the way.
        if let Some(t) = &transfer {
            sync.bytes_transferred = Some(t.bytes_on_wire);
            sync.bytes_total = Some(t.bytes_total);
            sync.files_transferred = Some(t.files_transferred);
            // Its agents' count from comparing the trees, if it was read.
            sync.files_to_transfer = sync.files_to_transfer.max(Some(t.files_transferred));
        }
        sync.last_sync_digest = transfer
            .as_ref()
            .map(|t| t.tree_digest.clone())
            .filter(|d| !d.is_empty());
        sync.last_sync_verified = transfer.map(|t| t.verified);
    }
    ran.step
}

/// VolSync's metric labels of an object.
pub(super) fn labels<K: Replication>(obj: &K) -> ObjectLabels {
    let module = &obj.mover().module;
    ObjectLabels {
        obj_name: obj.name_any(),
        obj_namespace: obj.namespace().unwrap_or_default(),
        role: K::ROLE.into(),
        method: if module.is_empty() {
            "auto".into()
        } else {
            module.clone()
        },
    }
}

/// Publishes an Event on the object; a failure to publish is only logged.
pub(super) async fn publish<K: Replication>(
    ctx: &Context,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(bounded(note, MAX_EVENT_NOTE_BYTES)),
        action: "Synchronize".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!("cannot publish an event: {e}");
    }
}

/// Writes the whole status (with `image` as the latest, if new) by
/// server-side apply under [`MANAGER`].
pub(super) async fn apply_status<K: Replication>(
    ctx: &Context,
    obj: &K,
    sync: &SyncStatus,
    image: Option<ImageRef>,
) -> Result<(), Error> {
    let _timer = ctx.metrics.time(K::ROLE, Operation::Save);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    // A destination's endpoint is read afresh on every write, the
    // `EndpointReady` condition with it.
    let status = if K::REPORTS_ENDPOINT {
        let mut sync = sync.clone();
        let observed = endpoint::observe(&ctx.client, obj, &mut sync).await?;
        for note in observed.replaced {
            publish(ctx, obj, false, endpoint_reason::REPLACED, note).await;
        }
        let mut status = obj.status_document(&sync, image);
        if let Some(endpoint) = observed.endpoint {
            obj.put_endpoint(&mut status, &endpoint);
        }
        status
    } else {
        obj.status_document(sync, image)
    };
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        let ns = SignedDuration::from_nanos;
        #[rustfmt::skip]
        let table = [
            (ns(0), "0s"),
            (ns(1), "1ns"),
            (ns(999), "999ns"),
            (ns(1_100), "1.1µs"),
            (ns(1_000_001), "1.000001ms"),
            (ns(2_200_000), "2.2ms"),
            (SignedDuration::from_millis(350), "350ms"),
            (SignedDuration::from_millis(999), "999ms"),
            (SignedDuration::from_secs(1), "1s"),
            (SignedDuration::from_millis(3_300), "3.3s"),
            (SignedDuration::from_millis(12_500), "12.5s"),
            (SignedDuration::from_millis(62_500), "1m2.5s"),
            (SignedDuration::from_secs(245), "4m5s"),
            (SignedDuration::from_millis(245_001), "4m5.001s"),
            (SignedDuration::from_secs(60), "1m0s"),
            (SignedDuration::from_secs(3_600), "1h0m0s"),
            (SignedDuration::from_secs(3_605), "1h0m5s"),
            (SignedDuration::from_millis(18_367_001), "5h6m7.001s"),
            (ns(480_000_000_001), "8m0.000000001s"),
            (SignedDuration::from_secs(100 * 3_600), "100h0m0s"),
            (ns(-1), "-1ns"),
            (SignedDuration::from_millis(-62_500), "-1m2.5s"),
            // Go's largest and smallest: i64 nanoseconds.
            (ns(i64::MAX), "2562047h47m16.854775807s"),
            (ns(i64::MIN), "-2562047h47m16.854775808s"),
        ];
        for (duration, go) in table {
            assert_eq!(go_duration(duration), go, "{duration:?}");
        }
    }
}
