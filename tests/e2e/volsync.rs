//! VolSync's own CRs on the real node: a VolSync-shaped external
//! ReplicationSource/ReplicationDestination pair with provider wasmover
//! replicates between two namespaces, with VolSync's status fields filled.
//! VolSync's CRDs (its pinned Go module's) were installed before the
//! operator started; no VolSync controller runs.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use wasmover_operator::crd::ImageRef;
use wasmover_operator::volsync::{PROVIDER, ReplicationDestination, ReplicationSource};
use wasmover_tests::cluster::{create, eventually_within};

use super::{CopyMethods, SYNC, Suite};

/// The status of a VolSync object once `done` holds of it; panics naming
/// `what` and showing the status if it does not within [`SYNC`].
async fn status_when<K: wasmover_operator::controller::Replication>(
    api: &Api<K>,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + SYNC;
    loop {
        let object = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
        let status = object["status"].clone();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; its status: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A Snapshot destination and a Direct source, paired by hand as with
/// VolSync's rsync-tls (the key Secret copied and named, the Service's
/// address and port as the mover's parameters), synchronized once by a manual trigger;
/// the snapshot, restored, equals the source.
pub(super) async fn story(suite: &Suite<'_>) {
    let pair = suite
        .pair("volsync", CopyMethods::new("Direct", "Snapshot"))
        .await;
    let destinations: Api<ReplicationDestination> =
        Api::namespaced(suite.client.clone(), &pair.dst);
    let sources: Api<ReplicationSource> = Api::namespaced(suite.client.clone(), &pair.src);
    create(
        &destinations,
        "db",
        json!({
            "trigger": {"manual": "1"},
            "external": {"provider": PROVIDER, "parameters": {
                "module": "blocksync",
                "capacity": "1Gi",
                "copyMethod": pair.methods.destination,
            }},
        }),
    )
    .await;
    // The destination's agent listens behind the Service its mover made.
    let services: Api<Service> = Api::namespaced(suite.client.clone(), &pair.dst);
    let service = eventually_within("the destination's Service exists", SYNC, || async {
        services.get_opt("db-blocksync").await.unwrap()?.spec
    })
    .await;
    let address = service.cluster_ip.expect("a ClusterIP Service");
    let port = service.ports.unwrap()[0].port;
    // The destination's status says the same, in `external`.
    let reported = status_when(
        &destinations,
        "db",
        "the VolSync destination reports its endpoint",
        |s| s["external"]["endpoint.address"].is_string(),
    )
    .await;
    assert_eq!(
        (
            &reported["external"]["endpoint.address"],
            &reported["external"]["endpoint.port"],
            &reported["external"]["endpoint.keySecret"],
        ),
        (
            &json!(address),
            &json!(port.to_string()),
            &json!("db-blocksync-key")
        ),
        "{reported:#}"
    );
    let key = Api::<Secret>::namespaced(suite.client.clone(), &pair.dst)
        .get("db-blocksync-key")
        .await
        .unwrap();
    let copy: Secret = serde_json::from_value(json!({
        "metadata": {"name": "app-blocksync-key"},
        "data": key.data,
    }))
    .unwrap();
    Api::<Secret>::namespaced(suite.client.clone(), &pair.src)
        .create(&PostParams::default(), &copy)
        .await
        .unwrap();
    create(
        &sources,
        "app",
        json!({
            "sourcePVC": "data",
            "trigger": {"manual": "1"},
            "external": {"provider": PROVIDER, "parameters": {
                "module": "blocksync",
                "copyMethod": pair.methods.source,
                "mover.address": address,
                "mover.port": port.to_string(),
                "mover.key-secret": "app-blocksync-key",
            }},
        }),
    )
    .await;

    let served = |s: &Value| s["lastManualSync"] == "1";
    let source = status_when(&sources, "app", "the VolSync source synchronizes", served).await;
    let destination = status_when(
        &destinations,
        "db",
        "the VolSync destination synchronizes",
        served,
    )
    .await;
    for (kind, status) in [("source", &source), ("destination", &destination)] {
        for field in ["lastSyncTime", "lastSyncStartTime", "lastSyncDuration"] {
            assert!(status[field].is_string(), "{kind} {field}: {status:#}");
        }
        assert_eq!(
            status["latestMoverStatus"]["result"], "Successful",
            "{kind}: {status:#}"
        );
        let synchronizing = status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Synchronizing"))
            .unwrap_or_else(|| panic!("{kind} has a Synchronizing condition: {status:#}"));
        assert_eq!(
            (&synchronizing["status"], &synchronizing["reason"]),
            (&json!("False"), &json!("WaitingForManual")),
            "{kind}: {status:#}"
        );
        let external = &status["external"];
        assert!(
            external["module"]
                .as_str()
                .is_some_and(|m| m.starts_with("blocksync@sha256:")),
            "{kind}: {status:#}"
        );
        assert_eq!(external["lastSyncVerified"], "true", "{kind}: {status:#}");
    }
    // Both ends agree on the replica's tree digest.
    assert_eq!(
        source["external"]["lastSyncDigest"], destination["external"]["lastSyncDigest"],
        "{source:#}\n{destination:#}"
    );
    // The latest image, a TypedLocalObjectReference to the snapshot.
    let image: ImageRef = serde_json::from_value(destination["latestImage"].clone())
        .unwrap_or_else(|e| panic!("latestImage: {e}: {destination:#}"));
    assert_eq!(
        (image.api_group.as_deref(), image.kind.as_str()),
        (Some("snapshot.storage.k8s.io"), "VolumeSnapshot")
    );
    pair.compare_image(&image, "volsync").await;
}
