//! wasmover on a real node: the chart installed by Helm, the operator
//! running as a Pod, movers running as real Jobs on real PVCs and
//! VolumeSnapshots of the project's CSI driver, and the data read back
//! from Pods.
//!
//! `main.rs` holds the suite and its steps; a story with its own feature
//! (a CLI, another CR family) has a module of its own.
//!
//! One cluster serves the whole suite (it takes half a minute to start and
//! as long to stop); each step says what it checks, and a failure names it.

mod kubectl;
mod progress;
mod volsync;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, Resource};
use serde_json::json;
use wasmover_operator::controller::Replication;
use wasmover_operator::crd::{Endpoint, ImageRef, ReplicationDestination, ReplicationSource};
use wasmover_tests::cluster::{condition_reason, create, eventually_within, namespace};
use wasmover_tests::node::{Image, Node, TREE_LISTING, busybox, claim};

/// The chart's release and namespace.
const RELEASE: &str = "wasmover";
const SYSTEM: &str = "wasmover-system";
/// The label every object a mover creates carries (its owner's name).
const OWNER_NAME: &str = "wasmover.dev/owner-name";
/// How long one synchronization may take here.
const SYNC: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: starts a kubelet, containerd and a CSI driver (scripts/test runs it as root)"]
async fn replication_between_namespaces_on_a_real_node() {
    let image = Image::built();
    let started = Instant::now();
    let node = Node::start(&[&image.archive]);
    eprintln!("cluster started in {:.1?}", started.elapsed());
    let suite = Suite {
        client: node.client().await,
        busybox: node.env("BUSYBOX_IMAGE").to_owned(),
        node: &node,
    };

    // VolSync's CRDs before the operator, which looks for them at start.
    wasmover_tests::volsync::install_volsync_crds(&suite.client).await;
    let started = Instant::now();
    suite.install(&image, &[]);
    eprintln!(
        "helm install to operator Ready in {:.1?}",
        started.elapsed()
    );

    // Direct source, Snapshot destination; then only the change moves,
    // with the operator's Pod killed while it runs.
    let pair = suite
        .pair("direct", CopyMethods::new("Direct", "Snapshot"))
        .await;
    pair.sync("1").await;
    suite.copy_key_as_documented(&pair).await;
    suite.write(&pair.src, "data", "echo changed >d/f7").await;
    pair.trigger("2").await;
    suite.kill_operator_while(&pair).await;
    let second = pair.wait("2").await;
    let total = second.bytes_total.unwrap_or_default();
    let moved = second.bytes_transferred.unwrap_or(u64::MAX);
    assert!(
        moved * 20 < total,
        "the second sync moves only the change: {moved} of {total} bytes"
    );
    pair.compare("2").await;

    // Live progress in both statuses while a paced synchronization runs.
    let started = Instant::now();
    progress::story(&suite, &pair).await;
    eprintln!("live progress story in {:.1?}", started.elapsed());

    // Clone source to a Direct destination (the image is the PVC itself),
    // and Snapshot source to a Clone-free Snapshot destination.
    let pair = suite
        .pair("clone", CopyMethods::new("Clone", "Direct"))
        .await;
    pair.sync("1").await;
    let pair = suite
        .pair("snap", CopyMethods::new("Snapshot", "Snapshot"))
        .await;
    pair.sync("1").await;
    pair.delete().await;

    // A scheduled source, a destination receiving continuously.
    let pair = suite
        .pair("sched", CopyMethods::new("Direct", "Snapshot"))
        .await;
    pair.scheduled("*/1 * * * *").await;

    // `kubectl wasmover` between two contexts, and a migration.
    let started = Instant::now();
    kubectl::story(&suite).await;
    eprintln!("kubectl wasmover story in {:.1?}", started.elapsed());

    // VolSync's own CRs with provider wasmover, beside wasmover's.
    let started = Instant::now();
    volsync::story(&suite).await;
    eprintln!("VolSync CRs story in {:.1?}", started.elapsed());

    // Failures surface with the real reason.
    suite.failures(&image).await;

    let started = Instant::now();
    suite
        .node
        .helm(&["uninstall", RELEASE, "--namespace", SYSTEM, "--wait"]);
    eprintln!("helm uninstall in {:.1?}", started.elapsed());
    suite.uninstalled().await;
}

