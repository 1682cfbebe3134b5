//! The Helm chart `charts/wasmover`, with helm built from its Go module by
//! `tests/helm/install.sh`: it lints; its CRDs and the plain manifests
//! (`operator/yaml/wasmover.yaml`) are the generated ones; bad values fail
//! `helm template` saying why; and on a real kube-apiserver (RBAC
//! authorization) it installs, the operator run as the chart's
//! ServiceAccount does its work without one refusal, what it never needs
//! stays forbidden, and `helm uninstall` leaves the CRDs and the objects.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::AuthInfo;
use kube::{Client, Config};
use serde_json::{Value, json};
use wasmover_operator::controller::RunOptions;
use wasmover_operator::crd::ReplicationDestination;
use wasmover_operator::leader::LeaseConfig;
use wasmover_operator::metrics::Metrics;
use wasmover_tests::apiserver::ApiServer;
use wasmover_tests::cluster::{create, eventually, job_controller_stand_in, namespace};

/// The image digest the tests install with (nothing pulls it).
const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
/// Where the tests install the chart: release `wasmover` in namespace `wasmover`.
const NAMESPACE: &str = "wasmover";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// helm, built once per machine by tests/helm/install.sh.
fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new(root().join("tests/helm/install.sh"))
            .output()
            .expect("tests/helm/install.sh runs");
        assert!(
            out.status.success(),
            "tests/helm/install.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let path = stdout.lines().find_map(|l| l.strip_prefix("HELM="));
        PathBuf::from(path.expect("install.sh prints HELM=..."))
    })
}

/// Runs helm in the repository with `args`; against the API server of
/// `kubeconfig` if given, with a home of its own (client-go caches
/// discovery there).
fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(helm_bin());
    command
        .args(args)
        .current_dir(root())
        .env("HOME", home.path())
        .env_remove("KUBECONFIG");
    for var in ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"] {
        command.env(var, home.path().join(var));
    }
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    command.output().expect("helm runs")
}

/// helm's stdout; it must succeed.
fn helm_ok(args: &[&str], kubeconfig: Option<&Path>) -> String {
    let out = helm(args, kubeconfig);
    assert!(
        out.status.success(),
        "helm {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The objects `helm template` renders with `--set values`.
fn render(values: &str) -> Vec<Value> {
    let args = [
        "template",
        "wasmover",
        "charts/wasmover",
        "-n",
        NAMESPACE,
        "--set",
        values,
    ];
    helm_ok(&args, None)
        .split("\n---\n")
        .map(|doc| serde_yaml::from_str::<Value>(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The rendered object of `kind`, if there is one.
fn object<'a>(objects: &'a [Value], kind: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind)
}

/// The operator container's environment variable `name`.
fn env<'a>(deployment: &'a Value, name: &str) -> Option<&'a Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn the_chart_lints_and_follows_the_workspace_version() {
    let out = helm_ok(
        &[
            "lint",
            "--strict",
            "charts/wasmover",
            "--set",
            &format!("image.digest={DIGEST}"),
        ],
        None,
    );
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("charts/wasmover/Chart.yaml")).unwrap(),
    )
    .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        (chart["version"].as_str(), chart["appVersion"].as_str()),
        (Some(version), Some(version)),
        "charts/wasmover/Chart.yaml: version and appVersion must be the workspace's version"
    );
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let path = "charts/wasmover/crds/wasmover.dev.yaml";
    let checked_in = std::fs::read_to_string(root().join(path)).unwrap();
    assert!(
        checked_in == wasmover_operator::crd::yaml(),
        "{path} is stale: regenerate it with `cargo run --release -p wasmover-operator --bin crdgen > {path}`"
    );
}

