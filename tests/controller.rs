//! The operator against a real kube-apiserver and etcd on loopback, built
//! and started by `tests/apiserver/` (no mocks of the API).
//!
//! Nothing runs Pods here. Where a synchronization waits for its agent Job,
//! the test plays the Job controller: it writes the Job's status as the Job
//! controller would (`job_controller_stand_in`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Event as K8sEvent, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use wasmover_operator::controller::RunOptions;
use wasmover_operator::crd::{ReplicationDestination, ReplicationSource};
use wasmover_operator::leader::LeaseConfig;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apiserver")
}

/// A running etcd + kube-apiserver, stopped on drop.
struct ApiServer {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl ApiServer {
    fn start() -> Self {
        // start.sh picks free ports and releases them before etcd and the
        // API server bind them; with tests (and other work) starting
        // servers in parallel, another process can take one in between.
        // That shows as a server exiting at once: try again on new ports.
        let mut attempts = 3;
        loop {
            let dir = tempfile::tempdir().unwrap();
            let out = Command::new(scripts().join("start.sh"))
                .arg(dir.path())
                .output()
                .expect("tests/apiserver/start.sh runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                let kubeconfig = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
                return Self { dir, kubeconfig };
            }
            attempts -= 1;
            assert!(
                attempts > 0 && stderr.contains("exited"),
                "starting kube-apiserver failed (run tests/apiserver/install.sh first):\n{stderr}"
            );
            eprintln!("kube-apiserver or etcd exited at start, retrying on other ports:\n{stderr}");
        }
    }

    async fn config(&self) -> Config {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap()
    }

    async fn client(&self) -> Client {
        Client::try_from(self.config().await).unwrap()
    }