/// The copy methods of a pair.
struct CopyMethods {
    source: &'static str,
    destination: &'static str,
}

impl CopyMethods {
    fn new(source: &'static str, destination: &'static str) -> Self {
        Self {
            source,
            destination,
        }
    }
}

/// The cluster with the chart installed.
struct Suite<'a> {
    node: &'a Node,
    client: Client,
    busybox: String,
}

impl Suite<'_> {
    /// Installs the chart with the operator image `image` and waits for the
    /// operator to be Ready. The node has no kube-proxy: the operator runs
    /// in the node's network and reaches the API server on loopback.
    fn install(&self, image: &Image, more: &[&str]) {
        let repository = format!("image.repository={}", image.repository);
        let digest = format!("image.digest={}", image.digest);
        let metrics = format!("metrics.port={}", free_port());
        let api_port = self.node.env("APISERVER_PORT");
        let env = json!([
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": api_port},
        ]);
        let extra_env = format!("extraEnv={env}");
        let mut args = vec![
            "upgrade",
            "--install",
            RELEASE,
            "charts/wasmover",
            "--namespace",
            SYSTEM,
            "--create-namespace",
            "--wait",
            "--timeout",
            "3m",
            "--set",
            &repository,
            "--set",
            &digest,
            "--set",
            "hostNetwork=true",
            "--set",
            &metrics,
            "--set-json",
            &extra_env,
        ];
        args.extend(more);
        self.node.helm(&args);
    }

    /// Two namespaces `NAME-src` and `NAME-dst` with a source PVC full of
    /// files, a ReplicationDestination `db` and a ReplicationSource `app`
    /// with `methods`, both triggered manually.
    async fn pair(&self, name: &str, methods: CopyMethods) -> Pair {
        let (src, dst) = (format!("{name}-src"), format!("{name}-dst"));
        namespace(&self.client, &src).await;
        namespace(&self.client, &dst).await;
        claim(&self.client, &src, "data", "1Gi").await;
        self.write(
            &src,
            "data",
            "mkdir -p d/e && dd if=/dev/urandom of=d/big bs=1M count=16 2>/dev/null && \
             for i in $(seq 1 40); do echo $i >d/f$i; done && ln -s f1 d/link && \
             chmod 755 d/f2 && echo nested >d/e/n",
        )
        .await;
        Pair {
            client: self.client.clone(),
            busybox: self.busybox.clone(),
            src,
            dst,
            methods,
        }
    }

    /// Runs `script` in a busybox Pod with `claim` of `namespace` at /data.
    async fn write(&self, namespace: &str, claim: &str, script: &str) {
        busybox(
            &self.client,
            &self.busybox,
            namespace,
            claim,
            &format!("cd /data && {script}"),
        )
        .await;
    }

    /// The key handoff of docs/operator.md ("Pairing a source with a
    /// destination"), its commands run by the cluster's kubectl, one
    /// context standing in for both: waits for `EndpointReady`, prints
    /// `status.endpoint`, copies the key Secret it names through a pipe
    /// into the source's namespace. The copy holds the destination's key.
    async fn copy_key_as_documented(&self, pair: &Pair) {
        const DOCUMENTED: &str = r#"set -eu
kubectl() { "$KUBECTL" "$@"; }
kubectl -n "$DST" wait wrd/db --for=condition=EndpointReady --timeout=5m >&2
kubectl -n "$DST" get wrd/db -o jsonpath='{.status.endpoint}{"\n"}'
secret=$(kubectl -n "$DST" get wrd/db -o jsonpath='{.status.endpoint.keySecret}')
kubectl -n "$DST" get secret "$secret" -o jsonpath='{.data.psk}' | base64 -d |
  kubectl -n "$SRC" create secret generic documented-key --from-file=psk=/dev/stdin >&2
"#;
        let output = std::process::Command::new("sh")
            .args(["-c", DOCUMENTED])
            .env("KUBECTL", self.node.env("KUBECTL"))
            .env("KUBECONFIG", self.node.kubeconfig())
            .env("DST", &pair.dst)
            .env("SRC", &pair.src)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert!(
            output.status.success(),
            "the documented handoff failed:\n{stdout}\n{stderr}"
        );
        let printed: Endpoint = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("status.endpoint is JSON: {e}: {stdout}"));
        assert_eq!(printed, pair.endpoint().await);
        let psk = |namespace: &str, name: &str| {
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let name = name.to_owned();
            async move { secrets.get(&name).await.unwrap().data.unwrap()["psk"].clone() }
        };
        assert_eq!(
            psk(&pair.src, "documented-key").await,
            psk(&pair.dst, "db-blocksync-key").await,
            "the copy holds the destination's key"
        );
        Api::<Secret>::namespaced(self.client.clone(), &pair.src)
            .delete("documented-key", &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Starts `pair`'s synchronization, deletes the operator's Pod while
    /// it runs; the Deployment starts another, which finishes it.
    async fn kill_operator_while(&self, pair: &Pair) {
        let destinations: Api<ReplicationDestination> =
            Api::namespaced(self.client.clone(), &pair.dst);
        eventually_within("the destination runs", SYNC, || async {
            let status = destinations.get("db").await.unwrap().sync_status();
            let (reason, _) = condition_reason(Some(&status))?;
            (reason == "SyncInProgress").then_some(())
        })
        .await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), SYSTEM);
        let operator = ListParams::default().labels("app.kubernetes.io/name=wasmover");
        let before = pods.list(&operator).await.unwrap();
        assert!(!before.items.is_empty(), "the operator runs as a Pod");
        for pod in &before.items {
            let name = pod.metadata.name.as_deref().unwrap();
            pods.delete(name, &DeleteParams::default().grace_period(0))
                .await
                .unwrap();
        }
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), SYSTEM);
        eventually_within("a new operator Pod is ready", SYNC, || async {
            let ready = deployments
                .get(RELEASE)
                .await
                .ok()?
                .status?
                .ready_replicas?;
            let now = pods.list(&operator).await.ok()?;
            let replaced = now.items.iter().all(|p| {
                !before
                    .items
                    .iter()
                    .any(|b| b.metadata.uid == p.metadata.uid)
            });
            (ready >= 1 && replaced).then_some(())
        })
        .await;
    }

    /// Failures surface as conditions with the real reason: agents whose
    /// image cannot be pulled (the operator re-installed to hand them one
    /// that exists nowhere), and a destination whose StorageClass does not
    /// exist, so its PVC stays Pending.
    async fn failures(&self, image: &Image) {
        let missing = format!("wasmover.test/missing@sha256:{}", "0".repeat(64));
        self.install(image, &["--set", &format!("agentImage={missing}")]);
        for (name, class) in [("nopull", None), ("nobind", Some("no-such-class"))] {
            namespace(&self.client, name).await;
            let mut spec = json!({"capacity": "1Gi", "trigger": {"manual": "1"}});
            if let Some(class) = class {
                spec["storageClassName"] = class.into();
            }
            create(
                &Api::<ReplicationDestination>::namespaced(self.client.clone(), name),
                "db",
                spec,
            )
            .await;
        }
        let stuck = |namespace: &'static str, reasons: &'static [&'static str]| async move {
            let destinations: Api<ReplicationDestination> =
                Api::namespaced(self.client.clone(), namespace);
            let what = format!("{namespace}/db reports one of {reasons:?}");
            let found = eventually_within(&what, SYNC, || async {
                let status = destinations.get("db").await.unwrap().sync_status();
                condition_reason(Some(&status)).filter(|(r, _)| reasons.contains(&r.as_str()))
            })
            .await;
            destinations
                .delete("db", &DeleteParams::default())
                .await
                .unwrap();
            found.1
        };
        let message = stuck("nopull", &["ErrImagePull", "ImagePullBackOff"]).await;
        assert!(
            message.starts_with("agent Pod db-blocksync-dst-") && message.contains(&missing),
            "the condition names the Pod and the image: {message}"
        );
        let message = stuck("nobind", &["ClaimPending"]).await;
        assert!(
            message.starts_with("PVC db-dest has been Pending for "),
            "{message}"
        );
        assert!(
            message.ends_with(
                "ProvisioningFailed: storageclass.storage.k8s.io \"no-such-class\" not found"
            ),
            "the condition carries the provisioner's reason: {message}"
        );
    }

    /// After `helm uninstall`: no operator, no RBAC of the release; the
    /// CRDs (and so the users' objects) stay, as docs/install.md says.
    async fn uninstalled(&self) {
        let release =
            ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}"));
        let left = [
            names::<Deployment>(&self.client, Some(SYSTEM), &release).await,
            names::<ServiceAccount>(&self.client, Some(SYSTEM), &release).await,
            names::<ConfigMap>(&self.client, Some(SYSTEM), &release).await,
            names::<Service>(&self.client, Some(SYSTEM), &release).await,
            names::<Role>(&self.client, Some(SYSTEM), &release).await,
            names::<RoleBinding>(&self.client, Some(SYSTEM), &release).await,
            names::<ClusterRole>(&self.client, None, &release).await,
            names::<ClusterRoleBinding>(&self.client, None, &release).await,
        ]
        .concat();
        assert!(left.is_empty(), "helm uninstall left {left:?}");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), SYSTEM);
        eventually_within("the operator Pods are gone", SYNC, || async {
            pods.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
                .then_some(())
        })
        .await;
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(self.client.clone());
        for crd in [
            "replicationsources.wasmover.dev",
            "replicationdestinations.wasmover.dev",
        ] {
            assert!(crds.get_opt(crd).await.unwrap().is_some(), "{crd} is kept");
        }
    }
}

