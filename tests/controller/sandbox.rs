//! The sandbox holds in a cluster: a hostile module tries each way out
//! through the Kubernetes host (another namespace, Pods it builds itself,
//! Secrets and PVCs it was not given, flooding the API, huge strings) and
//! is refused with an error naming the rule, an Event and a metric, while
//! a well-behaved replication in the same operator keeps synchronizing.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, PersistentVolumeClaim, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;
use wasmover_host::kube::OWNER_NAME_LABEL;
use wasmover_oci::{Credentials, Digest, ModuleStore, Registry, RegistryAuth, WasmConfig};
use wasmover_operator::controller::RunOptions;
use wasmover_operator::crd::{ReplicationDestination, ReplicationSource};
use wasmover_operator::metrics::RefusalLabels;
use wasmover_operator::modules::{Oci, OciModules};
use wasmover_tests::apiserver::{ApiServer, install_crds};
use wasmover_tests::cluster::{
    create, eventually, failure, job_controller_stand_in, module_condition, namespace, warning,
};
use wasmover_tests::operator::Operator;
use wasmover_tests::registry::TestRegistry;

/// Each escape: the hostile mode, and what its refusal must say (the rule,
/// and the object or field).
const ESCAPES: &[(&str, &str, &str)] = &[
    ("other-namespace", "namespace", "namespace kube-system"),
    ("privileged-pod", "agent-template", "securityContext"),
    ("host-path", "agent-template", "hostPath"),
    (
        "host-network",
        "agent-template",
        "spec.template.spec.hostNetwork",
    ),
    ("foreign-image", "agent-template", "containers[0].command"),
    ("read-secret", "ownership", "Secret user-credentials"),
    ("list-secrets", "list-secrets", "may not list Secrets"),
    ("delete-pvc", "ownership", "PersistentVolumeClaim victim"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_escape_is_refused_by_rule_while_another_cr_keeps_synchronizing() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    // Modules from a registry too: one is built for a newer contract.
    let registry = TestRegistry::start();
    let store = tempfile::tempdir().unwrap();
    let oci = Oci::new(
        ModuleStore::new(store.path()),
        false,
        Credentials::default(),
    );
    let options = RunOptions {
        oci: Some(Arc::new(OciModules::new(wasmover_tests::engine(), oci))),
        ..Operator::options()
    };
    let operator = Operator::start_with(&server, options).await;
    let future = wat::parse_bytes(include_bytes!("../modules/future-contract.wat")).unwrap();
    let manifest = Registry::new(ModuleStore::new(store.path().join("pushed")))
        .push(
            &registry.reference("movers/future:v9").parse().unwrap(),
            &future,
            &WasmConfig::component(&Digest::of(&future), Vec::new(), Vec::new()),
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap();
    namespace(&client, "sandbox").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "user-credentials"},
        "stringData": {"password": "hunter2"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "sandbox")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "sandbox");
    let victim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "victim"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    claims
        .create(&PostParams::default(), &victim)
        .await
        .unwrap();

    let sources: Api<ReplicationSource> = Api::namespaced(client.clone(), "sandbox");
    let hostile = |mode: &str| {
        json!({
            "sourcePVC": "victim",
            "trigger": {"manual": "1"},
            "mover": {"module": "hostile", "parameters": {"hostile": mode, "victim": "victim"}},
        })
    };
    for (mode, _, _) in ESCAPES {
        create(&sources, mode, hostile(mode)).await;
    }
    create(&sources, "api-flood", hostile("api-flood")).await;
    create(
        &sources,
        "future",
        json!({
            "sourcePVC": "victim",
            "trigger": {"manual": "1"},
            "mover": {"module": registry.reference(&format!("movers/future@{manifest}"))},
        }),
    )
    .await;
    create(&sources, "huge-error", hostile("huge-error")).await;

    // Meanwhile, a well-behaved destination synchronizes.
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), "sandbox");
    create(
        &destinations,
        "good",
        json!({"capacity": "1Gi", "trigger": {"manual": "1"}}),
    )
    .await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "sandbox");
    let job = eventually("the good destination's agent Job exists", || async {
        jobs.get_opt("good-blocksync-dst").await.unwrap()
    })
    .await;
    // The Job the host built: the agent image by digest, restricted.
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some(wasmover_tests::AGENT_IMAGE)
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let security = pod.security_context.unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    job_controller_stand_in(&jobs, "good-blocksync-dst").await;

    let events: Api<Event> = Api::namespaced(client.clone(), "sandbox");
    for (mode, rule, what) in ESCAPES {
        let message = failure(&sources, mode).await;
        assert!(
            message.contains(what) && message.contains(&format!("(rule {rule})")),
            "{mode}: {message}"
        );
        assert!(!message.contains("EscapeSucceeded"), "{mode}: {message}");
        let note = warning(&events, mode, "MoverForbidden").await;
        assert!(note.contains(&format!("(rule {rule})")), "{mode}: {note}");
        let refusals = operator
            .metrics
            .refusals
            .get_or_create(&RefusalLabels {
                role: "source".into(),
                rule: (*rule).into(),
            })
            .get();
        assert!(refusals > 0, "{mode}: no refusal counted for rule {rule}");
    }
    // What the refusals protected is intact.
    assert!(claims.get_opt("victim").await.unwrap().is_some());
    let escaped = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get_opt("hostile-other-namespace")
        .await
        .unwrap();
    assert!(escaped.is_none(), "a ConfigMap escaped into kube-system");
    let hostile_jobs: Vec<String> = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .filter(|name| name.starts_with("hostile-"))
        .collect();
    assert!(hostile_jobs.is_empty(), "{hostile_jobs:?}");

    // The escapes that end in a limit or a refused module say so in a
    // Warning Event too.
    let flood = failure(&sources, "api-flood").await;
    let limit = warning(&events, "api-flood", "LimitExceeded").await;
    assert!(limit.contains("Kubernetes-call budget"), "{limit}");
    assert!(
        flood.contains("Kubernetes-call budget of 1000 calls exceeded"),
        "{flood}"
    );
    // A huge error reaches the status cut to a readable size.
    let huge = failure(&sources, "huge-error").await;
    assert!(huge.len() < 8 << 10, "{} bytes", huge.len());
    assert!(huge.contains("Huge"), "{}", &huge[..200.min(huge.len())]);
    let note = warning(&events, "huge-error", "SyncFailed").await;
    assert!(
        note.len() <= 1 << 10 && note.contains("bytes cut"),
        "{note}"
    );

    // A module of a newer contract is refused when it is loaded: nothing
    // of it runs.
    let (reason, message) = eventually("the future module is refused", || async {
        let status = sources.get("future").await.unwrap().status?;
        module_condition(Some(&status.sync)).filter(|(_, m)| m.contains("not compatible"))
    })
    .await;
    assert!(
        message.contains("wasmover:mover/log@9.0.0"),
        "{reason}: {message}"
    );
    let note = warning(&events, "future", "SyncFailed").await;
    assert!(note.contains("not compatible"), "{note}");
    assert!(
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|j| {
                j.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(OWNER_NAME_LABEL))
                    .map(String::as_str)
                    != Some("future")
            })
    );

    // Where an admin allows it, agents run as root to keep owners, with
    // only the ownership capabilities; resources and the service account
    // come from the CR.
    let annotated: Namespace = serde_json::from_value(json!({"metadata": {
        "name": "owners",
        "annotations": {"wasmover.dev/privileged-movers": "true"},
    }}))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &annotated)
        .await
        .unwrap();
    // Mover volumes must exist: a CA bundle and a PVC of backups.
    let ca: Secret = serde_json::from_value(json!({
        "metadata": {"name": "ca"},
        "stringData": {"ca.crt": "-----BEGIN CERTIFICATE-----"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "owners")
        .create(&PostParams::default(), &ca)
        .await
        .unwrap();
    let backups: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "backups"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "owners")
        .create(&PostParams::default(), &backups)
        .await
        .unwrap();
    let keepers: Api<ReplicationDestination> = Api::namespaced(client.clone(), "owners");
    let mover_volumes = json!([
        {"mountPath": "ca", "volumeSource": {"secret": {"secretName": "ca", "items": [{"key": "ca.crt", "path": "ca.pem"}]}}},
        {"mountPath": "backups", "volumeSource": {"persistentVolumeClaim": {"claimName": "backups", "readOnly": true}}},
    ]);
    create(
        &keepers,
        "keeper",
        json!({
            "capacity": "1Gi",
            "trigger": {"manual": "1"},
            "mover": {
                "moverResources": {"limits": {"memory": "256Mi"}},
                "moverServiceAccount": "mover",
                "moverPodLabels": {"team": "storage"},
                "moverVolumes": mover_volumes,
            },
        }),
    )
    .await;
    // A mover volume that names a missing Secret is refused by rule, with
    // an Event; the API server refuses one with two sources, or a
    // mountPath that leaves /mnt.
    create(
        &keepers,
        "no-ca",
        json!({
            "capacity": "1Gi",
            "trigger": {"manual": "1"},
            "mover": {"moverVolumes": [{"mountPath": "ca", "volumeSource": {"secret": {"secretName": "missing"}}}]},
        }),
    )
    .await;
    for (volume, why) in [
        (
            json!({"mountPath": "x", "volumeSource": {"secret": {"secretName": "ca"}, "persistentVolumeClaim": {"claimName": "backups"}}}),
            "one source",
        ),
        (
            json!({"mountPath": "../etc", "volumeSource": {"secret": {"secretName": "ca"}}}),
            "mountPath",
        ),
    ] {
        let cr: ReplicationDestination = serde_json::from_value(json!({
            "apiVersion": "wasmover.dev/v1alpha1",
            "kind": "ReplicationDestination",
            "metadata": {"name": "refused"},
            "spec": {"capacity": "1Gi", "mover": {"moverVolumes": [volume]}},
        }))
        .unwrap();
        let err = keepers
            .create(&PostParams::default(), &cr)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{why:?} not in {err}");
    }
    let owner_jobs: Api<Job> = Api::namespaced(client.clone(), "owners");
    let job = eventually("the keeper's agent Job exists", || async {
        owner_jobs.get_opt("keeper-blocksync-dst").await.unwrap()
    })
    .await;
    let template = job.spec.unwrap().template;
    let labels = template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["team"], "storage");
    let pod = template.spec.unwrap();
    assert_eq!(pod.security_context.unwrap().run_as_user, Some(0));
    assert_eq!(pod.service_account_name.as_deref(), Some("mover"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let container = &pod.containers[0];
    let context = container.security_context.clone().unwrap();
    assert_eq!(context.privileged, None);
    assert_eq!(context.allow_privilege_escalation, Some(false));
    let capabilities = context.capabilities.unwrap();
    assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        capabilities.add,
        Some(
            ["CHOWN", "FOWNER", "DAC_OVERRIDE", "FSETID"]
                .map(String::from)
                .to_vec()
        )
    );
    let memory = container
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap()["memory"]
        .clone();
    assert_eq!(memory.0, "256Mi");
    let mounts: Vec<(String, Option<bool>)> = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.mount_path.starts_with("/mnt/"))
        .map(|m| (m.mount_path.clone(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/mnt/ca".to_owned(), Some(true)),
            ("/mnt/backups".to_owned(), Some(true))
        ]
    );
    let volumes = pod.volumes.unwrap_or_default();
    let secret = volumes
        .iter()
        .filter_map(|v| v.secret.as_ref())
        .find(|s| s.secret_name.as_deref() == Some("ca"))
        .unwrap();
    assert_eq!(secret.items.as_ref().unwrap()[0].path, "ca.pem");
    assert!(volumes.iter().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == "backups")
    }));
    let message = failure(&keepers, "no-ca").await;
    assert!(
        message.contains("Secret missing at /mnt/ca") && message.contains("(rule mover-volume)"),
        "{message}"
    );
    let owner_events: Api<Event> = Api::namespaced(client.clone(), "owners");
    let note = warning(&owner_events, "no-ca", "MoverForbidden").await;
    assert!(note.contains("(rule mover-volume)"), "{note}");

    // The good destination completed meanwhile.
    eventually("the good destination completes", || async {
        let status = destinations.get("good").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("1")).then_some(())
    })
    .await;
    operator.task.abort();
}
