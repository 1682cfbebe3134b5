//! `kubectl wasmover` meets a cluster that cannot serve it: one without
//! wasmover's CRDs, and a user RBAC does not allow. Each is refused with
//! a message naming the context and what is missing, and nothing is
//! created, not even the relationship's file. (The plugin's working paths run on the real node, in the e2e
//! suite.)

use std::path::Path;
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::Api;
use serde_json::json;
use wasmover_tests::apiserver::{ApiServer, install_crds};
use wasmover_tests::cluster::namespace;

/// Runs the plugin (the `wasmover` binary called `kubectl-wasmover`) with
/// `kubeconfig` and relationship files under `config`.
fn plugin(kubeconfig: &Path, config: &Path, args: &[&str]) -> Output {
    let bin = config.join("kubectl-wasmover");
    if !bin.exists() {
        std::os::unix::fs::symlink(wasmover_tests::wasmover_bin(), &bin).unwrap();
    }
    Command::new(bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("WASMOVER_CONFIG_DIR", config.join("relationships"))
        .output()
        .unwrap()
}

/// The stderr of a command that must fail.
fn refused(kubeconfig: &Path, config: &Path, args: &[&str]) -> String {
    let out = plugin(kubeconfig, config, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    stderr
}

/// A kubeconfig with the admin's context `admin` and a context `bob` that
/// acts as the user bob, whom no role binds.
fn contexts(admin: &Path, out: &Path) {
    let mut config: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    let cluster = config["clusters"][0]["name"].clone();
    let mut bob = config["users"][0].clone();
    bob["name"] = json!("bob");
    bob["user"]["as"] = json!("bob");
    let admin_user = config["users"][0]["name"].clone();
    config["users"].as_array_mut().unwrap().push(bob);
    config["contexts"] = json!([
        {"name": "admin", "context": {"cluster": cluster, "user": admin_user}},
        {"name": "bob", "context": {"cluster": cluster, "user": "bob"}},
    ]);
    config["current-context"] = json!("admin");
    std::fs::write(out, serde_yaml::to_string(&config).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_wasmover_or_a_user_without_rights_is_refused_by_name() {
    let server = ApiServer::start();
    let client = server.client().await;
    namespace(&client, "web").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    contexts(server.kubeconfig(), &kubeconfig);
    let migrate = |context: &'static str| {
        [
            "migration",
            "create",
            "site",
            "--context",
            context,
            "--namespace",
            "web",
            "--pvc",
            "content",
            "--capacity",
            "1Gi",
        ]
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "web");
    let left = dir.path().join("relationships/site.yaml");

    // No CRDs: the plugin says wasmover is not installed there.
    let message = refused(&kubeconfig, dir.path(), &migrate("admin"));
    assert!(
        message.contains("wasmover is not installed in context admin")
            && message.contains("replicationdestinations.wasmover.dev/v1alpha1"),
        "{message}"
    );
    assert!(claims.get_opt("content").await.unwrap().is_none());
    assert!(!left.exists(), "a refused create leaves its relationship");

    // Installed, but bob may not read PVCs: the 403 names the verb, the
    // resource, the namespace and the context.
    install_crds(&client).await;
    let message = refused(&kubeconfig, dir.path(), &migrate("bob"));
    assert!(
        message.contains("context bob: not allowed to get persistentvolumeclaims in namespace web"),
        "{message}"
    );
    assert!(claims.get_opt("content").await.unwrap().is_none());
    assert!(!left.exists(), "a refused create leaves its relationship");

    // An unknown context lists the known ones.
    let message = refused(&kubeconfig, dir.path(), &migrate("west"));
    assert!(
        message.contains("no context \"west\"") && message.contains("admin"),
        "{message}"
    );
}
