//! Working with objects in the test cluster: namespaces, replication
//! objects and their conditions, waiting on them, and the Job controller,
//! which the tests play (nothing runs Pods here).

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use wasmover_operator::controller::Replication;
use wasmover_operator::crd::SyncStatus;

/// Polls `check` until it returns `Some`, for at most a minute.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(60), check).await
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {limit:?} waiting until {what}");
}

/// Waits for a Warning Event with `reason` on the object named `object`;
/// returns its message.
pub async fn warning(events: &Api<Event>, object: &str, reason: &str) -> String {
    event(events, object, reason, "Warning").await
}

/// Waits for an Event of `type_` (`Normal`, `Warning`) with `reason` on the
/// object named `object`; returns its message.
pub async fn event(events: &Api<Event>, object: &str, reason: &str, type_: &str) -> String {
    eventually(
        &format!("{object} has a {reason} {type_} Event"),
        || async {
            events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|e| {
                    e.involved_object.name.as_deref() == Some(object)
                        && e.reason.as_deref() == Some(reason)
                        && e.type_.as_deref() == Some(type_)
                })
                .map(|e| e.message.unwrap_or_default())
        },
    )
    .await
}

/// Creates the namespace `name`.
pub async fn namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
}

/// Creates a replication object of kind `K` named `name` with `spec`.
pub async fn create<K: Replication>(api: &Api<K>, name: &str, spec: serde_json::Value) {
    let object: K = serde_json::from_value(json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

/// Waits until the object's `Synchronizing` condition says `Error`;
/// returns its message.
pub async fn failure<K: Replication>(api: &Api<K>, name: &str) -> String {
    eventually(&format!("{name} reports an error"), || async {
        let object = api.get(name).await.unwrap();
        let (reason, message) = condition_reason(Some(&object.sync_status()))?;
        (reason == "Error").then_some(message)
    })
    .await
}

/// The `Synchronizing` condition's reason and message.
pub fn condition_reason(status: Option<&SyncStatus>) -> Option<(String, String)> {
    condition(status, "Synchronizing")
}

/// The `ModuleResolved` condition's reason and message.
pub fn module_condition(status: Option<&SyncStatus>) -> Option<(String, String)> {
    condition(status, "ModuleResolved")
}

fn condition(status: Option<&SyncStatus>, type_: &str) -> Option<(String, String)> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// What the Job controller would write when the agent's Pod succeeded.
pub async fn job_controller_stand_in(jobs: &Api<Job>, name: &str) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "startTime": now,
        "completionTime": now,
        "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastTransitionTime": now},
        ],
    }});
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}
