//! One operator takes replication objects through their life: on a
//! schedule, by manual trigger, paused, refused, failing, and
//! deleted with what their movers created, telling it in Events and metrics.

use std::net::SocketAddr;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as K8sEvent, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use wasmover_operator::crd::{ReplicationDestination, ReplicationSource};
use wasmover_tests::apiserver::{ApiServer, install_crds};
use wasmover_tests::cluster::{
    condition_reason, create, eventually, eventually_within, failure, job_controller_stand_in,
    namespace,
};
use wasmover_tests::operator::{Operator, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_drives_a_mover_through_a_real_api_server() {
    let server = ApiServer::start();
    let client = server.client().await;
    install_crds(&client).await;
    let Operator {
        metrics_addr,
        task: operator,
        ..
    } = Operator::start(&server, None).await;
    // One operator, one story after the other: each finds what the ones
    // before it left (the scheduled source waits for its minute meanwhile).
    let stage = Stage::new(client, metrics_addr);
    let next = a_schedule_is_waited_for(&stage).await;
    a_destination_goes_on_a_schedule_it_will_not_keep(&stage).await;
    a_manual_trigger_runs_the_mover_and_events_tell_it(&stage).await;
    the_synchronization_is_in_the_metrics(&stage).await;
    a_new_trigger_runs_it_again_and_a_pause_stops_it(&stage).await;
    a_mover_is_refused_what_it_was_not_granted(&stage).await;
    an_invalid_object_gets_a_clear_condition(&stage).await;
    what_a_mover_reports_lands_in_status_and_metrics(&stage).await;
    a_module_that_traps_is_a_failure(&stage).await;
    the_scheduled_source_ran_at_its_minute(&stage, next).await;
    an_overrun_is_out_of_sync_then_a_missed_interval(&stage).await;
    deleting_collects_what_the_mover_created(&stage).await;
    operator.abort();
}

/// Where the stories play: the API, the namespaces' objects they look at
/// (`sched`, `dst` and `src`), and the operator's metrics.
struct Stage {
    client: Client,
    metrics_addr: SocketAddr,
    scheduled: Api<ReplicationSource>,
    late: Api<ReplicationDestination>,
    late_jobs: Api<Job>,
    destinations: Api<ReplicationDestination>,
    jobs: Api<Job>,
    secrets: Api<Secret>,
    services: Api<Service>,
    pvcs: Api<PersistentVolumeClaim>,
    events: Api<K8sEvent>,
    sources: Api<ReplicationSource>,
}

impl Stage {
    fn new(client: Client, metrics_addr: SocketAddr) -> Self {
        Self {
            scheduled: Api::namespaced(client.clone(), "sched"),
            late: Api::namespaced(client.clone(), "sched"),
            late_jobs: Api::namespaced(client.clone(), "sched"),
            destinations: Api::namespaced(client.clone(), "dst"),
            jobs: Api::namespaced(client.clone(), "dst"),
            secrets: Api::namespaced(client.clone(), "dst"),
            services: Api::namespaced(client.clone(), "dst"),
            pvcs: Api::namespaced(client.clone(), "dst"),
            events: Api::namespaced(client.clone(), "dst"),
            sources: Api::namespaced(client.clone(), "src"),
            client,
            metrics_addr,
        }
    }
}

/// On a schedule: waits for the next minute (when it runs is checked by
/// [`the_scheduled_source_ran_at_its_minute`]); returns that minute.
async fn a_schedule_is_waited_for(stage: &Stage) -> Time {
    let Stage {
        client, scheduled, ..
    } = stage;
    namespace(client, "sched").await;
    create(
        scheduled,
        "every-minute",
        json!({
            "sourcePVC": "data",
            "trigger": {"schedule": "* * * * *"},
            "mover": {"module": "hostile", "parameters": {"hostile": "progress"}},
        }),
    )
    .await;
    let next = eventually("the schedule is waited for", || async {
        let status = scheduled.get("every-minute").await.unwrap().status?;
        let (reason, _) = condition_reason(Some(&status.sync))?;
        (reason == "WaitingForSchedule").then_some(status.sync.next_sync_time?)
    })
    .await;
    assert_eq!(next.0.as_second() % 60, 0, "fires on a minute: {next:?}");
    next
}

/// A destination synchronized once by hand goes on a schedule of every
/// minute; its next run will wait for an agent Job that no one completes
/// until [`an_overrun_is_out_of_sync_then_a_missed_interval`] does.
async fn a_destination_goes_on_a_schedule_it_will_not_keep(stage: &Stage) {
    let Stage {
        late,
        late_jobs,
        metrics_addr,
        ..
    } = stage;
    create(
        late,
        "late",
        json!({
            "capacity": "1Gi",
            "trigger": {"manual": "first"},
            "mover": {"module": "blocksync"},
        }),
    )
    .await;
    eventually("its agent Job exists", || async {
        late_jobs.get_opt("late-blocksync-dst").await.unwrap()
    })
    .await;
    job_controller_stand_in(late_jobs, "late-blocksync-dst").await;
    eventually("the manual synchronization completes", || async {
        let status = late.get("late").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("first")).then_some(())
    })
    .await;
    let text = http_get(*metrics_addr, "/metrics").await;
    assert_eq!(
        sample(&text, "volsync_volume_out_of_sync", LATE),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "volsync_missed_intervals_total", LATE),
        Some(0.0),
        "{text}"
    );
    let schedule = json!({"spec": {"trigger": {"manual": null, "schedule": "* * * * *"}}});
    late.patch("late", &PatchParams::default(), &Patch::Merge(schedule))
        .await
        .unwrap();
}

