//! `kubectl wasmover` on the real node: the cluster's own kubectl finds the
//! plugin on PATH (a `kubectl-wasmover` symlink to the `wasmover` binary,
//! as `scripts/setup` installs it), and two kubeconfig contexts of the one
//! cluster, each with its own default namespace, play two clusters.
//!
//! `replication create`, `set-destination`, `set-source` and `sync` set up
//! and run a replication between the contexts (the plugin copies the key
//! and the address across them itself); the replica equals the source; a
//! second `sync` moves only the change; `status` reports it verified;
//! `delete` removes what the plugin made. `migration create` and `rsync`
//! move a local directory into a new PVC through the API server's
//! port-forward; `migration delete` keeps the PVC.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::Api;
use serde_json::json;
use wasmover_operator::crd::{ReplicationDestination, ReplicationSource};
use wasmover_tests::cluster::namespace;
use wasmover_tests::node::{busybox, claim};

use super::{CopyMethods, Pair, Suite};

/// The plugin's story; one replication and one migration.
pub(crate) async fn story(suite: &Suite<'_>) {
    let plugin = Plugin::new(suite);
    let (src, dst) = ("kc-src", "kc-dst");
    namespace(&suite.client, src).await;
    namespace(&suite.client, dst).await;
    claim(&suite.client, src, "data", "1Gi").await;
    suite
        .write(
            src,
            "data",
            "mkdir -p d/e && dd if=/dev/urandom of=d/big bs=1M count=8 2>/dev/null && \
             for i in $(seq 1 20); do echo $i >d/f$i; done && ln -s f1 d/link && echo nested >d/e/n",
        )
        .await;

    // Errors before anything is created: an unknown context, a source PVC
    // that is not there.
    plugin.ok(&["replication", "create", "kc"]);
    let unknown = plugin.fails(&[
        "replication",
        "set-source",
        "kc",
        "--context",
        "nowhere",
        "--pvc",
        "data",
    ]);
    assert!(
        unknown.contains("the kubeconfig has no context \"nowhere\" (it has: kc-src, kc-dst)"),
        "{unknown}"
    );
    plugin.ok(&[
        "replication",
        "set-source",
        "kc",
        "--context",
        "kc-src",
        "--pvc",
        "nodata",
    ]);
    plugin.ok(&[
        "replication",
        "set-destination",
        "kc",
        "--context",
        "kc-dst",
        "--object-name",
        "db",
        "--copy-method",
        "Snapshot",
    ]);
    let missing = plugin.fails(&["replication", "sync", "kc"]);
    assert!(
        missing.contains("PVC kc-src/nodata does not exist in context kc-src")
            && missing.contains("(rule source-pvc)"),
        "{missing}"
    );
    let none: Api<ReplicationDestination> = Api::namespaced(suite.client.clone(), dst);
    assert!(
        none.get_opt("db").await.unwrap().is_none(),
        "nothing was created"
    );

    // The replication, named as the suite's pairs name theirs so that the
    // pair's comparison reads it.
    plugin.ok(&[
        "replication",
        "set-source",
        "kc",
        "--context",
        "kc-src",
        "--pvc",
        "data",
        "--object-name",
        "app",
    ]);
    let synced = plugin.ok(&["replication", "sync", "kc"]);
    assert!(synced.starts_with("synchronized kc: "), "{synced}");
    assert!(synced.contains("verified: tree digest"), "{synced}");
    let pair = Pair {
        client: suite.client.clone(),
        busybox: suite.busybox.clone(),
        src: src.into(),
        dst: dst.into(),
        methods: CopyMethods::new("Direct", "Snapshot"),
    };
    pair.compare("kubectl-1").await;

    // Again after a change: the plugin updates what it made, and only the
    // change moves.
    suite.write(src, "data", "echo changed >d/f7").await;
    let again = plugin.ok(&["replication", "sync", "kc"]);
    let status = Api::<ReplicationSource>::namespaced(suite.client.clone(), src)
        .get("app")
        .await
        .unwrap()
        .status
        .unwrap()
        .sync;
    let (moved, total) = (
        status.bytes_transferred.unwrap(),
        status.bytes_total.unwrap(),
    );
    assert!(
        moved * 20 < total,
        "the second sync moves only the change: {again}"
    );
    pair.compare("kubectl-2").await;
    let shown = plugin.ok(&["replication", "status", "kc"]);
    for expected in [
        "destination: kc-dst/db in context kc-dst",
        "source: kc-src/app in context kc-src",
        "verified: tree digest",
        "endpoint: ",
    ] {
        assert!(
            shown.contains(expected),
            "status shows {expected:?}:\n{shown}"
        );
    }

    plugin.ok(&["replication", "delete", "kc"]);
    assert!(
        Api::<Secret>::namespaced(suite.client.clone(), src)
            .get_opt("app-wasmover-key")
            .await
            .unwrap()
            .is_none(),
        "the key copy is deleted"
    );
    let gone = plugin.fails(&["replication", "status", "kc"]);
    assert!(gone.contains("no relationship kc in"), "{gone}");

    migration(suite, &plugin, dst).await;
}

