//! The API server holds `trigger.schedule` to VolSync's pattern: what
//! VolSync's CRD refuses, ours refuses too, before the operator sees it.

use kube::api::{Api, PostParams};
use serde_json::json;
use wasmover_operator::crd::ReplicationSource;
use wasmover_tests::apiserver::{ApiServer, install_crds};
use wasmover_tests::cluster::namespace;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_a_schedule_that_is_not_cron() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    namespace(&client, "sched").await;
    let sources: Api<ReplicationSource> = Api::namespaced(client, "sched");
    let source = |name: &str, schedule: &str| -> ReplicationSource {
        serde_json::from_value(json!({
            "apiVersion": "wasmover.dev/v1alpha1",
            "kind": "ReplicationSource",
            "metadata": {"name": name},
            "spec": {"sourcePVC": "data", "trigger": {"schedule": schedule}},
        }))
        .unwrap()
    };
    let refused = sources
        .create(&PostParams::default(), &source("prose", "not a cron"))
        .await
        .expect_err("the API server refuses `not a cron`");
    let kube::Error::Api(status) = refused else {
        panic!("expected an API error, got {refused}");
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.contains("spec.trigger.schedule"),
        "{}",
        status.message
    );
    for (name, schedule) in [("daily", "@daily"), ("mondays", "0 9 * * 1")] {
        sources
            .create(&PostParams::default(), &source(name, schedule))
            .await
            .unwrap_or_else(|e| panic!("{schedule} is accepted: {e}"));
    }
}
