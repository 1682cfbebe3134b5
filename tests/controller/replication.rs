//! Data moves through the cluster: a ReplicationSource and a
//! ReplicationDestination whose agent Jobs the test runs as local
//! processes, playing the Job controller and the kubelet.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use wasmover_oci::{Credentials, ModuleStore};
use wasmover_operator::controller::RunOptions;
use wasmover_operator::crd::{ReplicationDestination, ReplicationSource};
use wasmover_operator::modules::{Oci, OciModules};
use wasmover_tests::apiserver::{ApiServer, install_crds};
use wasmover_tests::cluster::{create, eventually, job_controller_stand_in, namespace};
use wasmover_tests::operator::Operator;
use wasmover_tests::registry::TestRegistry;

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
    let job_name = job.metadata.name.clone().unwrap();
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
        } else if volume.empty_dir.is_some() {
            let dir = scratch.join(format!("{namespace}-{job_name}-{}", volume.name));
            std::fs::create_dir_all(&dir).unwrap();
            dir
        } else {
            panic!(
                "volume {} is neither a PVC, a Secret nor an emptyDir",
                volume.name
            );
        };
        mounts.push((mount_path, local));
    }
    // A path in the container is a path under what stands in for its mount.
    let local = |arg: &str| {
        mounts
            .iter()
            .find_map(|(mount, local)| {
                arg.strip_prefix(mount.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                    .map(|rest| format!("{}{rest}", local.display()))
            })
            .unwrap_or_else(|| arg.to_owned())
    };
    let env: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .map(|e| {
            (
                e.name.clone(),
                local(e.value.as_deref().unwrap_or_default()),
            )
        })
        .collect();
    let mut args = Vec::new();
    let mut previous = String::new();
    for arg in container.args.iter().flatten() {
        let mapped = if previous == "--listen" || previous == "--connect" {
            format!("127.0.0.1:{port}")
        } else {
            local(arg)
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
        .envs(env)
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
    let template = Api::<Job>::namespaced(client.clone(), namespace)
        .get(job)
        .await
        .unwrap()
        .spec
        .unwrap()
        .template;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": template.metadata.unwrap().labels},
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

// A filesystem PVC between namespaces with real Pods and CSI volumes:
// tests/e2e.rs. What a real node here cannot give stays here: block-mode
// PVCs and a module pulled by the agents from an authenticating registry.

/// `volumeMode: Block` PVCs: image files stand in for the devices the
/// agents get, and a directory for the journal's PVC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_mode_pvc_reaches_the_destination_device() {
    replicate_through_the_cluster(true, false).await;
}

/// Both CRs select, by OCI digest, the `stamped` test mover: blocksync's
/// control plane with a data plane that leaves a `STAMPED` file. The
/// agents pull it from the registry, check its digest and run it: the
/// destination holds the stamp, and the status and both agents' reports
/// name the module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_a_cr_selects_by_digest_runs_in_both_agents() {
    replicate_through_the_cluster(false, true).await;
}

/// A ReplicationDestination and a ReplicationSource in two namespaces,
/// with their agent Jobs run as local processes; with `stamped`, both
/// select the `stamped` mover from a registry.
async fn replicate_through_the_cluster(block: bool, stamped: bool) {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    // Kept to the end: the agents pull from it, with the CRs' pull secret.
    let registry = stamped.then(|| TestRegistry::start_with_auth("puller", "s3cret"));
    let docker_config = registry.as_ref().map(|registry| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode("puller:s3cret");
        json!({"auths": {registry.addr(): {"auth": auth}}}).to_string()
    });
    let store = tempfile::tempdir().unwrap();
    let (operator, module) = if let Some(registry) = &registry {
        let engine = wasmover_tests::engine();
        let credentials = docker_config.as_deref().unwrap().as_bytes();
        let pusher = Oci::new(
            ModuleStore::new(store.path().join("pusher")),
            false,
            Credentials::from_json(credentials, "test").unwrap(),
        );
        let tag = registry.reference("movers/stamped:v1");
        let manifest = pusher
            .push(
                &engine,
                &wasmover_tests::guest("stamped"),
                &tag.parse().unwrap(),
            )
            .await
            .unwrap();
        // The operator has no credentials of its own: it pulls with the
        // CRs' `modulePullSecret`, as the agents do.
        let oci = Oci::new(
            ModuleStore::new(store.path()),
            false,
            Credentials::default(),
        );
        let options = RunOptions {
            oci: Some(Arc::new(OciModules::new(engine, oci))),
            ..Operator::options()
        };
        let pinned = registry.reference(&format!("movers/stamped@{manifest}"));
        (Operator::start_with(&server, options).await, pinned)
    } else {
        (Operator::start(&server, None).await, String::new())
    };
    let scratch = tempfile::tempdir().unwrap();
    let (src, dst) = (scratch.path().join("src"), scratch.path().join("dst"));
    let journal = scratch.path().join("journal");
    let hashes = scratch.path().join("hashes");
    std::fs::create_dir(&hashes).unwrap();
    // What stands in for the destination's metadata PVC.
    let metadata = scratch.path().join("metadata");
    std::fs::create_dir(&metadata).unwrap();
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
    namespace(&client, "src").await;
    if let Some(config) = &docker_config {
        for ns in ["dst", "src"] {
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": "registry"},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": config},
            }))
            .unwrap();
            Api::<Secret>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
        }
    }
    // The mover section of both CRs, with `parameters`.
    let mover = |parameters: serde_json::Value| {
        let mut mover = json!({"module": module, "parameters": parameters});
        if docker_config.is_some() {
            mover["modulePullSecret"] = "registry".into();
        }
        mover
    };
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), "dst");
    create(
        &destinations,
        "db",
        json!({
            "capacity": "1Gi",
            "trigger": {"manual": "1"},
            "mover": mover(json!({"block-size": "4096", "volume-mode": volume_mode})),
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
        &[
            ("db-dest", &dst),
            ("db-blocksync-journal", &journal),
            ("db-wasmover-metadata", &metadata),
        ],
        scratch.path(),
        port,
    )
    .await;

    // The source: its PVC, the key copied from the destination (as with
    // VolSync's rsync-tls), and the destination's Service as the address.
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
            "mover": mover(json!({
                "address": "db-blocksync.dst.svc",
                "block-size": "4096",
                "hashes-capacity": "64Mi",
                "key-secret": "app-blocksync-key",
            })),
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
        if stamped {
            let stamp = std::fs::read_to_string(dst.join("STAMPED")).unwrap();
            assert!(stamp.starts_with("stamped "), "{stamp}");
            std::fs::remove_file(dst.join("STAMPED")).unwrap();
        } else {
            assert!(!dst.join("STAMPED").exists());
        }
        wasmover_tests::assert_same_tree(&src, &dst);
        // The receiving agent kept its state on the metadata PVC, nothing
        // in the replica: not a name more than the source has.
        let names = |dir: &Path| {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(&dst), names(&src));
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
    let digest = wasmover_tests::tree_digest(&src);
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
    // Which module ran: the one the CRs selected, in the status and in
    // both agents' reports.
    let ran = status.sync.module.clone().unwrap();
    assert!(
        ran.starts_with(if stamped { "stamped@" } else { "blocksync@" }),
        "{ran}"
    );
    let version = status.sync.module_version.clone().unwrap();
    assert!(
        version.starts_with("0.1.0, contract 0.3.0"),
        "the module says what it is: {version}"
    );
    for (namespace, job) in [("src", "app-blocksync-src"), ("dst", "db-blocksync-dst")] {
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(report_file(scratch.path(), namespace, job)).unwrap(),
        )
        .unwrap();
        assert_eq!(report["module"], ran.as_str(), "{job}: {report}");
    }
    operator.task.abort();
}
