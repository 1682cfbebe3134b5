//! A replication object names its mover by OCI reference: resolved to a
//! digest once, pulled with its pull secret, and run from the cache while
//! the registry is down.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use wasmover_operator::controller::RunOptions;
use wasmover_operator::crd::ReplicationDestination;
use wasmover_tests::apiserver::{ApiServer, install_crds};
use wasmover_tests::cluster::{
    condition_reason, eventually, job_controller_stand_in, module_condition, namespace,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cr_selects_its_mover_by_oci_reference_and_keeps_working_from_the_cache() {
    use wasmover_oci::{Credentials, ModuleStore};
    let mut registry = wasmover_tests::registry::TestRegistry::start();
    let private = wasmover_tests::registry::TestRegistry::start_with_auth("puller", "s3cret");
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    let store = tempfile::tempdir().unwrap();
    let engine = wasmover_tests::engine();
    let oci = wasmover_operator::modules::Oci::new(
        ModuleStore::new(store.path()),
        false,
        Credentials::default(),
    );
    let blocksync = wasmover_tests::guest("blocksync");
    let tag = registry.reference("movers/blocksync:v1");
    let digest = oci
        .push(&engine, &blocksync, &tag.parse().unwrap())
        .await
        .unwrap();
    let docker_config = |user: &str, password: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        json!({"auths": {private.addr(): {"auth": auth}}}).to_string()
    };
    let private_tag = private.reference("movers/blocksync:v1");
    wasmover_operator::modules::Oci::new(
        ModuleStore::new(store.path().join("pusher")),
        false,
        Credentials::from_json(docker_config("puller", "s3cret").as_bytes(), "test").unwrap(),
    )
    .push(&engine, &blocksync, &private_tag.parse().unwrap())
    .await
    .unwrap();

    let options = RunOptions {
        oci: Some(std::sync::Arc::new(
            wasmover_operator::modules::OciModules::new(engine.clone(), oci),
        )),
        agent_image: Some(wasmover_tests::AGENT_IMAGE.into()),
        ..RunOptions::default()
    };
    let operator = tokio::spawn(wasmover_operator::controller::run(
        client.clone(),
        wasmover_operator::builtin::catalog(&engine).unwrap(),
        std::sync::Arc::new(wasmover_operator::metrics::Metrics::default()),
        options,
    ));
    namespace(&client, "oci").await;
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), "oci");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "oci");
    let create = |name: &str, mover: serde_json::Value| {
        let rd: ReplicationDestination = serde_json::from_value(json!({
            "apiVersion": "wasmover.dev/v1alpha1",
            "kind": "ReplicationDestination",
            "metadata": {"name": name},
            "spec": {"capacity": "1Gi", "trigger": {"manual": "first"}, "mover": mover},
        }))
        .unwrap();
        let destinations = destinations.clone();
        async move {
            destinations
                .create(&PostParams::default(), &rd)
                .await
                .unwrap()
        }
    };

    // By tag: resolved once, the digest recorded, the condition says so,
    // and the module runs.
    create("tagged", json!({"module": tag})).await;
    job_controller_stand_in(
        &jobs,
        &eventually("the OCI mover creates its Job", || async {
            jobs.get_opt("tagged-blocksync-dst").await.unwrap()
        })
        .await
        .metadata
        .name
        .unwrap(),
    )
    .await;
    let status = eventually("the synchronization completes", || async {
        let status = destinations.get("tagged").await.unwrap().status?;
        status.sync.last_sync_time.is_some().then_some(status)
    })
    .await;
    let resolved = status.sync.resolved_module.clone().unwrap();
    assert_eq!(resolved.reference, tag);
    assert_eq!(resolved.manifest_digest, digest.to_string());
    let (reason, message) = module_condition(Some(&status.sync)).unwrap();
    assert_eq!(reason, "Unpinned");
    assert!(
        message.contains("not pinned") && message.contains(&format!("{tag}@{digest}")),
        "{message}"
    );

    // The tag moves to another module; the CR keeps the digest it resolved
    // (the Job is blocksync's again).
    wasmover_operator::modules::Oci::new(
        ModuleStore::new(store.path().join("mover")),
        false,
        Credentials::default(),
    )
    .push(
        &engine,
        &wasmover_tests::guest("hostile"),
        &tag.parse().unwrap(),
    )
    .await
    .unwrap();
    eventually("cleanup deleted the first Job", || async {
        jobs.get_opt("tagged-blocksync-dst")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    destinations
        .patch(
            "tagged",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"trigger": {"manual": "second"}}})),
        )
        .await
        .unwrap();
    eventually("the second run creates its Job", || async {
        jobs.get_opt("tagged-blocksync-dst").await.unwrap()
    })
    .await;
    job_controller_stand_in(&jobs, "tagged-blocksync-dst").await;
    let status = eventually("the second run completes", || async {
        let status = destinations.get("tagged").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("second")).then_some(status)
    })
    .await;
    assert_eq!(
        status.sync.resolved_module.unwrap().manifest_digest,
        digest.to_string()
    );

    // The registry goes down. A CR pinned to the cached digest works; one
    // whose module was never fetched reports why, with back-off.
    registry.stop();
    create("pinned", json!({"module": format!("{tag}@{digest}")})).await;
    eventually("the pinned mover runs from the cache", || async {
        jobs.get_opt("pinned-blocksync-dst").await.unwrap()
    })
    .await;
    let rd = destinations.get("pinned").await.unwrap();
    assert_eq!(
        module_condition(rd.status.as_ref().map(|s| &s.sync))
            .unwrap()
            .0,
        "Pinned"
    );
    create(
        "unreachable",
        json!({"module": registry.reference("movers/other:v1")}),
    )
    .await;
    let (reason, message) = eventually("the unreachable registry is reported", || async {
        let rd = destinations.get("unreachable").await.unwrap();
        module_condition(rd.status.as_ref().map(|s| &s.sync))
    })
    .await;
    assert_eq!(reason, "RegistryUnavailable");
    assert!(message.contains("cannot reach registry"), "{message}");
    let rd = destinations.get("unreachable").await.unwrap();
    let (reason, _) = condition_reason(rd.status.as_ref().map(|s| &s.sync)).unwrap();
    assert_eq!(reason, "Error");
    // Backing off: no retry within the first 5 s, and a retry that fails
    // the same way leaves the status as it was.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = destinations.get("unreachable").await.unwrap();
    assert_eq!(
        later.metadata.resource_version,
        rd.metadata.resource_version
    );

    // A private registry: refused without credentials, pulled with the
    // CR's modulePullSecret.
    create("anonymous", json!({"module": private_tag})).await;
    let (reason, message) = eventually("the refusal is reported", || async {
        let rd = destinations.get("anonymous").await.unwrap();
        module_condition(rd.status.as_ref().map(|s| &s.sync))
    })
    .await;
    assert_eq!(reason, "Unauthorized", "{message}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "oci");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": docker_config("puller", "s3cret")},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    create(
        "private",
        json!({"module": private_tag, "modulePullSecret": "pull"}),
    )
    .await;
    eventually("the private module runs", || async {
        jobs.get_opt("private-blocksync-dst").await.unwrap()
    })
    .await;
    operator.abort();
}