#[test]
fn the_plain_manifests_are_the_rendered_chart() {
    let out = Command::new(root().join("tests/helm/render.sh"))
        .output()
        .expect("tests/helm/render.sh runs");
    assert!(
        out.status.success(),
        "tests/helm/render.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let path = "operator/yaml/wasmover.yaml";
    let checked_in = std::fs::read_to_string(root().join(path)).unwrap();
    let first_difference = rendered
        .lines()
        .zip(checked_in.lines())
        .position(|(a, b)| a != b)
        .map_or("in length".into(), |i| format!("at line {}", i + 1));
    assert!(
        rendered == checked_in,
        "{path} is stale (differs {first_difference}): regenerate it with `tests/helm/render.sh > {path}`"
    );
}

#[test]
fn bad_values_fail_helm_template_saying_why() {
    let digest = format!("image.digest={DIGEST}");
    // What `--set` gives besides the digest, and what the failure says.
    let cases = [
        ("image.digest=", "image.digest is required"),
        (
            "image.digest=sha256:abc",
            "at '/image/digest': 'sha256:abc' does not match pattern",
        ),
        ("replicas=two", "at '/replicas': got string, want integer"),
        (
            "hostNetwork=yes",
            "at '/hostNetwork': got string, want boolean",
        ),
        ("imagee.tag=1", "additional properties 'imagee' not allowed"),
        (
            "policy.allowedModule[0]=builtin:*",
            "at '/policy': additional properties 'allowedModule' not allowed",
        ),
        (
            "policy.allowedModules[0]=docker.io/m",
            "at '/policy/allowedModules/0': 'docker.io/m' does not match pattern",
        ),
        (
            "image.pullPolicy=Sometimes",
            "at '/image/pullPolicy': value must be one of",
        ),
        (
            "metrics.port=0",
            "at '/metrics/port': minimum: got 0, want 1",
        ),
        (
            "replicas=2,leaderElection.enabled=false",
            "replicas > 1 needs leaderElection.enabled",
        ),
        (
            "serviceAccount.create=false",
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
    ];
    let mut wrong = Vec::new();
    for (values, expected) in cases {
        let values = format!("{digest},{values}");
        let out = helm(
            &["template", "wasmover", "charts/wasmover", "--set", &values],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(expected) {
            wrong.push(format!(
                "--set {values}: expected a failure saying {expected:?}, got {}:\n{stderr}",
                out.status
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_values_render_as_documented() {
    let image = "ghcr.io/wasmover/wasmover";
    // Defaults: pinned, restricted, electing a leader, policy mounted.
    let objects = render(&format!("image.digest={DIGEST}"));
    let deployment = object(&objects, "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], format!("{image}@{DIGEST}"));
    assert_eq!(
        env(deployment, "WASMOVER_AGENT_IMAGE").unwrap()["value"],
        container["image"]
    );
    assert_eq!(
        env(deployment, "POD_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(deployment, "WASMOVER_POLICY").unwrap()["value"],
        "/etc/wasmover/policy.yaml"
    );
    assert_eq!(
        (
            &pod["securityContext"]["runAsUser"],
            &pod["securityContext"]["runAsNonRoot"]
        ),
        (&json!(65532), &json!(true))
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(pod.get("hostNetwork").is_none());
    let policy = object(&objects, "ConfigMap").unwrap()["data"]["policy.yaml"]
        .as_str()
        .unwrap();
    let policy: wasmover_operator::policy::Policy = serde_yaml::from_str(policy).unwrap();
    assert!(!policy.allow_unpinned_tags, "{policy:?}");
    assert!(object(&objects, "Role").is_some());
    assert!(object(&objects, "ServiceMonitor").is_none());

    // A local try by tag: no agent image. One replica without a leader
    // Lease is replaced, not rolled. The test cluster's settings.
    let objects = render(
        "image.tag=dev,leaderElection.enabled=false,hostNetwork=true,metrics.serviceMonitor.enabled=true,\
         extraEnv[0].name=KUBERNETES_SERVICE_HOST,extraEnv[0].value=10.0.0.1",
    );
    let deployment = object(&objects, "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], format!("{image}:dev"));
    assert!(env(deployment, "WASMOVER_AGENT_IMAGE").is_none());
    assert_eq!(
        env(deployment, "KUBERNETES_SERVICE_HOST").unwrap()["value"],
        "10.0.0.1"
    );
    assert!(
        pod["containers"][0]["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--no-leader-election"))
    );
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(
        (&pod["hostNetwork"], &pod["dnsPolicy"]),
        (&json!(true), &json!("ClusterFirstWithHostNet"))
    );
    assert!(object(&objects, "Role").is_none());
    assert!(object(&objects, "ServiceMonitor").is_some());

    // A tag beside the digest is only for reading.
    let objects = render(&format!("image.digest={DIGEST},image.tag=0.1.0"));
    let deployment = object(&objects, "Deployment").unwrap();
    assert_eq!(
        env(deployment, "WASMOVER_AGENT_IMAGE").unwrap()["value"],
        format!("{image}:0.1.0@{DIGEST}")
    );
}

/// A client as the ServiceAccount `name` of the chart's namespace, with a
/// token from the TokenRequest API.
async fn service_account_client(
    server: &ApiServer,
    admin: &Client,
    name: &str,
) -> (Client, Config) {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let mut config = server.config().await;
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..AuthInfo::default()
    };
    (Client::try_from(config.clone()).unwrap(), config)
}

/// Whether `client` may do `(verb, group, resource[/subresource],
/// namespace, name)`, asked as itself (SelfSubjectAccessReview).
async fn allowed(client: &Client, access: (&str, &str, &str, &str, &str)) -> bool {
    let (verb, group, resource, namespace, name) = access;
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {
            "verb": verb, "group": group, "resource": resource, "subresource": subresource,
            "namespace": namespace, "name": name,
        }},
    }))
    .unwrap();
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

/// Every `(verb, group, resource, resourceNames)` that `client` holds in
/// `namespace`, by SelfSubjectRulesReview.
async fn rules(
    client: &Client,
    namespace: &str,
) -> BTreeSet<(String, String, String, Vec<String>)> {
    let review: SelfSubjectRulesReview =
        serde_json::from_value(json!({"spec": {"namespace": namespace}})).unwrap();
    let status = Api::<SelfSubjectRulesReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    let mut rules = BTreeSet::new();
    for rule in status.resource_rules {
        for verb in &rule.verbs {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    let names = rule.resource_names.clone().unwrap_or_default();
                    rules.insert((verb.clone(), group.clone(), resource.clone(), names));
                }
            }
        }
    }
    rules
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_on_a_real_api_server_the_operator_may_do_its_work_and_no_more() {
    let server = ApiServer::start();
    let kubeconfig = Some(server.kubeconfig());
    let admin = server.client().await;
    let install = |flag: &str, values: &str| {
        let values = format!("image.digest={DIGEST}{values}");
        let args = [
            "install",
            "wasmover",
            "charts/wasmover",
            "-n",
            NAMESPACE,
            flag,
            "--set",
            &values,
        ];
        helm_ok(&args, kubeconfig)
    };
    let out = install("--dry-run=server", "");
    assert!(out.contains("Dry run complete"), "{out}");
    // For real, with the test cluster's settings; every object is applied
    // server-side, so the API server checks each field.
    let out = install(
        "--create-namespace",
        ",replicas=2,hostNetwork=true,extraEnv[0].name=KUBERNETES_SERVICE_HOST,extraEnv[0].value=127.0.0.1",
    );
    assert!(
        out.contains("STATUS: deployed") && out.contains("NOTES:"),
        "{out}"
    );

    let (account, config) = service_account_client(&server, &admin, "wasmover").await;
    let (team, lease) = ("team-a", "wasmover-operator");
    let mut needed = vec![
        ("create", "events.k8s.io", "events", team, ""),
        ("patch", "events.k8s.io", "events", team, "e"),
        ("get", "", "namespaces", "", team),
        ("get", "", "pods", team, "p"),
        ("list", "", "pods", team, ""),
        ("get", "", "pods/log", team, "p"),
        ("list", "", "events", team, ""),
        ("create", "coordination.k8s.io", "leases", NAMESPACE, ""),
        ("get", "coordination.k8s.io", "leases", NAMESPACE, lease),
        ("update", "coordination.k8s.io", "leases", NAMESPACE, lease),
    ];
    for group in ["wasmover.dev", "volsync.backube"] {
        for resource in ["replicationsources", "replicationdestinations"] {
            needed.extend(
                [("list", ""), ("watch", ""), ("get", team), ("patch", team)]
                    .map(|(verb, namespace)| (verb, group, resource, namespace, "db")),
            );
        }
        for status in [
            "replicationsources/status",
            "replicationdestinations/status",
        ] {
            needed.push(("patch", group, status, team, "db"));
        }
    }
    for (group, resource) in [
        ("", "persistentvolumeclaims"),
        ("", "services"),
        ("", "secrets"),
        ("", "configmaps"),
        ("batch", "jobs"),
        ("snapshot.storage.k8s.io", "volumesnapshots"),
    ] {
        needed.push(("list", group, resource, "", ""));
        for verb in ["get", "create", "patch", "delete"] {
            needed.push((verb, group, resource, team, "x"));
        }
    }
    needed.push(("watch", "batch", "jobs", "", ""));
    let forbidden = [
        ("delete", "", "namespaces", "", team),
        ("create", "", "namespaces", "", ""),
        ("patch", "", "namespaces", "", team),
        ("create", "", "pods", team, ""),
        ("create", "", "pods/exec", team, "p"),
        ("delete", "", "pods", team, "p"),
        ("update", "", "secrets", "", ""),
        ("update", "", "secrets", team, "s"),
        ("watch", "", "secrets", "", ""),
        ("deletecollection", "", "secrets", team, ""),
        ("create", "", "serviceaccounts/token", team, "default"),
        ("get", "", "nodes", "", "n"),
        ("list", "", "nodes", "", ""),
        ("patch", "", "nodes", "", "n"),
        ("delete", "", "nodes", "", "n"),
        ("create", "", "persistentvolumes", "", ""),
        (
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "wasmover",
        ),
        (
            "bind",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "cluster-admin",
        ),
        (
            "escalate",
            "rbac.authorization.k8s.io",
            "roles",
            NAMESPACE,
            "wasmover-leader-election",
        ),
        (
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
            "",
        ),
        ("impersonate", "", "users", "", "admin"),
        ("update", "wasmover.dev", "replicationsources", team, "db"),
        (
            "delete",
            "wasmover.dev",
            "replicationdestinations",
            team,
            "db",
        ),
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            "",
        ),
        ("create", "", "events", team, ""),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            NAMESPACE,
            "kube-scheduler",
        ),
        ("delete", "coordination.k8s.io", "leases", NAMESPACE, lease),
        ("update", "coordination.k8s.io", "leases", team, lease),
    ];
    let mut wrong = Vec::new();
    for &access in &needed {
        if !allowed(&account, access).await {
            wrong.push(format!("needed but forbidden: {access:?}"));
        }
    }
    for access in forbidden {
        if allowed(&account, access).await {
            wrong.push(format!("allowed but never needed: {access:?}"));
        }
    }
    // And nothing granted beyond the needed: every rule the ServiceAccount
    // holds, less what one without grants holds.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
    let nobody = serde_json::from_value(json!({"metadata": {"name": "nobody"}})).unwrap();
    accounts
        .create(&PostParams::default(), &nobody)
        .await
        .unwrap();
    let (nobody, _) = service_account_client(&server, &admin, "nobody").await;
    for namespace in [team, NAMESPACE] {
        let baseline = rules(&nobody, namespace).await;
        for (verb, group, resource, names) in rules(&account, namespace).await.difference(&baseline)
        {
            let justified = needed.iter().any(|&(v, g, r, _, name)| {
                (v, g, r) == (verb, group, resource)
                    && (names.is_empty() || names.iter().any(|n| n == name))
            });
            if !justified {
                wrong.push(format!(
                    "granted in {namespace} but never needed: {verb} {group}/{resource} {names:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "the chart's RBAC:\n{}", wrong.join("\n"));

    // The operator as the ServiceAccount: the API refuses it nothing.
    let destinations: Api<ReplicationDestination> = Api::namespaced(admin.clone(), "dst");
    operator_works_as(config, &admin, &destinations).await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    let holder = leases
        .get(lease)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("wasmover-0"));

    // Uninstalling leaves the CRDs, and with them the objects.
    create(&destinations, "kept", json!({"capacity": "1Gi"})).await;
    helm_ok(&["uninstall", "wasmover", "-n", NAMESPACE], kubeconfig);
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    assert!(
        crds.get_opt("replicationdestinations.wasmover.dev")
            .await
            .unwrap()
            .is_some()
    );
    assert!(destinations.get_opt("kept").await.unwrap().is_some());
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    assert!(roles.get_opt("wasmover").await.unwrap().is_none());
}

/// Panics, naming the requests by verb, if the API server refused the
/// operator anything (its log names the objects).
fn assert_no_refusals(metrics: &Metrics) {
    let text = metrics.encode();
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("code=\"403\"") && l.contains("_count"))
        .collect();
    assert!(
        refused.is_empty(),
        "the API server refused the operator:\n{}",
        refused.join("\n")
    );
}

/// Runs the operator with `config` (the chart's ServiceAccount) through a
/// whole story of a ReplicationDestination in `destinations`' namespace:
/// its mover creates its PVC, key, Service and agent Job, the
/// synchronization completes, deleting it runs its cleanup, and the
/// orphan collector deletes the rest. `admin` plays the user and the Job
/// controller.
async fn operator_works_as(
    config: Config,
    admin: &Client,
    destinations: &Api<ReplicationDestination>,
) {
    let metrics = Arc::new(Metrics::default());
    let client = wasmover_operator::client::instrumented(config, metrics.clone()).unwrap();
    let options = RunOptions {
        leader: Some(LeaseConfig::new(NAMESPACE, "wasmover-0")),
        gc_interval: Duration::from_secs(1),
        agent_image: Some(wasmover_tests::AGENT_IMAGE.into()),
        ..RunOptions::default()
    };
    let catalog = wasmover_operator::builtin::catalog(&wasmover_tests::engine()).unwrap();
    let operator = tokio::spawn(wasmover_operator::controller::run(
        client,
        catalog,
        metrics.clone(),
        options,
    ));
    namespace(admin, "dst").await;
    create(
        destinations,
        "db",
        json!({"capacity": "1Gi", "trigger": {"manual": "first"}}),
    )
    .await;
    let jobs: Api<Job> = Api::namespaced(admin.clone(), "dst");
    eventually("the agent Job exists", || async {
        assert_no_refusals(&metrics);
        jobs.get_opt("db-blocksync-dst").await.unwrap()
    })
    .await;
    job_controller_stand_in(&jobs, "db-blocksync-dst").await;
    eventually("the synchronization completes", || async {
        assert_no_refusals(&metrics);
        destinations
            .get("db")
            .await
            .unwrap()
            .status?
            .sync
            .last_sync_time
    })
    .await;
    destinations
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), "dst");
    eventually("the destination and its PVC are gone", || async {
        assert_no_refusals(&metrics);
        (destinations.get_opt("db").await.unwrap().is_none()
            && claims.get_opt("db-dest").await.unwrap().is_none())
        .then_some(())
    })
    .await;
    operator.abort();
    assert_no_refusals(&metrics);
    let text = metrics.encode();
    assert!(!text.contains("wasmover_reconcile_errors_total{"), "{text}");
}
