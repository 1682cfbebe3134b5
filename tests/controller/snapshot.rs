//! A destination with `copyMethod: Snapshot` reports a fresh snapshot per
//! synchronization and keeps only the latest, as VolSync does; the test
//! plays the Job and snapshot controllers.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;
use wasmover_operator::crd::ReplicationDestination;
use wasmover_tests::apiserver::{
    ApiServer, install_crds, install_volume_snapshot_crd, volume_snapshot_resource,
};
use wasmover_tests::cluster::{create, eventually, failure, job_controller_stand_in, namespace};
use wasmover_tests::operator::Operator;

/// Two synchronizations in a row leave one VolumeSnapshot, the second's,
/// named in `latestImage`; the first is kept until the second is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sync_reports_its_own_snapshot_and_the_last_one_is_replaced() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    install_volume_snapshot_crd(&client).await;
    let operator = Operator::start(&server, None).await;
    namespace(&client, "snaps").await;
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), "snaps");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "snaps");
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "snaps", &volume_snapshot_resource());
    create(
        &destinations,
        "db",
        json!({"capacity": "1Gi", "copyMethod": "Snapshot", "trigger": {"manual": "a"}}),
    )
    .await;

    let first = sync(&destinations, &jobs, &snapshots, "a").await;
    destinations
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"trigger": {"manual": "b"}}})),
        )
        .await
        .unwrap();
    let second = sync(&destinations, &jobs, &snapshots, "b").await;
    assert_ne!(first, second);
    assert_eq!(snapshot_names(&snapshots).await, [second]);
    operator.task.abort();
}

/// Without the snapshot CRDs, a Snapshot destination fails with a
/// condition that names what to install, not the API server's bare 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_snapshot_crds_the_condition_says_what_to_install() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    let operator = Operator::start(&server, None).await;
    namespace(&client, "nosnap").await;
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), "nosnap");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "nosnap");
    create(
        &destinations,
        "db",
        json!({"capacity": "1Gi", "copyMethod": "Snapshot", "trigger": {"manual": "a"}}),
    )
    .await;
    eventually("the agent Job exists", || async {
        jobs.get_opt("db-blocksync-dst").await.unwrap()
    })
    .await;
    job_controller_stand_in(&jobs, "db-blocksync-dst").await;
    let message = failure(&destinations, "db").await;
    assert!(
        message.contains(
            "does not serve VolumeSnapshot (snapshot.storage.k8s.io/v1): install the snapshot CRDs"
        ),
        "{message}"
    );
    operator.task.abort();
}

/// Runs the synchronization of manual trigger `trigger` to its end: the
/// agent Job succeeds, a new snapshot of the PVC is requested beside the
/// earlier one and made ready, and the status names it. Returns its name.
async fn sync(
    destinations: &Api<ReplicationDestination>,
    jobs: &Api<Job>,
    snapshots: &Api<DynamicObject>,
    trigger: &str,
) -> String {
    // A fresh Job: the last run's, if still there, has succeeded.
    eventually("the run's agent Job exists", || async {
        let job = jobs.get_opt("db-blocksync-dst").await.unwrap()?;
        job.status.and_then(|s| s.succeeded).is_none().then_some(())
    })
    .await;
    let before = snapshot_names(snapshots).await;
    job_controller_stand_in(jobs, "db-blocksync-dst").await;
    let snapshot = eventually("the run's VolumeSnapshot is requested", || async {
        let list = snapshots
            .list(&ListParams::default().labels("wasmover.dev/snapshot-of=db"))
            .await
            .unwrap();
        list.items
            .into_iter()
            .find(|s| !before.contains(s.metadata.name.as_ref().unwrap()))
    })
    .await;
    let name = snapshot.metadata.name.clone().unwrap();
    assert_eq!(
        snapshot.data["spec"]["source"]["persistentVolumeClaimName"],
        "db-dest"
    );
    // Not ready yet: the earlier snapshot is still there.
    assert_eq!(snapshot_names(snapshots).await.len(), before.len() + 1);
    snapshots
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyToUse": true}})),
        )
        .await
        .unwrap();
    let image = eventually("the run's snapshot is the latest image", || async {
        let status = destinations.get("db").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some(trigger)).then_some(())?;
        status.latest_image
    })
    .await;
    assert_eq!(
        (
            image.api_group.as_deref(),
            image.kind.as_str(),
            image.name.as_str()
        ),
        (
            Some("snapshot.storage.k8s.io"),
            "VolumeSnapshot",
            name.as_str()
        )
    );
    name
}

async fn snapshot_names(snapshots: &Api<DynamicObject>) -> Vec<String> {
    let list = snapshots.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect()
}
