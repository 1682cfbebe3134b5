//! The reconciler of both kinds: the thin `reconcile` (span, finalizer),
//! `apply` (decide, then act on the decision) and `cleanup` before the
//! object goes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use tracing::Instrument;

use super::decide::{
    Decision, ERROR_RETRY, after_completion, decide, out_of_sync, overdue, until_overdue,
};
use super::metadata;
use super::mover::{Step, run_mover};
use super::status::{apply_status, go_duration, labels, publish, record, start, synchronizing};
use super::{Context, Error, Replication};
use super::{progress, stuck};
use crate::crd::{FINALIZER, ImageRef, MoverStatus, SyncStatus, reason};
use crate::metrics::Operation;
use crate::modules::{Selected, Unavailable};

/// Reconciles one object, in a span naming it, under the finalizer that
/// runs the mover's `cleanup` before deletion; times either as an
/// [`Operation`].
pub(super) async fn reconcile<K: Replication>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let span = tracing::info_span!(
        "reconcile",
        kind = %K::kind(&()),
        object = %format_args!("{namespace}/{}", obj.name_any()),
    );
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    if !obj.served() {
        return release(&api, &obj).instrument(span).await;
    }
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => {
                let _timer = ctx.metrics.time(K::ROLE, Operation::Sync);
                apply(obj, &ctx).await
            }
            Finalizer::Cleanup(obj) => {
                let _timer = ctx.metrics.time(K::ROLE, Operation::Delete);
                cleanup(obj, &ctx).await
            }
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The module for `obj`, recording its resolution in `sync`.
async fn select<K: Replication>(
    ctx: &Context,
    obj: &K,
    sync: &mut SyncStatus,
) -> Result<Selected, Unavailable> {
    crate::modules::select(
        &ctx.client,
        &ctx.catalog,
        ctx.oci.as_deref(),
        obj.requester(),
        sync,
    )
    .await
}