/// A source and a destination in two namespaces.
struct Pair {
    client: Client,
    busybox: String,
    src: String,
    dst: String,
    methods: CopyMethods,
}

impl Pair {
    fn destinations(&self) -> Api<ReplicationDestination> {
        Api::namespaced(self.client.clone(), &self.dst)
    }

    fn sources(&self) -> Api<ReplicationSource> {
        Api::namespaced(self.client.clone(), &self.src)
    }

    /// The first synchronization, triggered by hand: creates both objects,
    /// waits for both, and compares the replica with the source.
    async fn sync(&self, trigger: &str) {
        let manual = json!({"manual": trigger});
        self.create(manual.clone(), manual).await;
        self.wait(trigger).await;
        self.compare(trigger).await;
    }

    /// Creates the destination with `dst_trigger` (`null`: it receives
    /// continuously, as VolSync's do) and, paired by what its
    /// `status.endpoint` says (the key Secret copied, as with VolSync's
    /// rsync-tls, the address and port as parameters), the source with
    /// `src_trigger`.
    async fn create(&self, dst_trigger: serde_json::Value, src_trigger: serde_json::Value) {
        let mut spec = json!({"capacity": "1Gi", "copyMethod": self.methods.destination});
        if !dst_trigger.is_null() {
            spec["trigger"] = dst_trigger;
        }
        create(&self.destinations(), "db", spec).await;
        let endpoint = self.endpoint().await;
        let (Some(address), Some(port), Some(key_secret)) =
            (endpoint.address, endpoint.port, endpoint.key_secret)
        else {
            unreachable!("Pair::endpoint waits for all three")
        };
        let key = Api::<Secret>::namespaced(self.client.clone(), &self.dst)
            .get(&key_secret)
            .await
            .unwrap();
        let copy: Secret = serde_json::from_value(json!({
            "metadata": {"name": "app-blocksync-key"},
            "data": key.data,
        }))
        .unwrap();
        Api::<Secret>::namespaced(self.client.clone(), &self.src)
            .create(&PostParams::default(), &copy)
            .await
            .unwrap();
        create(
            &self.sources(),
            "app",
            json!({
                "sourcePVC": "data",
                "copyMethod": self.methods.source,
                "trigger": src_trigger,
                "mover": {"parameters": {
                    "address": address,
                    "port": port.to_string(),
                    "key-secret": "app-blocksync-key",
                }},
            }),
        )
        .await;
    }

