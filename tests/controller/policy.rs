//! The admin's policy: an object that names a module or asks for limits
//! outside it runs nothing, and its status and an Event say which rule
//! refused it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Event;
use kube::api::Api;
use serde_json::json;
use wasmover_operator::controller::{Replication, RunOptions};
use wasmover_operator::crd::ReplicationDestination;
use wasmover_operator::metrics::{ErrorLabels, Metrics};
use wasmover_operator::policy::Policy;
use wasmover_tests::apiserver::{ApiServer, install_crds};
use wasmover_tests::cluster::{condition_reason, create, eventually, namespace, warning};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_outside_the_policy_runs_nothing_and_says_which_rule_refused_it() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    let policy = Policy::from_yaml(
        "allowedModules: [builtin:blocksync, 'oci://registry.example/movers/']\n\
         allowUnpinnedTags: false\n\
         maxLimits: {memoryBytes: 1073741824}\n",
        "test",
    )
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let operator = tokio::spawn(wasmover_operator::controller::run(
        client.clone(),
        wasmover_operator::builtin::catalog(&wasmover_tests::engine()).unwrap(),
        metrics.clone(),
        RunOptions {
            policy: Arc::new(policy),
            agent_image: Some(wasmover_tests::AGENT_IMAGE.into()),
            ..RunOptions::default()
        },
    ));
    namespace(&client, "policy").await;
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), "policy");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "policy");
    let events: Api<Event> = Api::namespaced(client.clone(), "policy");
    let spec = |mover: serde_json::Value| json!({"capacity": "1Gi", "trigger": {"manual": "first"}, "mover": mover});
    let refused = [
        (
            "foreign",
            json!({"module": "oci://elsewhere.example/mover:v1"}),
            "policy: module \"oci://elsewhere.example/mover:v1\" is not from an allowed source \
             (allowed: builtin:blocksync, oci://registry.example/movers/)",
        ),
        (
            "tagged",
            json!({"module": "oci://registry.example/movers/blocksync:v1"}),
            "policy: module oci://registry.example/movers/blocksync:v1 names a tag without a \
             digest; the policy requires pinned digests (oci://...@sha256:...)",
        ),
        (
            "greedy",
            json!({"module": "blocksync", "limits": {"memoryBytes": 8589934592u64}}),
            "policy: spec.mover.limits.memoryBytes 8589934592 exceeds the policy maximum 1073741824",
        ),
    ];
    for (name, mover, _) in &refused {
        create(&destinations, name, spec(mover.clone())).await;
    }
    // An object within the policy runs: its mover creates its Job.
    create(
        &destinations,
        "allowed",
        spec(json!({"module": "blocksync"})),
    )
    .await;
    eventually("the admitted object's mover creates its Job", || async {
        jobs.get_opt("allowed-blocksync-dst").await.unwrap()
    })
    .await;

    for (name, _, rule) in refused {
        let (reason, message) = eventually("the refusal is in the status", || async {
            condition_reason(Some(&destinations.get(name).await.unwrap().sync_status()))
                .filter(|(reason, _)| reason == "PolicyRefused")
        })
        .await;
        assert_eq!((reason.as_str(), message.as_str()), ("PolicyRefused", rule));
        let status = destinations.get(name).await.unwrap().status.unwrap();
        assert!(status.sync.last_sync_start_time.is_none(), "{name} started");
        assert!(status.sync.module.is_none(), "{name} ran a module");
        assert_eq!(warning(&events, name, "PolicyRefused").await, rule);
    }
    // Long after the admitted object's Job appeared, the refused ones
    // have none, and each refusal was counted once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let names: Vec<String> = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    assert_eq!(names, ["allowed-blocksync-dst"]);
    let refusals = metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            role: ReplicationDestination::ROLE.into(),
            error: "policy".into(),
        })
        .get();
    assert_eq!(refusals, 3);
    operator.abort();
}
