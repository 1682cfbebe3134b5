//! VolSync's own CRs, from VolSync's CRDs as its pinned Go module ships
//! them (no VolSync controller runs): a pair whose `spec.external.provider`
//! names wasmover runs like wasmover's own and reports in VolSync's status
//! fields, beside wasmover's own CRs; one with another provider, or without
//! an external block, is never touched; an invalid parameter is refused by
//! name.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use wasmover_operator::controller::Replication;
use wasmover_operator::crd;
use wasmover_operator::volsync::{PROVIDER, ReplicationDestination, ReplicationSource};
use wasmover_tests::apiserver::{ApiServer, install_crds};
use wasmover_tests::cluster::{
    condition_reason, create, eventually, failure, job_controller_stand_in, namespace, warning,
};
use wasmover_tests::operator::Operator;
use wasmover_tests::volsync::install_volsync_crds;

/// The status of a VolSync object as the API server has it.
fn status<K: Replication>(object: &K) -> Value {
    serde_json::to_value(object).unwrap()["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volsync_external_objects_for_wasmover_are_served_and_others_untouched() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    install_volsync_crds(&client).await;
    let operator = Operator::start(&server, None).await;
    namespace(&client, "vs").await;
    namespace(&client, "ours").await;

    let untouched = others_are_created(&client).await;
    a_volsync_destination_runs_beside_a_wasmover_one(&client).await;
    a_volsync_source_reports_in_volsyncs_status(&client).await;
    a_bad_parameter_is_refused_by_name(&client).await;
    others_stay_untouched(&client, untouched).await;
    operator.task.abort();
}

/// VolSync objects that are not wasmover's: another provider (with
/// parameters wasmover would refuse), and VolSync's own rsync-tls mover.
/// Returns their resourceVersions as created.
async fn others_are_created(client: &Client) -> Vec<(String, String)> {
    let sources: Api<ReplicationSource> = Api::namespaced(client.clone(), "vs");
    create(
        &sources,
        "other-provider",
        json!({
            "sourcePVC": "data",
            "trigger": {"manual": "now"},
            "external": {"provider": "example.com/mover", "parameters": {"copymethod": "Teleport"}},
        }),
    )
    .await;
    create(
        &sources,
        "rsync-tls",
        json!({"sourcePVC": "data", "rsyncTLS": {"address": "db.backup.svc", "copyMethod": "Snapshot"}}),
    )
    .await;
    let mut versions = Vec::new();
    for name in ["other-provider", "rsync-tls"] {
        let object = sources.get(name).await.unwrap();
        versions.push((name.to_owned(), object.resource_version().unwrap()));
    }
    versions
}

/// Long after the operator saw them: no finalizer, no status, not one
/// write.
async fn others_stay_untouched(client: &Client, created: Vec<(String, String)>) {
    let sources: Api<ReplicationSource> = Api::namespaced(client.clone(), "vs");
    for (name, version) in created {
        let object = sources.get(&name).await.unwrap();
        assert!(
            object.finalizers().is_empty(),
            "{name}: {:?}",
            object.finalizers()
        );
        assert_eq!(status(&object), Value::Null, "{name}");
        assert_eq!(
            object.resource_version().unwrap(),
            version,
            "{name} was written to"
        );
    }
}

/// A VolSync ReplicationDestination with provider wasmover and blocksync
/// in namespace `vs`, and a wasmover.dev one of the same name in `ours`:
/// both run (the test plays the Job controller) and complete; VolSync's
/// has VolSync's status fields, and the orphan collector (every second
/// here) leaves what its mover made alone.
async fn a_volsync_destination_runs_beside_a_wasmover_one(client: &Client) {
    let volsync: Api<ReplicationDestination> = Api::namespaced(client.clone(), "vs");
    let ours: Api<crd::ReplicationDestination> = Api::namespaced(client.clone(), "ours");
    create(
        &volsync,
        "db",
        json!({
            "trigger": {"manual": "first"},
            "external": {"provider": PROVIDER, "parameters": {
                "module": "blocksync", "capacity": "1Gi", "accessModes": "ReadWriteOnce",
            }},
        }),
    )
    .await;
    create(
        &ours,
        "db",
        json!({"capacity": "1Gi", "trigger": {"manual": "first"}, "mover": {"module": "blocksync"}}),
    )
    .await;
    for namespace in ["vs", "ours"] {
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        let job = eventually(&format!("the agent Job in {namespace} exists"), || async {
            jobs.get_opt("db-blocksync-dst").await.unwrap()
        })
        .await;
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        let group = if namespace == "vs" {
            "volsync.backube/v1alpha1"
        } else {
            "wasmover.dev/v1alpha1"
        };
        assert_eq!(
            (owner.api_version.as_str(), owner.kind.as_str()),
            (group, "ReplicationDestination")
        );
        job_controller_stand_in(&jobs, "db-blocksync-dst").await;
    }
    let rd = eventually("the VolSync destination completes", || async {
        let rd = volsync.get("db").await.unwrap();
        (status(&rd)["lastManualSync"] == "first").then_some(rd)
    })
    .await;
    assert_eq!(rd.finalizers(), ["wasmover.dev/cleanup"]);
    let st = status(&rd);
    for field in ["lastSyncTime", "lastSyncStartTime", "lastSyncDuration"] {
        assert!(st[field].is_string(), "{field} in {st:#}");
    }
    assert_eq!(st["latestMoverStatus"]["result"], "Successful", "{st:#}");
    assert_eq!(
        st["latestImage"],
        json!({"kind": "PersistentVolumeClaim", "name": "db-dest"}),
        "a TypedLocalObjectReference: {st:#}"
    );
    let synchronizing = st["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Synchronizing"))
        .unwrap_or_else(|| panic!("a Synchronizing condition: {st:#}"));
    assert_eq!(
        (&synchronizing["status"], &synchronizing["reason"]),
        (&json!("False"), &json!("WaitingForManual")),
        "{st:#}"
    );
    // Where sources reach it, with the key Secret to copy.
    assert_eq!(
        st["external"]["endpoint.keySecret"], "db-blocksync-key",
        "{st:#}"
    );
    let module = st["external"]["module"].as_str().unwrap_or_default();
    assert!(module.starts_with("blocksync@sha256:"), "{st:#}");
    // The wasmover.dev one completed too, in its own shape.
    eventually("the wasmover destination completes", || async {
        let status = ours.get("db").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("first")).then_some(())
    })
    .await;
    // Orphans are collected every second: what VolSync's object's mover
    // made is not taken for an orphan of a wasmover.dev object.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "vs");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "vs");
    assert!(pvcs.get_opt("db-dest").await.unwrap().is_some());
    assert!(secrets.get_opt("db-blocksync-key").await.unwrap().is_some());
}