    /// A source on `schedule` and a destination that receives
    /// continuously: the first scheduled run completes, the next is
    /// planned, and the replica equals the source.
    async fn scheduled(&self, schedule: &str) {
        self.create(serde_json::Value::Null, json!({"schedule": schedule}))
            .await;
        let status = status_when(&self.sources(), "app", "the first scheduled sync", |s| {
            s.last_sync_time.is_some()
        })
        .await;
        let (last, next) = (status.last_sync_time.unwrap(), status.next_sync_time);
        assert!(
            next.as_ref().is_some_and(|next| next.0 > last.0),
            "the next run is planned after the last: {next:?} > {last:?}"
        );
        // The destination's latest image is this run's (its next receive
        // waits for the next scheduled run).
        eventually_within("the destination completes", SYNC, || async {
            let status = self.destinations().get("db").await.unwrap().sync_status();
            status.last_sync_time.map(|_| ())
        })
        .await;
        self.compare("scheduled").await;
    }

    /// Triggers another synchronization of both.
    async fn trigger(&self, trigger: &str) {
        let patch = Patch::Merge(json!({"spec": {"trigger": {"manual": trigger}}}));
        self.destinations()
            .patch("db", &PatchParams::default(), &patch)
            .await
            .unwrap();
        self.sources()
            .patch("app", &PatchParams::default(), &patch)
            .await
            .unwrap();
    }