/// Decides what the object needs, then does it.
async fn apply<K: Replication>(obj: Arc<K>, ctx: &Context) -> Result<Action, Error> {
    // The watch cache may not hold this object's last status write yet (a
    // reconcile triggered by an earlier write runs after the later one):
    // decide on what the API server has, or a finished run would repeat.
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let Some(obj) = api.get_opt(&obj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let obj = &obj;
    let mut sync = obj.sync_status();
    let generation = obj.meta().generation;
    let now = Timestamp::now();
    // Every object has its series from its first reconcile, as in VolSync.
    let out_of_sync_gauge = ctx.metrics.track(&labels(obj));
    if out_of_sync(obj, &sync, now) {
        out_of_sync_gauge.set(1);
    }
    if let Some(message) = obj.invalid() {
        return refuse(ctx, obj, sync, Error::InvalidSpec(message)).await;
    }
    let limits = match ctx.policy.admit(obj.mover()) {
        Ok(limits) => limits,
        Err(refusal) => return refuse(ctx, obj, sync, Error::Policy(refusal)).await,
    };

    // `None`: a new synchronization; `Some(cleaning)`: one in progress.
    let continuing = match decide(obj, &sync, now) {
        Decision::Paused => {
            let paused = "synchronization is paused";
            let condition = synchronizing("False", reason::WAITING_FOR_MANUAL, paused, generation);
            if sync.set_condition(condition) {
                publish(ctx, obj, false, "Paused", paused.into()).await;
            }
            apply_status(ctx, obj, &sync, None).await?;
            // Paused, a schedule still falls behind: mark when it does.
            return Ok(
                until_overdue(obj, &sync, now).map_or_else(Action::await_change, Action::requeue)
            );
        }
        Decision::BackOff(wait) => return Ok(Action::requeue(wait)),
        Decision::Idle(wait) => {
            sync.next_sync_time = wait.next.map(Time);
            sync.set_condition(synchronizing(
                "False",
                wait.reason,
                wait.message(),
                generation,
            ));
            apply_status(ctx, obj, &sync, None).await?;
            return Ok(wait.action(now));
        }
        Decision::InvalidSchedule(message) => {
            return fail(ctx, obj, sync, Error::InvalidSchedule(message)).await;
        }
        Decision::Start => None,
        Decision::Continue { cleaning } => Some(cleaning),
    };

    // Before starting: a module that cannot be had fails without a start,
    // so the status holds still and the back-off is not cut short.
    let module = match select(ctx, obj, &mut sync).await {
        Ok(module) => module,
        Err(unavailable) => {
            fail(ctx, obj, sync, Error::Module(unavailable.error)).await?;
            return Ok(Action::requeue(unavailable.retry));
        }
    };
    if continuing.is_none() {
        start(&mut sync, now, generation);
        let note = format!("{} synchronization started", K::ROLE);
        publish(ctx, obj, false, "SyncStarted", note).await;
        apply_status(ctx, obj, &sync, None).await?;
    }

    let cleaning = continuing.unwrap_or(false);
    // The agents' Pods, listed before the mover runs: once it sees their
    // Job finished, its cleanup deletes them, and with them the log that
    // holds their summary.
    let object = progress::key(obj);
    let pods = match cleaning {
        true => None,
        false => stuck::agent_pods(&ctx.client, &object.1, &object.0, &object.2).await,
    };
    let started = sync.last_sync_start_time.as_ref().map_or(now, |t| t.0);
    let agents = pods.as_deref().unwrap_or_default();
    if let Some(live) = ctx
        .progress
        .observe(&ctx.client, &object, agents, started)
        .await
    {
        progress::set_live(&mut sync, &live);
    }
    let ran = run_mover(obj, ctx, module, limits, cleaning).await;
    match ran.map(|ran| record(&mut sync, ran)) {
        Ok(Step::Running(wait)) => {
            let (why, message) = if wait.is_zero() || cleaning {
                (reason::CLEANING_UP, "cleaning up after the synchronization")
            } else {
                (reason::SYNC_IN_PROGRESS, "the mover is synchronizing")
            };
            // What holds up a synchronization (not a cleanup, whose
            // reason says which export continues).
            let namespace = obj.namespace().unwrap_or_default();
            let kind = K::kind(&());
            let stuck = match &pods {
                Some(pods) if !cleaning && !wait.is_zero() => {
                    stuck::diagnose(&ctx.client, &namespace, &kind, &obj.name_any(), pods, now)
                        .await
                }
                _ => None,
            };
            match stuck {
                Some(stuck) => {
                    let changed = sync.set_condition(synchronizing(
                        "True",
                        &stuck.reason,
                        stuck.message.clone(),
                        generation,
                    ));
                    if changed {
                        tracing::warn!(object = %obj.name_any(), "{}", stuck.message);
                        publish(ctx, obj, true, &stuck.reason, stuck.message).await;
                    }
                }
                None => {
                    sync.set_condition(synchronizing("True", why, message, generation));
                }
            }
            progress::set_gauges(&ctx.metrics, &labels(obj), &sync);
            apply_status(ctx, obj, &sync, None).await?;
            // Back when the mover asks, or when the run falls overdue.
            let wait = until_overdue(obj, &sync, now).map_or(wait, |left| wait.min(left));
            Ok(Action::requeue(wait.max(Duration::from_secs(1))))
        }
        Ok(Step::Done(image)) => complete(ctx, obj, sync, image, now).await,
        Err(error) => fail(ctx, obj, sync, error).await,
    }
}

/// Records a completed synchronization (status, metrics, Event) and waits
/// for the next trigger; one completing after the following scheduled
/// start counts as a missed interval.
async fn complete<K: Replication>(
    ctx: &Context,
    obj: &K,
    mut sync: SyncStatus,
    image: Option<ImageRef>,
    now: Timestamp,
) -> Result<Action, Error> {
    let labels = labels(obj);
    let metrics = &ctx.metrics;
    if overdue(obj, &sync, now) {
        metrics.missed_intervals.get_or_create(&labels).inc();
    }
    let started = sync.last_sync_start_time.as_ref().map_or(now, |t| t.0);
    sync.last_sync_time = Some(Time(now));
    // Another replica's clock may run behind: never a negative duration.
    let took = now.duration_since(started).max(SignedDuration::ZERO);
    sync.last_sync_duration = Some(go_duration(took));
    let seconds = took.as_secs_f64();
    metrics
        .sync_duration
        .get_or_create(&labels)
        .observe(seconds);
    metrics.out_of_sync.get_or_create(&labels).set(0);
    metrics
        .bytes_transferred
        .get_or_create(&labels)
        .inc_by(sync.bytes_transferred.unwrap_or(0));
    metrics
        .files_transferred
        .get_or_create(&labels)
        .inc_by(sync.files_transferred.unwrap_or(0));
    sync.last_manual_sync = obj.trigger().and_then(|t| t.manual.clone());
    // What its agents said of the run, as VolSync's mover Pod's log.
    sync.latest_mover_status = Some(MoverStatus {
        result: "Successful".into(),
        logs: ctx.progress.finish(&progress::key(obj)).unwrap_or_default(),
    });
    progress::set_gauges(metrics, &labels, &sync);
    let wait = after_completion(obj, now);
    sync.next_sync_time = wait.next.map(Time);
    let generation = obj.meta().generation;
    sync.set_condition(synchronizing(
        "False",
        wait.reason,
        "synchronization completed",
        generation,
    ));
    let note = format!("{} synchronization completed", K::ROLE);
    publish(ctx, obj, false, "SyncCompleted", note).await;
    apply_status(ctx, obj, &sync, image).await?;
    Ok(wait.action(now))
}

/// Records a failure as the condition, an Event and the mover status, and
/// counts it; retries after the back-off.
async fn fail<K: Replication>(
    ctx: &Context,
    obj: &K,
    mut sync: SyncStatus,
    error: Error,
) -> Result<Action, Error> {
    let message = error.to_string();
    tracing::warn!(object = %obj.name_any(), "{message}");
    ctx.count_error(K::ROLE, &error);
    ctx.metrics.out_of_sync.get_or_create(&labels(obj)).set(1);
    report_limit(ctx, obj, &error).await;
    let generation = obj.meta().generation;
    if sync.set_condition(synchronizing(
        "False",
        reason::ERROR,
        message.clone(),
        generation,
    )) {
        publish(ctx, obj, true, "SyncFailed", message.clone()).await;
    }
    // The error, then what the agents that ended said of it.
    let logs = match ctx.progress.finish(&progress::key(obj)) {
        Some(agents) => format!("{message}\n{agents}"),
        None => message,
    };
    sync.latest_mover_status = Some(MoverStatus {
        result: "Failed".into(),
        logs,
    });
    apply_status(ctx, obj, &sync, None).await?;
    Ok(Action::requeue(ERROR_RETRY))
}

/// Records that the object cannot run as it is, the policy refusing it
/// (reason `PolicyRefused`) or its spec invalid (`Error`, Event
/// `InvalidSpec`): the condition names the rule; a change of it is an
/// Event and counted. Nothing runs until the spec (or the policy, with the
/// operator's restart) changes.
async fn refuse<K: Replication>(
    ctx: &Context,
    obj: &K,
    mut sync: SyncStatus,
    error: Error,
) -> Result<Action, Error> {
    let message = error.to_string();
    let (why, event) = match error {
        Error::Policy(_) => (reason::POLICY_REFUSED, reason::POLICY_REFUSED),
        _ => (reason::ERROR, "InvalidSpec"),
    };
    let generation = obj.meta().generation;
    let known = sync
        .conditions
        .iter()
        .any(|c| c.reason == why && c.message == message);
    sync.set_condition(synchronizing("False", why, message.clone(), generation));
    if !known {
        tracing::warn!(object = %obj.name_any(), "{message}");
        ctx.count_error(K::ROLE, &error);
        publish(ctx, obj, true, event, message).await;
    }
    ctx.metrics.out_of_sync.get_or_create(&labels(obj)).set(1);
    apply_status(ctx, obj, &sync, None).await?;
    Ok(Action::await_change())
}

/// A `LimitExceeded` Warning naming the limit, when a limit stopped the
/// mover.
async fn report_limit<K: Replication>(ctx: &Context, obj: &K, error: &Error) {
    if let Some(limit) = error.limit() {
        publish(ctx, obj, true, "LimitExceeded", limit.to_string()).await;
    }
}

/// Calls the mover's `cleanup` before the object goes; while it is in
/// progress, [`Error::CleanupInProgress`] keeps the finalizer.
async fn cleanup<K: Replication>(obj: Arc<K>, ctx: &Context) -> Result<Action, Error> {
    // An invalid spec names no mover to clean up after; what an earlier
    // one created is owned by the object and goes with it.
    if let Some(message) = obj.invalid() {
        tracing::info!(object = %obj.name_any(), "deleted without a mover cleanup: {message}");
        return Ok(Action::await_change());
    }
    ctx.progress.finish(&progress::key(&*obj));
    // A module the policy refuses does not run, not even its cleanup.
    let limits = ctx.policy.admit(obj.mover()).map_err(Error::Policy);
    let ran = match limits {
        Err(error) => Err(error),
        Ok(limits) => match select(ctx, &*obj, &mut obj.sync_status()).await {
            Ok(module) => run_mover(&*obj, ctx, module, limits, true)
                .await
                .map(|ran| ran.step),
            Err(unavailable) => Err(Error::Module(unavailable.error)),
        },
    };
    let done = match ran {
        Ok(Step::Done(_)) => Ok(Action::await_change()),
        Ok(Step::Running(wait)) => return Err(Error::CleanupInProgress(wait)),
        Err(error) => {
            // A mover that cannot be found or fails must not block deletion
            // forever; what it created is collected as orphans.
            tracing::warn!(object = %obj.name_any(), "cleanup failed, deleting anyway: {error}");
            report_limit(ctx, &*obj, &error).await;
            publish(ctx, &*obj, true, "CleanupFailed", error.to_string()).await;
            Ok(Action::await_change())
        }
    };
    // The metadata PVC goes with its object, also where no garbage
    // collector follows its owner reference.
    metadata::delete(ctx, &*obj).await?;
    done
}

/// Lets go of an object this operator does not serve (a VolSync object
/// whose provider is another): left untouched, or, if it was served until
/// its provider changed, only the finalizer removed (no mover cleanup; what
/// its mover created is owned by the object and goes with it).
async fn release<K: Replication>(api: &Api<K>, obj: &K) -> Result<Action, Error> {
    let finalizers = obj.finalizers();
    if finalizers.iter().any(|f| f == FINALIZER) {
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
        // The resourceVersion makes it a conflict if the list changed since.
        let patch = serde_json::json!({"metadata": {
            "finalizers": kept,
            "resourceVersion": obj.resource_version(),
        }});
        api.patch(
            &obj.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await?;
        tracing::info!(object = %obj.name_any(), "no longer served (another provider); finalizer removed");
    }
    Ok(Action::await_change())
}