    /// Restarts the kube-apiserver (etcd keeps the data).
    fn restart(&self) {
        let out = Command::new(scripts().join("restart.sh"))
            .arg(self.dir.path())
            .output()
            .expect("tests/apiserver/restart.sh runs");
        assert!(
            out.status.success(),
            "restarting kube-apiserver failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An operator replica running in this process, as `wasmover operator`
/// runs in a Pod: when it fails (lost the leader Lease, no API server to
/// start with), it is started again, as the kubelet restarts a container.
struct Operator {
    metrics: std::sync::Arc<wasmover_operator::metrics::Metrics>,
    metrics_addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Operator {
    /// Starts an operator with the built-in movers and the hostile test
    /// module, collecting orphans every second.
    async fn start(server: &ApiServer, leader: Option<LeaseConfig>) -> Self {
        let metrics = std::sync::Arc::new(wasmover_operator::metrics::Metrics::default());
        let client =
            wasmover_operator::client::instrumented(server.config().await, metrics.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = listener.local_addr().unwrap();
        let router = wasmover_operator::metrics::router(metrics.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let options = RunOptions {
            leader,
            gc_interval: Duration::from_secs(1),
            ..RunOptions::default()
        };
        let run_metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let engine = wasmover_tests::engine();
            loop {
                let mut catalog = wasmover_operator::builtin::catalog(&engine).unwrap();
                catalog
                    .register(wasmover_tests::load(&engine, "hostile"))
                    .unwrap();
                let run = wasmover_operator::controller::run(
                    client.clone(),
                    catalog,
                    run_metrics.clone(),
                    options.clone(),
                );
                if let Err(e) = run.await {
                    eprintln!("replica restarts: {e:#}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                return anyhow::Ok(());
            }
        });
        Self {
            metrics,
            metrics_addr,
            task,
        }
    }

    fn leading(&self) -> bool {
        self.metrics.leader.get() == 1
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("stop.sh"))
            .arg(self.dir.path())
            .status();
    }
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in wasmover_operator::crd::yaml().split("---\n") {
        let crd: CustomResourceDefinition = serde_yaml::from_str(doc).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    // Wait until both are served.
    let sources: Api<ReplicationSource> = Api::all(client.clone());
    let destinations: Api<ReplicationDestination> = Api::all(client.clone());
    eventually("the CRDs are served", || async {
        (sources.list(&Default::default()).await.is_ok()
            && destinations.list(&Default::default()).await.is_ok())
        .then_some(())
    })
    .await;
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshot.
fn volume_snapshot_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
    ))
}

/// A minimal VolumeSnapshot CRD (the CSI external-snapshotter's kind, its
/// schema left open), so that movers can request snapshots; the test plays
/// the snapshot controller by setting `status.readyToUse`.
async fn install_volume_snapshot_crd(client: &Client) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {
            "name": "volumesnapshots.snapshot.storage.k8s.io",
            // As the external-snapshotter's own CRD: *.k8s.io groups need it.
            "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-csi/external-snapshotter/pull/419"},
        },
        "spec": {
            "group": "snapshot.storage.k8s.io",
            "names": {"kind": "VolumeSnapshot", "plural": "volumesnapshots", "singular": "volumesnapshot"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let snapshots: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_resource());
    eventually("VolumeSnapshots are served", || async {
        snapshots.list(&Default::default()).await.ok().map(|_| ())
    })
    .await;
}

/// Waits until the object's `Synchronizing` condition says `Error`;
/// returns its message.
async fn failure<K: wasmover_operator::controller::Replication>(api: &Api<K>, name: &str) -> String {
    eventually(&format!("{name} reports an error"), || async {
        let object = api.get(name).await.unwrap();
        let (reason, message) = condition_reason(Some(&object.sync_status()))?;
        (reason == "Error").then_some(message)
    })
    .await
}

/// Creates a replication object of kind `K` named `name` with `spec`.
async fn create<K: wasmover_operator::controller::Replication>(
    api: &Api<K>,
    name: &str,
    spec: serde_json::Value,
) {
    let object: K = serde_json::from_value(json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

/// Polls `check` until it returns `Some`, for at most a minute.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
}

/// What the Job controller would write when the agent's Pod succeeded.
async fn job_controller_stand_in(jobs: &Api<Job>, name: &str) {
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

/// A plain HTTP/1.1 GET; returns the whole response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn condition_reason(status: Option<&wasmover_operator::crd::SyncStatus>) -> Option<(String, String)> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == "Synchronizing")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_drives_a_mover_through_a_real_api_server() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    install_volume_snapshot_crd(&client).await;
    let Operator {
        metrics_addr,
        task: operator,
        ..
    } = Operator::start(&server, None).await;

    // On a schedule: waits for the next minute, then runs (checked below).
    namespace(&client, "sched").await;
    let scheduled: Api<ReplicationSource> = Api::namespaced(client.clone(), "sched");
    create(
        &scheduled,
        "every-minute",
        json!({
            "sourcePVC": "data",
            "trigger": {"schedule": "* * * * *"},
            "mover": {"module": "hostile", "parameters": {"hostile": "progress"}},
        }),
    )
    .await;
    let next = eventually("the schedule is waited for", || async {
        let status = scheduled.get("every-minute").await.unwrap().status?;
        let (reason, _) = condition_reason(Some(&status.sync))?;
        (reason == "WaitingForSchedule").then_some(status.sync.next_sync_time?)
    })
    .await;
    assert_eq!(next.0.as_second() % 60, 0, "fires on a minute: {next:?}");

    namespace(&client, "dst").await;
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), "dst");
    create(
        &destinations,
        "db",
        json!({
            "capacity": "1Gi",
            "trigger": {"manual": "first"},
            "mover": {"module": "blocksync"},
        }),
    )
    .await;

    // The mover created its objects through the scoped host functions.
    let jobs: Api<Job> = Api::namespaced(client.clone(), "dst");
    let job = eventually("the agent Job exists", || async {
        jobs.get_opt("db-blocksync-dst").await.unwrap()
    })
    .await;
    let labels = job.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("wasmover.dev/owner-name").map(String::as_str),
        Some("db")
    );
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ReplicationDestination", "db")
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "dst");
    assert!(secrets.get_opt("db-blocksync-key").await.unwrap().is_some());
    let services: Api<Service> = Api::namespaced(client.clone(), "dst");
    assert!(services.get_opt("db-blocksync").await.unwrap().is_some());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "dst");
    assert!(pvcs.get_opt("db-dest").await.unwrap().is_some());
    eventually("the status says SyncInProgress", || async {
        let rd = destinations.get("db").await.unwrap();
        let reason = condition_reason(rd.status.as_ref().map(|s| &s.sync))?;
        (reason.0 == "SyncInProgress").then_some(())
    })
    .await;