    /// Where the source reaches the destination's agent, as the
    /// destination's `status.endpoint` says once complete: its Service's
    /// cluster IP (the node runs kube-proxy; it has no cluster DNS), port
    /// and key Secret, which are checked against the Service.
    async fn endpoint(&self) -> Endpoint {
        let endpoint = eventually_within("the destination reports its endpoint", SYNC, || async {
            let status = self.destinations().get("db").await.unwrap().status?;
            let endpoint = status.endpoint?;
            let complete = endpoint.address.is_some()
                && endpoint.port.is_some()
                && endpoint.key_secret.is_some();
            complete.then_some(endpoint)
        })
        .await;
        let service = Api::<Service>::namespaced(self.client.clone(), &self.dst)
            .get("db-blocksync")
            .await
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(endpoint.address, service.cluster_ip, "{service:?}");
        assert_eq!(endpoint.port, Some(service.ports.unwrap()[0].port));
        assert_eq!(endpoint.key_secret.as_deref(), Some("db-blocksync-key"));
        endpoint
    }

    /// Waits until both objects completed the synchronization of
    /// `trigger`; returns the source's status.
    async fn wait(&self, trigger: &str) -> wasmover_operator::crd::SyncStatus {
        for (kind, status) in [
            (
                "destination",
                self.completed(&self.destinations(), "db", trigger).await,
            ),
            (
                "source",
                self.completed(&self.sources(), "app", trigger).await,
            ),
        ] {
            assert_eq!(
                status.latest_mover_status.map(|m| m.result).as_deref(),
                Some("Successful"),
                "{kind}"
            );
        }
        self.sources().get("app").await.unwrap().sync_status()
    }

    async fn completed<K: Replication>(
        &self,
        api: &Api<K>,
        name: &str,
        trigger: &str,
    ) -> wasmover_operator::crd::SyncStatus {
        let what = format!("sync {trigger} completes");
        status_when(api, name, &what, |s| {
            s.last_manual_sync.as_deref() == Some(trigger)
        })
        .await
    }

    /// Reads the destination's latest image from a Pod (a PVC restored
    /// from it, for a snapshot) and compares it with the source PVC.
    async fn compare(&self, trigger: &str) {
        let image = self
            .destinations()
            .get("db")
            .await
            .unwrap()
            .status
            .and_then(|s| s.latest_image)
            .expect("the destination names its latest image");
        self.compare_image(&image, trigger).await;
    }