/// The labels of the destination `late` in VolSync's metrics.
const LATE: &str =
    r#"{obj_name="late",obj_namespace="sched",role="destination",method="blocksync"}"#;

/// The value of the sample `name` with `labels` in the exposition `text`.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = format!("{name}{labels} ");
    let line = text.lines().find(|l| l.starts_with(&series))?;
    line[series.len()..].trim().parse().ok()
}

/// The scheduled run of `late` started at its minute and is still running
/// when the next minute comes: from then on the volume is out of sync;
/// when it completes at last, it is in sync again and counted as a missed
/// interval, its duration (over a minute) in Go's format.
async fn an_overrun_is_out_of_sync_then_a_missed_interval(stage: &Stage) {
    let Stage {
        late,
        late_jobs,
        metrics_addr,
        ..
    } = stage;
    // The run starts within a minute of the manual one, and overruns
    // the minute after: two minutes at most.
    eventually_within(
        "the overrunning synchronization is out of sync",
        std::time::Duration::from_secs(150),
        || async {
            let text = http_get(*metrics_addr, "/metrics").await;
            (sample(&text, "volsync_volume_out_of_sync", LATE) == Some(1.0)).then_some(())
        },
    )
    .await;
    let status = late.get("late").await.unwrap().status.unwrap().sync;
    // Running still (its reason may say what holds it up: here the PVC
    // that no provisioner binds).
    assert!(status.synchronizing(), "{status:?}");
    let text = http_get(*metrics_addr, "/metrics").await;
    assert_eq!(
        sample(&text, "volsync_missed_intervals_total", LATE),
        Some(0.0),
        "counted when it completes: {text}"
    );

    let first = status.last_sync_time.clone().unwrap();
    job_controller_stand_in(late_jobs, "late-blocksync-dst").await;
    let status = eventually("the late synchronization completes", || async {
        let status = late.get("late").await.unwrap().status?.sync;
        (status.last_sync_time.as_ref()?.0 > first.0).then_some(status)
    })
    .await;
    let text = http_get(*metrics_addr, "/metrics").await;
    assert_eq!(
        sample(&text, "volsync_missed_intervals_total", LATE),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "volsync_volume_out_of_sync", LATE),
        Some(0.0),
        "{text}"
    );
    // Over a minute, as Go writes it: `1m4.2s`.
    let took = status.last_sync_duration.unwrap();
    let (minutes, seconds) = took.split_once('m').expect(&took);
    assert!(minutes.parse::<u32>().is_ok_and(|m| m >= 1), "{took}");
    let seconds = seconds.strip_suffix('s').expect(&took);
    assert!(seconds.parse::<f64>().is_ok_and(|s| s < 60.0), "{took}");
}

