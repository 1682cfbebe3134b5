//! A real single-node cluster (kubelet, containerd, the project's CSI
//! driver with snapshots) started by `tests/cluster/`, the wasmover image
//! imported into it, the chart installed by a Helm built from its Go
//! module, and busybox Pods that write and read volumes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::cluster::eventually_within;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a script of the repository; its stdout, or a panic with its stderr.
fn script(path: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(repository().join(path))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{path} runs: {e}"));
    assert!(
        out.status.success(),
        "{path} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `KEY=value` lines, as the install and start scripts print them.
fn assignments(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// The wasmover container image `cargo xtask image` wrote.
pub struct Image {
    /// `ghcr.io/wasmover/wasmover`.
    pub repository: String,
    /// `sha256:…` of its manifest.
    pub digest: String,
    /// The OCI layout as one tar, for `ctr images import`.
    pub archive: PathBuf,
}

impl Image {
    /// The image of this tree (`scripts/test` builds it before the tests).
    pub fn built() -> Self {
        let target = repository().join("target");
        let index = target.join("image/index.json");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index).unwrap_or_else(|e| {
                panic!("{}: {e}: run `cargo xtask image` first", index.display())
            }))
            .unwrap();
        let manifest = &index["manifests"][0];
        let name = manifest["annotations"]["io.containerd.image.name"]
            .as_str()
            .expect("the image names itself");
        let (repository, _) = name.rsplit_once(':').expect("the name has a tag");
        Self {
            repository: repository.to_owned(),
            digest: manifest["digest"].as_str().unwrap().to_owned(),
            archive: target.join("image.tar"),
        }
    }

    /// `repository@digest`: how Pods name it.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

/// A running cluster, stopped (and the host restored) on drop.
pub struct Node {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    env: BTreeMap<String, String>,
}

impl Node {
    /// Starts a cluster with `images` imported into its containerd, and
    /// kube-proxy, so that Pods reach Services (one such cluster per
    /// machine: kube-proxy's nftables table has a fixed name).
    pub fn start(images: &[&Path]) -> Self {
        let dir = tempfile::Builder::new().prefix("node.").tempdir().unwrap();
        let images = images
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        // Its own node name: another cluster may run on this machine.
        let node_name = format!("wasmover-e2e-{}", std::process::id());
        let started = std::panic::catch_unwind(|| {
            script(
                "tests/cluster/start.sh",
                &[dir.path().to_str().unwrap()],
                &[
                    ("IMAGES", &images),
                    ("NODE_NAME", &node_name),
                    ("WITH_KUBE_PROXY", "1"),
                ],
            )
        });
        let Ok(stdout) = started else {
            script(
                "tests/cluster/stop.sh",
                &[dir.path().to_str().unwrap()],
                &[],
            );
            panic!("the cluster did not start (see above)");
        };
        let kubeconfig = PathBuf::from(stdout.trim());
        let env = assignments(&std::fs::read_to_string(dir.path().join("env")).unwrap());
        Self {
            dir,
            kubeconfig,
            env,
        }
    }

    /// A setting the cluster wrote to its `env` file (`APISERVER_PORT`, …).
    pub fn env(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("tests/cluster/start.sh wrote no {key}"))
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client as the cluster admin.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }

    /// Runs `helm` (built by `tests/helm/install.sh`) against this cluster.
    pub fn helm(&self, args: &[&str]) -> String {
        let helm = assignments(&script("tests/helm/install.sh", &[], &[]))
            .remove("HELM")
            .expect("tests/helm/install.sh prints HELM=");
        let out = Command::new(&helm)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.path().join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.path().join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.path().join("helm/data"))
            .current_dir(repository())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let out = Command::new(repository().join("tests/cluster/stop.sh"))
            .arg(self.dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "tests/cluster/stop.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("tests/cluster/stop.sh: {e}"),
        }
    }
}

/// A PVC of `size` on the cluster's default StorageClass.
pub async fn claim(client: &Client, namespace: &str, name: &str, size: &str) {
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
}

/// Runs `script` in a busybox Pod with `claim` mounted at `/data`, waits
/// for it to succeed and returns what it wrote to `/dev/termination-log`;
/// the Pod is deleted after.
pub async fn busybox(
    client: &Client,
    image: &str,
    namespace: &str,
    claim: &str,
    script: &str,
) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = format!("busybox-{}", std::process::id() ^ rand_suffix());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "sh",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-euc", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let what = format!("busybox Pod {namespace}/{name} on {claim} ends");
    let pod = eventually_within(&what, Duration::from_secs(120), || async {
        let pod = pods.get(&name).await.unwrap();
        let phase = pod.status.as_ref()?.phase.as_deref()?;
        matches!(phase, "Succeeded" | "Failed").then_some(pod)
    })
    .await;
    let status = pod.status.unwrap();
    let terminated = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        terminated.exit_code,
        0,
        "busybox `{script}` failed: {}",
        terminated.message.unwrap_or_default()
    );
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    terminated.message.unwrap_or_default().trim().to_owned()
}

/// A listing of a volume's names, modes, sizes, mtimes and content
/// digests, as a busybox Pod writes it (to compare a source and its
/// replica; at most 4 KiB, a termination message's size). The volume's
/// root and `lost+found` are left out (the receiver keeps its state in
/// `.wasmover`, also left out).
pub const TREE_LISTING: &str = "cd /data && find . -mindepth 1 \\( -path ./lost+found -o -path ./.wasmover \\) -prune -o -print | LC_ALL=C sort | \
     while read -r p; do stat -c '%n %f %s %Y' \"$p\"; [ -f \"$p\" ] && md5sum <\"$p\" | cut -c1-8; true; done \
     >/dev/termination-log";

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}