    job_controller_stand_in(&jobs, "db-blocksync-dst").await;
    let status = eventually("the synchronization completes", || async {
        let rd = destinations.get("db").await.unwrap();
        let status = rd.status?;
        status.sync.last_sync_time.is_some().then_some(status)
    })
    .await;
    assert_eq!(
        status.latest_image.as_ref().map(|i| i.name.as_str()),
        Some("db-dest")
    );
    assert_eq!(status.sync.last_manual_sync.as_deref(), Some("first"));
    assert_eq!(
        condition_reason(Some(&status.sync)).unwrap().0,
        "WaitingForManual"
    );
    // cleanup removed the Job, kept the PVC, the key and the Service.
    eventually("cleanup deleted the Job", || async {
        jobs.get_opt("db-blocksync-dst")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(pvcs.get_opt("db-dest").await.unwrap().is_some());
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), "dst");
    eventually("Events tell the story", || async {
        let reasons: Vec<String> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        ["SyncStarted", "KeyCreated", "SyncCompleted"]
            .iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(())
    })
    .await;

    // The synchronization is in VolSync's metrics.
    let text = http_get(metrics_addr, "/metrics").await;
    assert!(
        text.contains(r#"volsync_sync_duration_seconds_count{obj_name="db",obj_namespace="dst",role="destination",method="blocksync"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"volsync_volume_out_of_sync{obj_name="db",obj_namespace="dst",role="destination",method="blocksync"} 0"#), "{text}");
    assert!(
        text.contains(r#"wasmover_kube_request_duration_seconds_count{verb="create",code="201"}"#),
        "{text}"
    );
    assert!(
        http_get(metrics_addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // A new manual trigger value runs the mover again.
    let merge = |v| Patch::Merge(v);
    destinations
        .patch(
            "db",
            &PatchParams::default(),
            &merge(json!({"spec": {"trigger": {"manual": "second"}}})),
        )
        .await
        .unwrap();
    eventually("the second run creates its Job", || async {
        jobs.get_opt("db-blocksync-dst").await.unwrap()
    })
    .await;
    job_controller_stand_in(&jobs, "db-blocksync-dst").await;
    eventually("the second run completes", || async {
        let status = destinations.get("db").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("second")).then_some(())
    })
    .await;

    // Paused: nothing runs, and the condition says why.
    destinations
        .patch(
            "db",
            &PatchParams::default(),
            &merge(json!({"spec": {"paused": true, "trigger": {"manual": "third"}}})),
        )
        .await
        .unwrap();
    eventually("the pause is reported", || async {
        let rd = destinations.get("db").await.unwrap();
        let (_, message) = condition_reason(rd.status.as_ref().map(|s| &s.sync))?;
        (message == "synchronization is paused").then_some(())
    })
    .await;
    assert!(jobs.get_opt("db-blocksync-dst").await.unwrap().is_none());

    // A mover granted only PVCs is refused its Secret: a clean error, and
    // the user hears of the refusal.
    create(
        &destinations,
        "narrow",
        json!({
            "capacity": "1Gi",
            "mover": {
                "module": "blocksync",
                "capabilities": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim"}],
            },
        }),
    )
    .await;
    let message = failure(&destinations, "narrow").await;
    assert!(
        message.contains("Forbidden") && message.contains("Secret"),
        "{message}"
    );
    eventually("a MoverForbidden event is published", || async {
        let list = events.list(&Default::default()).await.unwrap();
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("MoverForbidden"))
            .then_some(())
    })
    .await;
    assert!(
        secrets
            .get_opt("narrow-blocksync-key")
            .await
            .unwrap()
            .is_none()
    );

    // An invalid CR gets a clear condition; the operator keeps working.
    namespace(&client, "src").await;
    let sources: Api<ReplicationSource> = Api::namespaced(client.clone(), "src");
    create(
        &sources,
        "app",
        json!({"sourcePVC": "data", "mover": {"module": "rclone"}}),
    )
    .await;
    let message = failure(&sources, "app").await;
    assert!(message.contains("no mover named rclone"), "{message}");
    create(
        &sources,
        "cron",
        json!({"sourcePVC": "data", "trigger": {"schedule": "every tuesday"}}),
    )
    .await;
    let message = failure(&sources, "cron").await;
    assert!(message.contains("invalid schedule"), "{message}");
    create(
        &sources,
        "missing",
        json!({
            "sourcePVC": "absent",
            "mover": {"module": "blocksync", "parameters": {"address": "db-blocksync.dst"}},
        }),
    )
    .await;
    let message = failure(&sources, "missing").await;
    assert!(
        message.contains("PersistentVolumeClaim absent does not exist"),
        "{message}"
    );
    // What a mover reports of its progress lands in status and metrics.
    create(
        &sources,
        "reporting",
        json!({
            "sourcePVC": "data",
            "trigger": {"manual": "once"},
            "mover": {"module": "hostile", "parameters": {"hostile": "progress"}},
        }),
    )
    .await;
    let status = eventually("the reporting mover completes", || async {
        let status = sources.get("reporting").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("once")).then_some(status.sync)
    })
    .await;
    assert_eq!(
        (status.bytes_transferred, status.bytes_total),
        (Some(4096), Some(4096))
    );
    assert_eq!(
        (status.files_transferred, status.files_to_transfer),
        (Some(2), Some(2))
    );
    // The transfer report it completed with: its tree digest and verdict.
    assert_eq!(
        (
            status.last_sync_digest.as_deref(),
            status.last_sync_verified
        ),
        (Some("5ca1ab1e".repeat(8).as_str()), Some(true))
    );
    assert!(
        status
            .module
            .as_deref()
            .is_some_and(|m| m.starts_with("hostile@sha256:")),
        "{:?}",
        status.module
    );
    let text = http_get(metrics_addr, "/metrics").await;
    assert!(
        text.contains(r#"wasmover_bytes_transferred_total{obj_name="reporting",obj_namespace="src",role="source",method="hostile"} 4096"#),
        "{text}"
    );
    assert!(
        text.contains(r#"wasmover_files_transferred_total{obj_name="reporting",obj_namespace="src",role="source",method="hostile"} 2"#),
        "{text}"
    );
    // A module that traps is reported, and stopped, like any failure.
    create(&sources, "trap", json!({"sourcePVC": "data", "mover": {"module": "hostile", "parameters": {"hostile": "trap"}}})).await;
    let message = failure(&sources, "trap").await;
    assert!(
        message.contains("hostile") && message.contains("deliberate panic in synchronize"),
        "{message}"
    );

    // copyMethod Snapshot: the image is a VolumeSnapshot of the PVC, once
    // the snapshot controller (played here) has made it ready.
    create(
        &destinations,
        "snap",
        json!({"capacity": "1Gi", "copyMethod": "Snapshot", "trigger": {"manual": "1"}}),
    )
    .await;
    eventually("the snapshot RD's Job exists", || async {
        jobs.get_opt("snap-blocksync-dst").await.unwrap()
    })
    .await;
    job_controller_stand_in(&jobs, "snap-blocksync-dst").await;
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "dst", &volume_snapshot_resource());
    let snapshot = eventually("the VolumeSnapshot is requested", || async {
        snapshots.get_opt("snap-dest-snap").await.unwrap()
    })
    .await;
    assert_eq!(
        snapshot.data["spec"]["source"]["persistentVolumeClaimName"],
        "snap-dest"
    );
    snapshots
        .patch(
            "snap-dest-snap",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyToUse": true}})),
        )
        .await
        .unwrap();
    let image = eventually("the snapshot is the latest image", || async {
        destinations.get("snap").await.unwrap().status?.latest_image
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
            "snap-dest-snap"
        )
    );

    // The scheduled source ran at its minute and waits for the next.
    let status = eventually("the scheduled source runs", || async {
        let status = scheduled.get("every-minute").await.unwrap().status?;
        status.sync.last_sync_time.is_some().then_some(status.sync)
    })
    .await;
    assert!(status.last_sync_time.unwrap().0 >= next.0);
    assert!(status.next_sync_time.unwrap().0 > next.0);

    // Deleting runs the finalizer (cleanup) and leaves no object behind.
    destinations
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the destination is gone", || async {
        destinations
            .get_opt("db")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // What its mover created (PVC, key, Service) goes with it: the
    // operator collects what lost its owner.
    eventually("the destination's objects are collected", || async {
        (pvcs.get_opt("db-dest").await.unwrap().is_none()
            && secrets.get_opt("db-blocksync-key").await.unwrap().is_none()
            && services.get_opt("db-blocksync").await.unwrap().is_none())
        .then_some(())
    })
    .await;
    let text = http_get(metrics_addr, "/metrics").await;
    assert!(text.contains("wasmover_orphans_deleted_total 3"), "{text}");
    sources
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the source is gone", || async {
        sources
            .get_opt("app")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    operator.abort();
}

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

/// The `ModuleResolved` condition's reason and message.
fn module_condition(status: Option<&wasmover_operator::crd::SyncStatus>) -> Option<(String, String)> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == "ModuleResolved")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

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
        oci: Some(std::sync::Arc::new(wasmover_operator::modules::OciModules::new(
            engine.clone(),
            oci,
        ))),
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

/// The Job controller and the kubelet, played by the test for an agent Job:
/// runs the Job's command (`wasmover agent ...`) as a local process, with
/// local directories standing in for its PersistentVolumeClaims, the key
/// Secret written to a file, and the listen or connect address mapped to
/// `port` on loopback (the Service's name resolution).
async fn run_agent_job(
    client: &Client,
    namespace: &str,
    job: &str,
    volumes: &[(&str, &Path)],
    scratch: &Path,
    port: u16,
) -> tokio::process::Child {
    let job = Api::<Job>::namespaced(client.clone(), namespace)
        .get(job)
        .await
        .unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    // A sender must not be able to write its volume.
    let sending = container.args.iter().flatten().any(|a| a == "send");
    let data_mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "data");
    match data_mount {
        Some(data) => assert_eq!(data.read_only.unwrap_or(false), sending, "{data:?}"),
        // A block-mode PVC: a device, read-only through the claim.
        None => {
            let claim = pod.volumes.iter().flatten().find(|v| v.name == "data");
            let claim = claim
                .and_then(|v| v.persistent_volume_claim.as_ref())
                .unwrap();
            assert_eq!(claim.read_only.unwrap_or(false), sending, "{claim:?}");
        }
    }
    assert_eq!(
        container.command.as_deref(),
        Some(&["wasmover".to_owned(), "agent".to_owned()][..])
    );
    let mut mounts = Vec::new();
    for volume in pod.volumes.unwrap_or_default() {
        // Where the container sees it: a mount, or a block device.
        let mount_path = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume.name)
            .map(|m| m.mount_path.clone())
            .or_else(|| {
                container
                    .volume_devices
                    .iter()
                    .flatten()
                    .find(|d| d.name == volume.name)
                    .map(|d| d.device_path.clone())
            })
            .unwrap_or_else(|| panic!("volume {} is not mounted", volume.name));
        let local = if let Some(claim) = &volume.persistent_volume_claim {
            let (_, dir) = volumes
                .iter()
                .find(|(name, _)| *name == claim.claim_name)
                .unwrap_or_else(|| panic!("nothing stands in for PVC {}", claim.claim_name));
            dir.to_path_buf()
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap();
            let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                .get(&name)
                .await
                .unwrap();
            let dir = scratch.join(format!("{namespace}-{name}"));
            std::fs::create_dir_all(&dir).unwrap();
            for (key, value) in secret.data.unwrap_or_default() {
                std::fs::write(dir.join(key), value.0).unwrap();
            }
            dir
        } else {
            panic!("volume {} is neither a PVC nor a Secret", volume.name);
        };
        mounts.push((mount_path, local));
    }
    let mut args = Vec::new();
    let mut previous = String::new();
    for arg in container.args.iter().flatten() {
        let mapped = if previous == "--listen" || previous == "--connect" {
            format!("127.0.0.1:{port}")
        } else {
            mounts
                .iter()
                .find_map(|(mount, local)| {
                    arg.strip_prefix(mount.as_str())
                        .map(|rest| format!("{}{rest}", local.display()))
                })
                .unwrap_or_else(|| arg.clone())
        };
        let mapped = if previous == "--report-file" {
            // The container's termination message file, read back by
            // `kubelet_stand_in`.
            report_file(scratch, namespace, job.metadata.name.as_deref().unwrap())
                .display()
                .to_string()
        } else {
            mapped
        };
        previous = arg.clone();
        args.push(mapped);
    }
    tokio::process::Command::new(wasmover_tests::wasmover_bin())
        .arg("agent")
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Where `run_agent_job` lets an agent write its termination message.
fn report_file(scratch: &Path, namespace: &str, job: &str) -> PathBuf {
    scratch.join(format!("{namespace}-{job}-termination-log"))
}

/// What the kubelet would leave of an agent Job's Pod after the agent
/// exited 0: a Pod with the Job's label, its termination message in the
/// container's status.
async fn kubelet_stand_in(client: &Client, namespace: &str, job: &str, scratch: &Path) {
    let message = std::fs::read_to_string(report_file(scratch, namespace, job))
        .expect("the agent wrote its report (--report-file)");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = format!("{job}-agent");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"wasmover.dev/agent": job}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "agent", "image": "wasmover"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "phase": "Succeeded",
        "containerStatuses": [{
            "name": "agent", "image": "wasmover", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {
                "exitCode": 0, "reason": "Completed", "message": message,
                "startedAt": now, "finishedAt": now,
            }},
        }],
    }});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// Waits for an agent process and requires it to have succeeded.
