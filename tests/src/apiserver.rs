//! A real etcd + kube-apiserver on loopback, built and started by
//! `tests/apiserver/` (no mocks of the API), and the CRDs a test installs
//! into it.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use wasmover_operator::crd::{ReplicationDestination, ReplicationSource};

use crate::cluster::eventually;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apiserver")
}

/// A running etcd + kube-apiserver, stopped on drop.
pub struct ApiServer {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl ApiServer {
    /// Starts both on free ports, with their data in a temporary directory.
    pub fn start() -> Self {
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

    /// The admin kubeconfig (certificates embedded).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client configuration for the admin user.
    pub async fn config(&self) -> Config {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap()
    }

    /// A client as the admin user.
    pub async fn client(&self) -> Client {
        Client::try_from(self.config().await).unwrap()
    }

    /// Restarts the kube-apiserver (etcd keeps the data).
    pub fn restart(&self) {
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

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("stop.sh"))
            .arg(self.dir.path())
            .status();
    }
}

/// Installs wasmover's CRDs and waits until both are served.
pub async fn install_crds(client: &Client) {
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
pub fn volume_snapshot_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
    ))
}

/// A minimal VolumeSnapshot CRD (the CSI external-snapshotter's kind, its
/// schema left open), so that movers can request snapshots; the test plays
/// the snapshot controller by setting `status.readyToUse`.
pub async fn install_volume_snapshot_crd(client: &Client) {
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
