//! Two replicas elect one leader through a Lease, and the operator rides
//! out a restart of the API server and the death of its leader.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use wasmover_operator::crd::ReplicationDestination;
use wasmover_operator::leader::LeaseConfig;
use wasmover_tests::apiserver::{ApiServer, install_crds};
use wasmover_tests::cluster::{create, eventually, job_controller_stand_in, namespace};
use wasmover_tests::operator::{Operator, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_the_operator_survives_an_api_server_restart() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    // Production's 15 s Lease and 10 s renew deadline (a restart takes a
    // few seconds), retried every second.
    let lease = |identity: &str| LeaseConfig {
        retry_period: Duration::from_secs(1),
        ..LeaseConfig::new("default", identity)
    };
    let a = Operator::start(&server, Some(lease("a"))).await;
    let b = Operator::start(&server, Some(lease("b"))).await;
    eventually("one replica leads", || async {
        (a.leading() || b.leading()).then_some(())
    })
    .await;
    // The other does not take a live Lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.leading() != b.leading(), "exactly one replica leads");
    let first_leader = if a.leading() { "a" } else { "b" };
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "default");
    let holder = |lease: k8s_openapi::api::coordination::v1::Lease| {
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    assert_eq!(
        holder(leases.get("wasmover-operator").await.unwrap()),
        first_leader
    );

    namespace(&client, "dst").await;
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), "dst");
    create(
        &destinations,
        "db",
        json!({"capacity": "1Gi", "trigger": {"manual": "first"}}),
    )
    .await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "dst");
    eventually("the agent Job exists", || async {
        jobs.get_opt("db-blocksync-dst").await.unwrap()
    })
    .await;

    // The API server goes away mid-synchronization and comes back. A
    // leader that cannot renew within the renew deadline steps down and
    // restarts; either way one replica finishes the synchronization.
    let restarting = std::time::Instant::now();
    server.restart();
    eprintln!("kube-apiserver restarted in {:?}", restarting.elapsed());
    job_controller_stand_in(&jobs, "db-blocksync-dst").await;
    eventually(
        "the synchronization completes after the restart",
        || async {
            let status = destinations.get("db").await.unwrap().status?;
            (status.sync.last_manual_sync.as_deref() == Some("first")).then_some(())
        },
    )
    .await;
    eventually("one replica leads after the restart", || async {
        (a.leading() || b.leading()).then_some(())
    })
    .await;
    assert!(a.leading() != b.leading(), "exactly one replica leads");
    let (leader, standby, standby_name) = if a.leading() {
        (a, b, "b")
    } else {
        (b, a, "a")
    };

    // The leader dies without releasing the Lease: the standby takes over
    // once it expires and carries on with the next synchronization.
    leader.task.abort();
    for _ in 0..60 {
        if standby.leading() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        standby.leading(),
        "the standby did not take over; the Lease: {:?}",
        leases.get("wasmover-operator").await.unwrap().spec
    );
    assert_eq!(
        holder(leases.get("wasmover-operator").await.unwrap()),
        standby_name
    );
    destinations
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"trigger": {"manual": "second"}}})),
        )
        .await
        .unwrap();
    eventually("the new leader runs the mover", || async {
        jobs.get_opt("db-blocksync-dst").await.unwrap()
    })
    .await;
    job_controller_stand_in(&jobs, "db-blocksync-dst").await;
    eventually("the second synchronization completes", || async {
        let status = destinations.get("db").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("second")).then_some(())
    })
    .await;
    let text = http_get(standby.metrics_addr, "/metrics").await;
    assert!(text.contains("wasmover_leader 1"), "{text}");
    standby.task.abort();
}
