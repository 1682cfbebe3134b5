//! VolSync's own CRDs, `volsync.backube/v1alpha1` ReplicationSource and
//! ReplicationDestination, from its pinned Go module
//! (`tests/volsync/install.sh`), installed with no VolSync controller
//! running: wasmover serves those with `spec.external.provider`
//! [`PROVIDER`](wasmover_operator::volsync::PROVIDER).

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, PostParams};
use wasmover_operator::volsync::{ReplicationDestination, ReplicationSource};

use crate::cluster::eventually;

/// The directory holding VolSync's two CRD files, fetched and cached by
/// `tests/volsync/install.sh` on first use.
pub fn crds_dir() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("volsync/install.sh");
    let out = Command::new(&script)
        .output()
        .expect("tests/volsync/install.sh runs");
    assert!(
        out.status.success(),
        "fetching VolSync's CRDs failed (tests/volsync/install.sh needs go and the Go module proxy):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("VOLSYNC_CRDS="))
        .expect("install.sh prints VOLSYNC_CRDS=");
    PathBuf::from(dir)
}

/// Installs VolSync's CRDs as VolSync ships them and waits until both
/// kinds are served.
pub async fn install_volsync_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in ["replicationsources", "replicationdestinations"] {
        let path = crds_dir().join(format!("volsync.backube_{kind}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let sources: Api<ReplicationSource> = Api::all(client.clone());
    let destinations: Api<ReplicationDestination> = Api::all(client.clone());
    eventually("VolSync's CRDs are served", || async {
        (sources.list(&Default::default()).await.is_ok()
            && destinations.list(&Default::default()).await.is_ok())
        .then_some(())
    })
    .await;
}