    /// Reads `image` in the destination's namespace from a Pod (a PVC
    /// restored from it, for a snapshot) and compares it with the source
    /// PVC.
    async fn compare_image(&self, image: &ImageRef, trigger: &str) {
        let replica = match image.kind.as_str() {
            "VolumeSnapshot" => {
                let restored = format!("restored-{trigger}");
                let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                    "metadata": {"name": restored},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                        "dataSource": {
                            "apiGroup": "snapshot.storage.k8s.io",
                            "kind": "VolumeSnapshot",
                            "name": image.name,
                        },
                    },
                }))
                .unwrap();
                Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.dst)
                    .create(&PostParams::default(), &pvc)
                    .await
                    .unwrap();
                restored
            }
            "PersistentVolumeClaim" => image.name.clone(),
            other => panic!("unexpected image kind {other}"),
        };
        let source = busybox(&self.client, &self.busybox, &self.src, "data", TREE_LISTING).await;
        let copy = busybox(
            &self.client,
            &self.busybox,
            &self.dst,
            &replica,
            TREE_LISTING,
        )
        .await;
        assert!(source.contains("./d/big"), "a listing: {source}");
        assert_eq!(copy, source, "the replica ({replica}) equals the source");
    }

    /// Deletes both objects; nothing they made is left, but the user's PVC.
    async fn delete(&self) {
        self.sources()
            .delete("app", &DeleteParams::default())
            .await
            .unwrap();
        self.destinations()
            .delete("db", &DeleteParams::default())
            .await
            .unwrap();
        let snapshots = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshot",
        ));
        for (namespace, owner) in [(&self.src, "app"), (&self.dst, "db")] {
            let owned = ListParams::default().labels(&format!("{OWNER_NAME}={owner}"));
            eventually_within(
                &format!("nothing of {namespace}/{owner} is left"),
                SYNC,
                || async {
                    let left = [
                        names::<Job>(&self.client, Some(namespace), &owned).await,
                        names::<Service>(&self.client, Some(namespace), &owned).await,
                        names::<Secret>(&self.client, Some(namespace), &owned).await,
                        names::<PersistentVolumeClaim>(&self.client, Some(namespace), &owned).await,
                        listed(&self.client, Some(namespace), &snapshots, &owned).await,
                    ]
                    .concat();
                    left.is_empty().then_some(())
                },
            )
            .await;
        }
        let user = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.src);
        assert!(user.get_opt("data").await.unwrap().is_some());
    }
}

/// Polls object `name` until `done` holds of its status; returns that
/// status, or panics naming `what` and the object's conditions.
async fn status_when<K: Replication>(
    api: &Api<K>,
    name: &str,
    what: &str,
    done: impl Fn(&wasmover_operator::crd::SyncStatus) -> bool,
) -> wasmover_operator::crd::SyncStatus {
    let deadline = Instant::now() + SYNC;
    loop {
        let status = api.get(name).await.unwrap().sync_status();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what} ({} {name}); conditions: {:?}",
            K::kind(&()),
            status.conditions
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The names of the objects of `resource` that `params` selects, in
/// `namespace` (`None`: cluster-scoped or in every namespace).
async fn listed(
    client: &Client,
    namespace: Option<&str>,
    resource: &ApiResource,
    params: &ListParams,
) -> Vec<String> {
    let api = match namespace {
        Some(namespace) => {
            Api::<DynamicObject>::namespaced_with(client.clone(), namespace, resource)
        }
        None => Api::<DynamicObject>::all_with(client.clone(), resource),
    };
    let list = api.list(params).await.unwrap();
    list.items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect()
}

/// [`listed`] for a kind of k8s-openapi.
async fn names<K: Resource<DynamicType = ()>>(
    client: &Client,
    namespace: Option<&str>,
    params: &ListParams,
) -> Vec<String> {
    listed(client, namespace, &ApiResource::erase::<K>(&()), params).await
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}
