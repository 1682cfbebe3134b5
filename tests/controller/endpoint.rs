//! Where sources reach a destination: the Service its mover creates has
//! the type and annotations of `spec.mover`, and `status.endpoint` reports
//! its address, port and key Secret once they are known. The test plays
//! the cloud controller, which assigns a load balancer's address. A
//! change of those settings replaces the Service made before it.

use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;
use wasmover_operator::crd::{Endpoint, ReplicationDestination};
use wasmover_tests::apiserver::{ApiServer, install_crds};
use wasmover_tests::cluster::{create, event, eventually, namespace};
use wasmover_tests::operator::Operator;

const NS: &str = "endpoint";

/// The destination's `EndpointReady` condition (status, reason, message)
/// and endpoint, once both are there.
async fn endpoint(
    api: &Api<ReplicationDestination>,
    name: &str,
) -> Option<((String, String, String), Endpoint)> {
    let status = api.get(name).await.unwrap().status?;
    let ready = status
        .sync
        .conditions
        .iter()
        .find(|c| c.type_ == "EndpointReady")?;
    Some((
        (
            ready.status.clone(),
            ready.reason.clone(),
            ready.message.clone(),
        ),
        status.endpoint?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_reports_where_sources_reach_it() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    namespace(&client, NS).await;
    let _operator = Operator::start(&server, None).await;
    let destinations: Api<ReplicationDestination> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);

    // A load balancer, with the cloud's settings as annotations.
    create(
        &destinations,
        "lb",
        json!({
            "capacity": "1Gi",
            "trigger": {"manual": "first"},
            "mover": {
                "module": "blocksync",
                "serviceType": "LoadBalancer",
                "serviceAnnotations": {"lb.example/internal": "true"},
            },
        }),
    )
    .await;
    let service = eventually("the mover created its Service", || async {
        services.get_opt("lb-blocksync").await.unwrap()
    })
    .await;
    let spec = service.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    let annotations = service.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["lb.example/internal"], "true");
    assert_eq!(annotations["wasmover.dev/key-secret"], "lb-blocksync-key");

    // No address until the load balancer assigns one: never the cluster IP.
    let (waiting, early) = eventually("the endpoint waits for the load balancer", || async {
        endpoint(&destinations, "lb").await
    })
    .await;
    assert_eq!(
        (waiting.0.as_str(), waiting.1.as_str()),
        ("False", "WaitingForLoadBalancer"),
        "{}",
        waiting.2
    );
    assert!(
        waiting.2.contains("waiting for the load balancer"),
        "{}",
        waiting.2
    );
    assert_eq!(
        early,
        Endpoint {
            address: None,
            port: Some(8873),
            key_secret: Some("lb-blocksync-key".into()),
        }
    );

    // The cloud controller's part.
    services
        .patch_status(
            "lb-blocksync",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}),
            ),
        )
        .await
        .unwrap();
    let (ready, assigned) = eventually("the endpoint has the load balancer's address", || async {
        endpoint(&destinations, "lb")
            .await
            .filter(|(_, e)| e.address.is_some())
    })
    .await;
    assert_eq!(assigned.address.as_deref(), Some("203.0.113.10"));
    assert_eq!(assigned.port, Some(8873));
    assert_eq!(assigned.key_secret.as_deref(), Some("lb-blocksync-key"));
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("True", "EndpointReady")
    );

    // By default: ClusterIP, reported as its cluster IP.
    create(
        &destinations,
        "plain",
        json!({"capacity": "1Gi", "trigger": {"manual": "first"}, "mover": {"module": "blocksync"}}),
    )
    .await;
    let (ready, plain) = eventually("the ClusterIP endpoint is reported", || async {
        endpoint(&destinations, "plain").await
    })
    .await;
    let service = services.get("plain-blocksync").await.unwrap().spec.unwrap();
    assert_eq!(service.type_.as_deref(), Some("ClusterIP"));
    assert!(service.cluster_ip.as_deref().is_some_and(|ip| ip != "None"));
    assert_eq!(plain.address, service.cluster_ip);
    assert_eq!(plain.port, Some(8873));
    assert_eq!(plain.key_secret.as_deref(), Some("plain-blocksync-key"));
    assert_eq!(ready.0, "True", "{}", ready.2);

    // A change of serviceType and serviceAnnotations replaces the Service
    // the mover made before it, with an Event saying so.
    let old_uid = services.get("plain-blocksync").await.unwrap().metadata.uid;
    destinations
        .patch(
            "plain",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mover": {
                "serviceType": "NodePort",
                "serviceAnnotations": {"dns.example/name": "plain.example.com"},
            }}})),
        )
        .await
        .unwrap();
    let renewed = eventually("the Service is made anew as a NodePort", || async {
        services
            .get_opt("plain-blocksync")
            .await
            .unwrap()
            .filter(|s| s.metadata.uid != old_uid)
    })
    .await;
    assert_eq!(renewed.spec.unwrap().type_.as_deref(), Some("NodePort"));
    let annotations = renewed.metadata.annotations.unwrap();
    assert_eq!(annotations["dns.example/name"], "plain.example.com");
    assert_eq!(
        annotations["wasmover.dev/key-secret"],
        "plain-blocksync-key"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let note = event(&events, "plain", "ServiceReplaced", "Normal").await;
    assert!(
        note.contains("Service plain-blocksync is ClusterIP, not NodePort"),
        "{note}"
    );
    let (reason, _) = eventually("the endpoint is the node port", || async {
        endpoint(&destinations, "plain")
            .await
            .filter(|(c, _)| c.1 == "NodeAddressNeeded")
    })
    .await;
    assert!(!reason.2.contains("made anew"), "{}", reason.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_a_bad_service_type_or_a_wasmover_annotation() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    namespace(&client, NS).await;
    // Untyped, as kubectl would send it: the typed spec cannot hold it.
    let resource = ApiResource::erase::<ReplicationDestination>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, NS, &resource);
    let refusal = |mover: serde_json::Value| {
        let api = api.clone();
        async move {
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "wasmover.dev/v1alpha1",
                "kind": "ReplicationDestination",
                "metadata": {"name": "bad"},
                "spec": {"capacity": "1Gi", "mover": mover},
            }))
            .unwrap();
            match api.create(&PostParams::default(), &object).await {
                Err(kube::Error::Api(status)) => {
                    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
                    status.message
                }
                other => panic!("expected the API server to refuse {mover}, got {other:?}"),
            }
        }
    };
    let message = refusal(json!({"serviceType": "ExternalName"})).await;
    assert!(message.contains("spec.mover.serviceType"), "{message}");
    assert!(message.contains("LoadBalancer"), "{message}");
    let message = refusal(json!({"serviceAnnotations": {"wasmover.dev/key-secret": "mine"}})).await;
    assert!(
        message.contains("spec.mover.serviceAnnotations"),
        "{message}"
    );
    assert!(message.contains("rule service-annotations"), "{message}");
}