/// The mover creates its objects through the scoped host functions, runs,
/// completes, and its cleanup removes the Job; Events tell the story.
async fn a_manual_trigger_runs_the_mover_and_events_tell_it(stage: &Stage) {
    let Stage {
        client,
        destinations,
        jobs,
        secrets,
        services,
        pvcs,
        events,
        ..
    } = stage;
    namespace(client, "dst").await;
    create(
        destinations,
        "db",
        json!({
            "capacity": "1Gi",
            "trigger": {"manual": "first"},
            "mover": {"module": "blocksync"},
        }),
    )
    .await;

    let job = eventually("the agent Job exists", || async {
        jobs.get_opt("db-blocksync-dst").await.unwrap()
    })
    .await;
    let labels = job.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("wasmover.dev/owner-name").map(String::as_str),
        Some("db")
    );
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ReplicationDestination", "db")
    );
    assert!(secrets.get_opt("db-blocksync-key").await.unwrap().is_some());
    assert!(services.get_opt("db-blocksync").await.unwrap().is_some());
    assert!(pvcs.get_opt("db-dest").await.unwrap().is_some());
    // The operator's own: the metadata PVC, owned by the destination, where
    // its receiving agent keeps its state outside the replicated volume.
    let metadata = pvcs.get("db-wasmover-metadata").await.unwrap();
    let owner = &metadata.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ReplicationDestination", "db", Some(true))
    );
    let labels = metadata.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("wasmover")
    );
    let spec = metadata.spec.unwrap();
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "1Gi"
    );
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
    let pod = job.spec.clone().unwrap().template.spec.unwrap();
    let claim = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == "db-wasmover-metadata")
        })
        .expect("the agent mounts the metadata PVC");
    let container = &pod.containers[0];
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == claim.name)
        .unwrap();
    assert_eq!(mount.mount_path, "/var/lib/wasmover/state");
    let args = container.args.clone().unwrap_or_default();
    let at = args.iter().position(|a| a == "--state-dir").unwrap();
    assert_eq!(args[at + 1], "/var/lib/wasmover/state");
    eventually("the status says SyncInProgress", || async {
        let rd = destinations.get("db").await.unwrap();
        let reason = condition_reason(rd.status.as_ref().map(|s| &s.sync))?;
        (reason.0 == "SyncInProgress").then_some(())
    })
    .await;

    job_controller_stand_in(jobs, "db-blocksync-dst").await;
    let status = eventually("the synchronization completes", || async {
        let rd = destinations.get("db").await.unwrap();
        let status = rd.status?;
        status.sync.last_sync_time.is_some().then_some(status)
    })
    .await;
    assert_eq!(
        status.latest_image.as_ref().map(|i| i.name.as_str()),
        Some("db-dest")
    );
    assert_eq!(status.sync.last_manual_sync.as_deref(), Some("first"));
    assert_eq!(
        condition_reason(Some(&status.sync)).unwrap().0,
        "WaitingForManual"
    );
    // cleanup removed the Job, kept the PVC, the key and the Service.
    eventually("cleanup deleted the Job", || async {
        jobs.get_opt("db-blocksync-dst")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(pvcs.get_opt("db-dest").await.unwrap().is_some());
    eventually("Events tell the story", || async {
        let reasons: Vec<String> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        ["SyncStarted", "KeyCreated", "SyncCompleted"]
            .iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(())
    })
    .await;
}

/// The synchronization is in VolSync's metrics.
async fn the_synchronization_is_in_the_metrics(stage: &Stage) {
    let metrics_addr = stage.metrics_addr;
    let text = http_get(metrics_addr, "/metrics").await;
    assert!(
        text.contains(r#"volsync_sync_duration_seconds_count{obj_name="db",obj_namespace="dst",role="destination",method="blocksync"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"volsync_volume_out_of_sync{obj_name="db",obj_namespace="dst",role="destination",method="blocksync"} 0"#), "{text}");
    assert!(
        text.contains(r#"wasmover_kube_request_duration_seconds_count{verb="create",code="201"}"#),
        "{text}"
    );
    // The controllers' operations: reconciles and status writes.
    for operation in ["sync", "save"] {
        let series = format!(
            r#"wasmover_operation_duration_seconds_count{{role="destination",operation="{operation}"}} "#
        );
        assert!(text.contains(&series), "{series} in {text}");
    }
    assert!(
        http_get(metrics_addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

/// A new manual trigger value runs the mover again; paused, nothing runs,
/// and the condition says why.
async fn a_new_trigger_runs_it_again_and_a_pause_stops_it(stage: &Stage) {
    let Stage {
        destinations, jobs, ..
    } = stage;
    let merge = |v| Patch::Merge(v);
    destinations
        .patch(
            "db",
            &PatchParams::default(),
            &merge(json!({"spec": {"trigger": {"manual": "second"}}})),
        )
        .await
        .unwrap();
    eventually("the second run creates its Job", || async {
        jobs.get_opt("db-blocksync-dst").await.unwrap()
    })
    .await;
    job_controller_stand_in(jobs, "db-blocksync-dst").await;
    eventually("the second run completes", || async {
        let status = destinations.get("db").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("second")).then_some(())
    })
    .await;

    // Paused: nothing runs, and the condition says why.
    destinations
        .patch(
            "db",
            &PatchParams::default(),
            &merge(json!({"spec": {"paused": true, "trigger": {"manual": "third"}}})),
        )
        .await
        .unwrap();
    eventually("the pause is reported", || async {
        let rd = destinations.get("db").await.unwrap();
        let (_, message) = condition_reason(rd.status.as_ref().map(|s| &s.sync))?;
        (message == "synchronization is paused").then_some(())
    })
    .await;
    assert!(jobs.get_opt("db-blocksync-dst").await.unwrap().is_none());
}

/// A mover granted only PVCs is refused its Secret: a clean error, and the
/// user hears of the refusal.
async fn a_mover_is_refused_what_it_was_not_granted(stage: &Stage) {
    let Stage {
        destinations,
        secrets,
        events,
        ..
    } = stage;
    create(
        destinations,
        "narrow",
        json!({
            "capacity": "1Gi",
            "mover": {
                "module": "blocksync",
                "capabilities": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim"}],
            },
        }),
    )
    .await;
    let message = failure(destinations, "narrow").await;
    assert!(
        message.contains("Forbidden") && message.contains("Secret"),
        "{message}"
    );
    eventually("a MoverForbidden event is published", || async {
        let list = events.list(&Default::default()).await.unwrap();
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("MoverForbidden"))
            .then_some(())
    })
    .await;
    assert!(
        secrets
            .get_opt("narrow-blocksync-key")
            .await
            .unwrap()
            .is_none()
    );
}

/// An invalid CR gets a clear condition; the operator keeps working.
async fn an_invalid_object_gets_a_clear_condition(stage: &Stage) {
    let Stage {
        client, sources, ..
    } = stage;
    namespace(client, "src").await;
    create(
        sources,
        "app",
        json!({"sourcePVC": "data", "mover": {"module": "rclone"}}),
    )
    .await;
    let message = failure(sources, "app").await;
    assert!(message.contains("no mover named rclone"), "{message}");
    create(
        sources,
        "cron",
        // The CRD's pattern (VolSync's) lets 7 through; Sunday is 0.
        json!({"sourcePVC": "data", "trigger": {"schedule": "0 0 * * 7"}}),
    )
    .await;
    let message = failure(sources, "cron").await;
    assert!(message.contains("invalid schedule"), "{message}");
    assert!(message.contains("Sunday is 0"), "{message}");
    create(
        sources,
        "missing",
        json!({
            "sourcePVC": "absent",
            "mover": {"module": "blocksync", "parameters": {"address": "db-blocksync.dst"}},
        }),
    )
    .await;
    let message = failure(sources, "missing").await;
    assert!(
        message.contains("PersistentVolumeClaim absent does not exist"),
        "{message}"
    );
}

/// What a mover reports of its progress lands in status and metrics.
async fn what_a_mover_reports_lands_in_status_and_metrics(stage: &Stage) {
    let Stage {
        sources,
        metrics_addr,
        ..
    } = stage;
    let metrics_addr = *metrics_addr;
    create(
        sources,
        "reporting",
        json!({
            "sourcePVC": "data",
            "trigger": {"manual": "once"},
            "mover": {"module": "hostile", "parameters": {"hostile": "progress"}},
        }),
    )
    .await;
    let status = eventually("the reporting mover completes", || async {
        let status = sources.get("reporting").await.unwrap().status?;
        (status.sync.last_manual_sync.as_deref() == Some("once")).then_some(status.sync)
    })
    .await;
    assert_eq!(
        (status.bytes_transferred, status.bytes_total),
        (Some(4096), Some(4096))
    );
    assert_eq!(
        (status.files_transferred, status.files_to_transfer),
        (Some(2), Some(2))
    );
    // The transfer report it completed with: its tree digest and verdict.
    assert_eq!(
        (
            status.last_sync_digest.as_deref(),
            status.last_sync_verified
        ),
        (Some("5ca1ab1e".repeat(8).as_str()), Some(true))
    );
    assert!(
        status
            .module
            .as_deref()
            .is_some_and(|m| m.starts_with("hostile@sha256:")),
        "{:?}",
        status.module
    );
    let text = http_get(metrics_addr, "/metrics").await;
    assert!(
        text.contains(r#"wasmover_bytes_transferred_total{obj_name="reporting",obj_namespace="src",role="source",method="hostile"} 4096"#),
        "{text}"
    );
    assert!(
        text.contains(r#"wasmover_files_transferred_total{obj_name="reporting",obj_namespace="src",role="source",method="hostile"} 2"#),
        "{text}"
    );
    // The status's progress fields as gauges.
    for (field, value) in [
        ("bytesTransferred", 4096),
        ("bytesTotal", 4096),
        ("filesTransferred", 2),
        ("filesToTransfer", 2),
    ] {
        let sample = format!(
            r#"wasmover_sync_progress{{obj_name="reporting",obj_namespace="src",role="source",method="hostile",field="{field}"}} {value}"#
        );
        assert!(text.contains(&sample), "{sample} in {text}");
    }
}

/// A module that traps is reported, and stopped, like any failure.
async fn a_module_that_traps_is_a_failure(stage: &Stage) {
    let sources = &stage.sources;
    create(sources, "trap", json!({"sourcePVC": "data", "mover": {"module": "hostile", "parameters": {"hostile": "trap"}}})).await;
    let message = failure(sources, "trap").await;
    assert!(
        message.contains("hostile") && message.contains("deliberate panic in synchronize"),
        "{message}"
    );
}

/// The scheduled source ran at its minute and waits for the next. A
/// source created in the last second before a minute may already have run
/// at that minute (its creation time counts in whole seconds) before the
/// minute it was seen waiting for: the run looked for is one at or after
/// that minute.
async fn the_scheduled_source_ran_at_its_minute(stage: &Stage, next: Time) {
    let scheduled = &stage.scheduled;
    // Up to a minute away, and a run.
    let within = std::time::Duration::from_secs(90);
    let status = eventually_within(
        "the scheduled source runs at its minute",
        within,
        || async {
            let status = scheduled.get("every-minute").await.unwrap().status?;
            let ran = status.sync.last_sync_time.as_ref()?;
            (ran.0 >= next.0).then_some(status.sync)
        },
    )
    .await;
    assert!(status.next_sync_time.unwrap().0 > next.0);
}

/// Deleting runs the finalizer (cleanup) and leaves no object behind; what
/// its mover created (PVC, key, Service) goes with it: the operator
/// collects what lost its owner.
async fn deleting_collects_what_the_mover_created(stage: &Stage) {
    let Stage {
        metrics_addr,
        destinations,
        secrets,
        services,
        pvcs,
        sources,
        ..
    } = stage;
    let metrics_addr = *metrics_addr;
    destinations
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the destination is gone", || async {
        destinations
            .get_opt("db")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // The metadata PVC went with it, deleted by the operator.
    assert!(
        pvcs.get_opt("db-wasmover-metadata")
            .await
            .unwrap()
            .is_none()
    );
    eventually("the destination's objects are collected", || async {
        (pvcs.get_opt("db-dest").await.unwrap().is_none()
            && secrets.get_opt("db-blocksync-key").await.unwrap().is_none()
            && services.get_opt("db-blocksync").await.unwrap().is_none())
        .then_some(())
    })
    .await;
    let text = http_get(metrics_addr, "/metrics").await;
    assert!(text.contains("wasmover_orphans_deleted_total 3"), "{text}");
    let deleted =
        r#"wasmover_operation_duration_seconds_count{role="destination",operation="delete"} "#;
    assert!(text.contains(deleted), "{text}");
    sources
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the source is gone", || async {
        sources
            .get_opt("app")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