/// A local tree into a new PVC, twice; the PVC outlives the migration.
async fn migration(suite: &Suite<'_>, plugin: &Plugin, namespace: &str) {
    let local = tempfile::tempdir().unwrap();
    wasmover_tests::write(local.path(), "docs/a.txt", b"alpha\n");
    wasmover_tests::write(local.path(), "docs/deep/b.txt", b"beta\n");
    wasmover_tests::write(local.path(), "blob", &wasmover_tests::bytes(3 << 20, 7));
    plugin.ok(&[
        "migration",
        "create",
        "mig",
        "--context",
        "kc-dst",
        "--pvc",
        "migrated",
        "--capacity",
        "1Gi",
    ]);
    let dir = local.path().to_str().unwrap();
    let sent = plugin.ok(&["migration", "rsync", "mig", "--source", dir]);
    assert!(sent.contains("verified: tree digest"), "{sent}");
    wasmover_tests::write(local.path(), "docs/a.txt", b"alpha, again\n");
    let again = plugin.ok(&["migration", "rsync", "mig", "--source", dir]);
    assert!(again.contains("1 files rebuilt"), "{again}");
    plugin.ok(&["migration", "delete", "mig"]);
    let content = busybox(
        &suite.client,
        &suite.busybox,
        namespace,
        "migrated",
        "cat /data/docs/a.txt /data/docs/deep/b.txt >/dev/termination-log && \
         wc -c </data/blob >>/dev/termination-log",
    )
    .await;
    assert_eq!(content, format!("alpha, again\nbeta\n{}", 3 << 20));
    assert!(
        Api::<PersistentVolumeClaim>::namespaced(suite.client.clone(), namespace)
            .get_opt("migrated")
            .await
            .unwrap()
            .is_some(),
        "the migrated PVC stays"
    );
}

/// The cluster's kubectl with the plugin on PATH, a kubeconfig of two
/// contexts, and a relationship directory of its own.
struct Plugin {
    kubectl: PathBuf,
    path: String,
    kubeconfig: PathBuf,
    config: tempfile::TempDir,
}

impl Plugin {
    fn new(suite: &Suite<'_>) -> Self {
        let config = tempfile::tempdir().unwrap();
        let bin = config.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(wasmover_tests::wasmover_bin(), bin.join("kubectl-wasmover"))
            .unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let kubeconfig = config.path().join("kubeconfig");
        two_contexts(suite.node.kubeconfig(), &kubeconfig);
        Self {
            kubectl: PathBuf::from(suite.node.env("KUBECTL")),
            path,
            kubeconfig,
            config,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        eprintln!("kubectl wasmover {}", args.join(" "));
        Command::new(&self.kubectl)
            .arg("wasmover")
            .args(args)
            .env("PATH", &self.path)
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "WASMOVER_CONFIG_DIR",
                self.config.path().join("relationships"),
            )
            .output()
            .unwrap()
    }

    /// Runs a command that succeeds; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl wasmover {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that fails; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl wasmover {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

/// Writes a kubeconfig with the admin's cluster and user in two contexts,
/// `kc-src` and `kc-dst`, whose default namespaces are their names.
fn two_contexts(admin: &Path, out: &Path) {
    let mut config: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    let cluster = config["clusters"][0]["name"].clone();
    let user = config["users"][0]["name"].clone();
    config["contexts"] = json!(["kc-src", "kc-dst"].map(|name| json!({
        "name": name,
        "context": {"cluster": cluster, "user": user, "namespace": name},
    })));
    config["current-context"] = json!("kc-src");
    std::fs::write(out, serde_yaml::to_string(&config).unwrap()).unwrap();
}