/// A VolSync ReplicationSource with provider wasmover whose mover reports
/// its transfer: VolSync's fields, and wasmover's extras in
/// `status.external`.
async fn a_volsync_source_reports_in_volsyncs_status(client: &Client) {
    let sources: Api<ReplicationSource> = Api::namespaced(client.clone(), "vs");
    create(
        &sources,
        "app",
        json!({
            "sourcePVC": "data",
            "trigger": {"manual": "once"},
            "external": {"provider": PROVIDER, "parameters": {
                "module": "hostile", "copyMethod": "Direct", "mover.hostile": "progress",
            }},
        }),
    )
    .await;
    let st = eventually("the VolSync source completes", || async {
        let st = status(&sources.get("app").await.unwrap());
        (st["lastManualSync"] == "once").then_some(st)
    })
    .await;
    assert_eq!(st["latestMoverStatus"]["result"], "Successful", "{st:#}");
    let external = &st["external"];
    assert_eq!(external["bytesTransferred"], "4096", "{st:#}");
    assert_eq!(external["filesTransferred"], "2", "{st:#}");
    assert_eq!(external["lastSyncDigest"], "5ca1ab1e".repeat(8), "{st:#}");
    assert_eq!(external["lastSyncVerified"], "true", "{st:#}");
    assert!(
        external["module"]
            .as_str()
            .is_some_and(|m| m.starts_with("hostile@sha256:")),
        "{st:#}"
    );
    // The reconciler reads back what it wrote.
    let sync = sources.get("app").await.unwrap().sync_status();
    assert_eq!(sync.bytes_transferred, Some(4096));
    assert_eq!(sync.last_sync_verified, Some(true));

    // Handed to another provider, the object is let go: the finalizer
    // goes, and nothing is written after.
    let patch = json!({"spec": {"external": {"provider": "example.com/mover"}}});
    sources
        .patch("app", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    eventually("the finalizer is removed", || async {
        let app = sources.get("app").await.unwrap();
        app.finalizers().is_empty().then_some(())
    })
    .await;
}

/// A misspelt parameter: the object is wasmover's (it has the finalizer),
/// nothing runs, `Synchronizing` says `Error` naming the parameter, a
/// Warning Event `InvalidSpec` says the same; deleting it is not held up.
async fn a_bad_parameter_is_refused_by_name(client: &Client) {
    let sources: Api<ReplicationSource> = Api::namespaced(client.clone(), "vs");
    create(
        &sources,
        "typo",
        json!({
            "sourcePVC": "data",
            "external": {"provider": PROVIDER, "parameters": {"module": "hostile", "copymethod": "Snapshot"}},
        }),
    )
    .await;
    let message = failure(&sources, "typo").await;
    assert!(
        message.starts_with(
            r#"spec.external.parameters: unknown parameter "copymethod"; wasmover reads module, "#
        ),
        "{message}"
    );
    let typo = sources.get("typo").await.unwrap();
    assert_eq!(typo.finalizers(), ["wasmover.dev/cleanup"]);
    assert_eq!(status(&typo)["latestMoverStatus"], Value::Null);
    let events: Api<Event> = Api::namespaced(client.clone(), "vs");
    assert_eq!(warning(&events, "typo", "InvalidSpec").await, message);

    // A malformed value on a destination.
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), "vs");
    create(
        &destinations,
        "big",
        json!({"external": {"provider": PROVIDER, "parameters": {"capacity": "10GB"}}}),
    )
    .await;
    let message = failure(&destinations, "big").await;
    assert_eq!(
        message,
        r#"spec.external.parameters.capacity: "10GB" is not a quantity such as 10Gi"#
    );
    let big = destinations.get("big").await.unwrap();
    let (reason, _) = condition_reason(Some(&big.sync_status())).unwrap();
    assert_eq!(reason, "Error");

    sources
        .delete("typo", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the refused source is deleted", || async {
        sources
            .get_opt("typo")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