async fn agent_succeeded(child: tokio::process::Child, role: &str) -> String {
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the {role} agent did not finish in 2 minutes"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the {role} agent failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_in_the_source_directory_reaches_the_destination_directory() {
    replicate_through_the_cluster(false).await;
}

/// The same with `volumeMode: Block` PVCs: image files stand in for the
/// devices the agents get, and a directory for the journal's PVC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_mode_pvc_reaches_the_destination_device() {
    replicate_through_the_cluster(true).await;
}

/// A ReplicationDestination and a ReplicationSource in two namespaces,
/// with their agent Jobs run as local processes.
async fn replicate_through_the_cluster(block: bool) {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    let operator = Operator::start(&server, None).await;
    let scratch = tempfile::tempdir().unwrap();
    let (src, dst) = (scratch.path().join("src"), scratch.path().join("dst"));
    let journal = scratch.path().join("journal");
    let hashes = scratch.path().join("hashes");
    std::fs::create_dir(&hashes).unwrap();
    if block {
        std::fs::write(&src, wasmover_tests::bytes(3 << 20, 9)).unwrap();
        std::fs::File::create(&dst).unwrap();
        std::fs::create_dir(&journal).unwrap();
    } else {
        wasmover_tests::make_tree(&src, 3 << 20);
        std::fs::create_dir(&dst).unwrap();
    }
    let volume_mode = if block { "Block" } else { "Filesystem" };
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };

    // Two namespaces stand for two clusters: the destination first.
    namespace(&client, "dst").await;
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), "dst");
    create(
        &destinations,
        "db",
        json!({
            "capacity": "1Gi",
            "trigger": {"manual": "1"},
            "mover": {"parameters": {"block-size": "4096", "volume-mode": volume_mode}},
        }),
    )
    .await;
    let dst_jobs: Api<Job> = Api::namespaced(client.clone(), "dst");
    eventually("the receiving Job exists", || async {
        dst_jobs.get_opt("db-blocksync-dst").await.unwrap()
    })
    .await;
    let job = dst_jobs.get("db-blocksync-dst").await.unwrap();
    let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
    let devices: Vec<_> = container.volume_devices.iter().flatten().collect();
    assert_eq!(devices.len(), usize::from(block), "{devices:?}");
    let receiver = run_agent_job(
        &client,
        "dst",
        "db-blocksync-dst",
        &[("db-dest", &dst), ("db-blocksync-journal", &journal)],
        scratch.path(),
        port,
    )
    .await;

    // The source: its PVC, the key copied from the destination (as with
    // VolSync's rsync-tls), and the destination's Service as the address.
    namespace(&client, "src").await;
    let key = Api::<Secret>::namespaced(client.clone(), "dst")
        .get("db-blocksync-key")
        .await
        .unwrap();
    let copy: Secret = serde_json::from_value(json!({
        "metadata": {"name": "app-blocksync-key"},
        "data": key.data,
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "src")
        .create(&PostParams::default(), &copy)
        .await
        .unwrap();
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeMode": volume_mode,
        },
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "src")
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
    let sources: Api<ReplicationSource> = Api::namespaced(client.clone(), "src");
    create(
        &sources,
        "app",
        json!({
            "sourcePVC": "data",
            "trigger": {"manual": "1"},
            "mover": {"parameters": {
                "address": "db-blocksync.dst.svc",
                "block-size": "4096",
                "hashes-capacity": "64Mi",
            }},
        }),
    )
    .await;
    let src_jobs: Api<Job> = Api::namespaced(client.clone(), "src");
    eventually("the sending Job exists", || async {
        src_jobs.get_opt("app-blocksync-src").await.unwrap()
    })
    .await;
    // A hash is kept only for a file that changed 2 s before it is read.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let sender = run_agent_job(
        &client,
        "src",
        "app-blocksync-src",
        &[("data", &src), ("app-blocksync-hashes", &hashes)],
        scratch.path(),
        port,
    )
    .await;

    let sent = agent_succeeded(sender, "sending").await;
    agent_succeeded(receiver, "receiving").await;
    kubelet_stand_in(&client, "src", "app-blocksync-src", scratch.path()).await;
    kubelet_stand_in(&client, "dst", "db-blocksync-dst", scratch.path()).await;
    job_controller_stand_in(&src_jobs, "app-blocksync-src").await;
    job_controller_stand_in(&dst_jobs, "db-blocksync-dst").await;
    if block {
        assert!(std::fs::read(&src).unwrap() == std::fs::read(&dst).unwrap());
        let left: Vec<_> = std::fs::read_dir(&journal).unwrap().collect();
        assert!(
            left.is_empty(),
            "a finished patch leaves no journal: {left:?}"
        );
        // A block volume's digest reads it whole: no PVC for hashes.
        assert_eq!(std::fs::read_dir(&hashes).unwrap().count(), 0);
    } else {
        wasmover_tests::assert_same_tree(&src, &dst);
        // The sending agent kept one hash per file on its PVC (with the
        // store's magic, count and checksum).
        let files = wasmover_tests::snapshot(&src)
            .values()
            .filter(|n| matches!(n, wasmover_tests::Node::File(..)))
            .count() as u64;
        let kept = std::fs::metadata(hashes.join("source")).map(|m| m.len());
        assert_eq!(kept.ok(), Some(5 + 64 * files + 8 + 32));
    }

    let status = eventually("the destination completes", || async {
        let status = destinations.get("db").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("1")).then_some(status)
    })
    .await;
    assert_eq!(
        status.latest_image.map(|i| i.name).as_deref(),
        Some("db-dest")
    );
    // Both statuses carry the digest of the source tree, verified; the
    // agents' reports came through their Pods' termination messages.
    let digest = wasmover_host::Volume::open(&src, wasmover_host::Access::ReadOnly)
        .unwrap()
        .digest()
        .unwrap()
        .root;
    assert_eq!(
        (
            status.sync.last_sync_digest.as_deref(),
            status.sync.last_sync_verified
        ),
        (Some(digest.as_str()), Some(true))
    );
    let status = eventually("the source completes", || async {
        let status = sources.get("app").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("1")).then_some(status)
    })
    .await;
    assert_eq!(
        (
            status.sync.last_sync_digest.as_deref(),
            status.sync.last_sync_verified
        ),
        (Some(digest.as_str()), Some(true))
    );
    assert!(
        status.sync.bytes_transferred.is_some_and(|b| b > 3 << 20),
        "{:?}",
        status.sync
    );
    assert!(
        status.sync.files_transferred.is_some_and(|f| f > 0)
            && status.sync.files_transferred == status.sync.files_to_transfer,
        "{:?}",
        status.sync
    );
    assert!(
        sent.contains("sent"),
        "the sender reports what it sent: {sent}"
    );
    operator.task.abort();
}
