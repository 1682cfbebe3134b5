//! The reconcilers of ReplicationSource and ReplicationDestination.
//!
//! Each reconcile decides whether a synchronization is due (schedule,
//! manual trigger, pause), asks the catalog for the one mover that claims
//! the spec, calls its `synchronize` until it completes (honouring
//! retry-after), then `cleanup`, and records status with server-side apply.
//! Modules run on blocking threads behind a semaphore; their Kubernetes
//! host calls go through [`KubeCluster`] scoped to the object's namespace.

use std::fmt::Debug;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Semaphore;
use wasmover_host::bindings::types::{
    self as wit, DestinationSpec, ImageKind, Outcome, Parameter, SourceSpec,
};
use wasmover_host::kube::{DEFAULT_KINDS, Owner, ScopedCluster};
use wasmover_host::{
    Catalog, CatalogError, Claimed, Grants, MoverLimits, MoverModule, Observer, Progress,
};

use crate::cluster::KubeCluster;
use crate::crd::{
    CONDITION_SYNCHRONIZING, CopyMethod, FINALIZER, ImageRef, MoverSpec, ReplicationDestination,
    ReplicationSource, SyncStatus, Trigger, reason,
};
use crate::gc;
use crate::leader::{Candidate, LeaseConfig};
use crate::metrics::{ErrorLabels, Metrics, ObjectLabels};
use crate::modules::{OciModules, Selected};

/// Field manager of the operator's status writes.
pub const MANAGER: &str = "wasmover";
/// How long to wait when a mover is in progress without a retry-after.
const DEFAULT_RETRY: Duration = Duration::from_secs(5);
/// Back-off after an error.
const ERROR_RETRY: Duration = Duration::from_secs(30);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A module run failed to be scheduled.
    #[error("mover task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Shared by every reconcile.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Movers by name.
    pub catalog: Arc<Catalog>,
    /// Modules from OCI registries; `None`: only built-in names.
    pub oci: Option<Arc<OciModules>>,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Bounds module runs in flight (each holds a blocking thread).
    pub runs: Semaphore,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// A context serving `catalog` (and OCI modules through `oci`),
    /// recording into `metrics`.
    pub fn new(
        client: Client,
        catalog: Catalog,
        oci: Option<Arc<OciModules>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: "wasmover".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            catalog: Arc::new(catalog),
            oci,
            runs: Semaphore::new(16),
            metrics,
        })
    }
}

/// What differs between the two kinds.
pub trait Replication:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// `source` or `destination`.
    const ROLE: &'static str;
    /// The mover section.
    fn mover(&self) -> &MoverSpec;
    /// When to run.
    fn trigger(&self) -> Option<&Trigger>;
    /// Whether synchronization is paused.
    fn paused(&self) -> bool;
    /// The common status, or its default.
    fn sync_status(&self) -> SyncStatus;
    /// Asks the catalog for the mover that claims this object.
    fn claim(
        &self,
        catalog: &Catalog,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: &dyn Fn(&MoverModule) -> Grants,
    ) -> Result<Claimed, CatalogError>;
    /// The whole status document to apply, with `image` as the latest image
    /// if there is a new one. Server-side apply drops what the operator's
    /// field manager no longer sends, so every write carries everything.
    fn status_document(&self, sync: &SyncStatus, image: Option<ImageRef>) -> serde_json::Value;
}

fn parameters(spec: &MoverSpec) -> Vec<Parameter> {
    spec.parameters
        .iter()
        .map(|(key, value)| Parameter {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

fn copy_method(method: CopyMethod) -> wit::CopyMethod {
    match method {
        CopyMethod::Direct => wit::CopyMethod::Direct,
        CopyMethod::Clone => wit::CopyMethod::Clone,
        CopyMethod::Snapshot => wit::CopyMethod::Snapshot,
    }
}

/// The accessors both kinds share field for field.
macro_rules! spec_accessors {
    () => {
        fn mover(&self) -> &MoverSpec {
            &self.spec.mover
        }
        fn trigger(&self) -> Option<&Trigger> {
            self.spec.trigger.as_ref()
        }
        fn paused(&self) -> bool {
            self.spec.paused
        }
        fn sync_status(&self) -> SyncStatus {
            self.status.clone().unwrap_or_default().sync
        }
    };
}

impl Replication for ReplicationSource {
    const ROLE: &'static str = "source";

    spec_accessors!();
    fn claim(
        &self,
        catalog: &Catalog,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: &dyn Fn(&MoverModule) -> Grants,
    ) -> Result<Claimed, CatalogError> {
        let spec = SourceSpec {
            namespace: self.namespace().unwrap_or_default(),
            name: self.name_any(),
            source_pvc: self.spec.source_pvc.clone(),
            copy_method: copy_method(self.spec.copy_method),
            storage_class_name: self.spec.storage_class_name.clone(),
            volume_snapshot_class_name: self.spec.volume_snapshot_class_name.clone(),
            access_modes: self.spec.access_modes.clone(),
            parameters: parameters(&self.spec.mover),
        };
        catalog.claim_source(&spec, selected, limits, grants)
    }
    fn status_document(&self, sync: &SyncStatus, _image: Option<ImageRef>) -> serde_json::Value {
        json!(sync)
    }
}

impl Replication for ReplicationDestination {
    const ROLE: &'static str = "destination";

    spec_accessors!();
    fn claim(
        &self,
        catalog: &Catalog,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: &dyn Fn(&MoverModule) -> Grants,
    ) -> Result<Claimed, CatalogError> {
        let spec = DestinationSpec {
            namespace: self.namespace().unwrap_or_default(),
            name: self.name_any(),
            destination_pvc: self.spec.destination_pvc.clone(),
            capacity: self.spec.capacity.clone(),
            copy_method: copy_method(self.spec.copy_method),
            storage_class_name: self.spec.storage_class_name.clone(),
            volume_snapshot_class_name: self.spec.volume_snapshot_class_name.clone(),
            access_modes: self.spec.access_modes.clone(),
            parameters: parameters(&self.spec.mover),
        };
        catalog.claim_destination(&spec, selected, limits, grants)
    }
    fn status_document(&self, sync: &SyncStatus, image: Option<ImageRef>) -> serde_json::Value {
        let mut doc = json!(sync);
        let latest = image.or_else(|| self.status.as_ref().and_then(|s| s.latest_image.clone()));
        if let Some(image) = latest {
            doc["latestImage"] = json!(image);
        }
        doc
    }
}

/// Publishes what a module reports (its own Events, refusals of its
/// Kubernetes calls) as Events on the replication object, and keeps its
/// latest progress for the status.
struct EventForwarder {
    recorder: Recorder,
    reference: ObjectReference,
    handle: tokio::runtime::Handle,
    progress: std::sync::Mutex<Option<Progress>>,
}

impl Observer for EventForwarder {
    fn event(&self, module: &str, event: &wasmover_host::Event) {
        let event = Event {
            type_: if event.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: event.reason.clone(),
            note: Some(format!("{module}: {}", event.note)),
            action: event.action.clone(),
            secondary: None,
        };
        // Runs on the module's blocking thread.
        if let Err(e) = self
            .handle
            .block_on(self.recorder.publish(&event, &self.reference))
        {
            tracing::warn!("cannot publish a module's event: {e}");
        }
    }

    fn progress(&self, _module: &str, progress: Progress) {
        *self.progress.lock().expect("never poisoned") = Some(progress);
    }
}

/// One run of a mover: what it did, which module ran, what it reported.
struct Ran {
    step: Step,
    /// `name@digest` of the module.
    module: String,
    progress: Option<Progress>,
    /// Set when `synchronize` completed: the transfer it reported, if any.
    synchronized: Option<Option<wit::TransferReport>>,
}

/// What one step of a mover did.
enum Step {
    /// `synchronize` is still running; look again after this long.
    Running(Duration),
    /// Synchronization and cleanup completed, with the image.
    Done(Option<ImageRef>),
}

fn limits(spec: &MoverSpec) -> MoverLimits {
    let mut limits = MoverLimits::default();
    if let Some(l) = &spec.limits {
        limits.cpu_time_ms = l.cpu_time_ms.unwrap_or(limits.cpu_time_ms);
        limits.memory_bytes = l.memory_bytes.unwrap_or(limits.memory_bytes);
    }
    limits
}

fn image(image: wit::Image) -> ImageRef {
    match image.kind {
        ImageKind::PersistentVolumeClaim => ImageRef {
            api_group: None,
            kind: "PersistentVolumeClaim".into(),
            name: image.name,
        },
        ImageKind::VolumeSnapshot => ImageRef {
            api_group: Some("snapshot.storage.k8s.io".into()),
            kind: "VolumeSnapshot".into(),
            name: image.name,
        },
    }
}

/// Runs the object's mover on a blocking thread: `synchronize`, and
/// `cleanup` once it completed (or only `cleanup` when `cleaning`).
async fn run_mover<K: Replication>(
    obj: &K,
    ctx: &Context,
    module: Selected,
    cleaning: bool,
) -> Result<Ran, String> {
    let _permit = ctx
        .runs
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let obj = obj.clone();
    let Selected {
        catalog,
        name: selected,
    } = module;
    let handle = tokio::runtime::Handle::current();
    let cluster = KubeCluster::new(ctx.client.clone(), handle.clone());
    let recorder = ctx.recorder.clone();
    let task = tokio::task::spawn_blocking(move || -> Result<Ran, String> {
        let namespace = obj.namespace().unwrap_or_default();
        let owner = Owner {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            name: obj.name_any(),
            uid: obj.uid(),
        };
        let kinds: Vec<(String, String)> = if obj.mover().capabilities.is_empty() {
            DEFAULT_KINDS
                .iter()
                .map(|(v, k)| (v.to_string(), k.to_string()))
                .collect()
        } else {
            obj.mover()
                .capabilities
                .iter()
                .filter(|c| {
                    DEFAULT_KINDS
                        .iter()
                        .any(|(v, k)| *v == c.api_version && *k == c.kind)
                })
                .map(|c| (c.api_version.clone(), c.kind.clone()))
                .collect()
        };
        let forwarder = Arc::new(EventForwarder {
            recorder: recorder.clone(),
            reference: obj.object_ref(&()),
            handle: handle.clone(),
            progress: Default::default(),
        });
        let events: Arc<dyn Observer> = forwarder.clone();
        let grants = |_: &MoverModule| {
            Grants::new()
                .with_cluster(ScopedCluster::new(
                    Arc::new(cluster.clone()),
                    namespace.clone(),
                    kinds.clone(),
                    owner.clone(),
                ))
                .with_observer(events.clone())
        };
        let Claimed {
            mut instance,
            mover,
            module,
        } = obj
            .claim(&catalog, selected.as_deref(), limits(obj.mover()), &grants)
            .map_err(|e| e.to_string())?;
        let module = match catalog.get(&module) {
            Some(m) => format!("{module}@{}", m.digest()),
            None => module,
        };
        let ran = |step: Step| Ran {
            step,
            module: module.clone(),
            progress: *forwarder.progress.lock().expect("never poisoned"),
            synchronized: None,
        };
        let cleanup =
            |instance: &mut wasmover_host::MoverInstance| -> Result<Option<Duration>, String> {
                match instance.cleanup(mover).map_err(|e| e.to_string())? {
                    Outcome::Completed(_) => Ok(None),
                    Outcome::InProgress(ms) => {
                        Ok(Some(ms.map_or(DEFAULT_RETRY, Duration::from_millis)))
                    }
                }
            };
        if cleaning {
            return Ok(ran(match cleanup(&mut instance)? {
                None => Step::Done(None),
                Some(wait) => Step::Running(wait),
            }));
        }
        Ok(
            match instance.synchronize(mover).map_err(|e| e.to_string())? {
                Outcome::InProgress(ms) => ran(Step::Running(
                    ms.map_or(DEFAULT_RETRY, Duration::from_millis),
                )),
                Outcome::Completed(done) => Ran {
                    synchronized: Some(done.transfer),
                    ..ran(match cleanup(&mut instance)? {
                        None => Step::Done(done.image.map(image)),
                        // Cleanup continues in the next reconciles.
                        Some(_) => Step::Running(Duration::ZERO),
                    })
                },
            },
        )
    });
    task.await.map_err(|e| e.to_string())?
}

fn condition(
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: CONDITION_SYNCHRONIZING.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// VolSync's metric labels of an object.
fn labels<K: Replication>(obj: &K) -> ObjectLabels {
    let module = &obj.mover().module;
    ObjectLabels {
        obj_name: obj.name_any(),
        obj_namespace: obj.namespace().unwrap_or_default(),
        role: K::ROLE.into(),
        method: if module.is_empty() {
            "auto".into()
        } else {
            module.clone()
        },
    }
}

/// Sets the condition, keeping its transition time if only the message
/// changed; returns whether the reason changed (worth an Event).
fn set_condition(sync: &mut SyncStatus, new: Condition) -> bool {
    match sync
        .conditions
        .iter_mut()
        .find(|c| c.type_ == CONDITION_SYNCHRONIZING)
    {
        Some(old) if old.reason == new.reason && old.status == new.status => {
            old.message = new.message;
            old.observed_generation = new.observed_generation;
            false
        }
        Some(old) => {
            *old = new;
            true
        }
        None => {
            sync.conditions.push(new);
            true
        }
    }
}

fn current_reason(sync: &SyncStatus) -> Option<&str> {
    sync.conditions
        .iter()
        .find(|c| c.type_ == CONDITION_SYNCHRONIZING)
        .map(|c| c.reason.as_str())
}

/// How long to wait still if the last synchronization of this generation
/// failed less than [`ERROR_RETRY`] ago.
fn backing_off(sync: &SyncStatus, generation: Option<i64>, now: Timestamp) -> Option<Duration> {
    let failed = sync.conditions.iter().find(|c| {
        c.type_ == CONDITION_SYNCHRONIZING
            && c.reason == reason::ERROR
            && c.observed_generation == generation
    })?;
    let since = Duration::try_from(now.duration_since(failed.last_transition_time.0)).ok()?;
    ERROR_RETRY
        .checked_sub(since)
        .filter(|wait| !wait.is_zero())
}

/// The next time `schedule` fires after `after`.
fn next_fire(schedule: &str, after: Timestamp) -> Result<Timestamp, String> {
    // `cron` wants seconds first; the CRD takes the usual five fields.
    let with_seconds = format!("0 {schedule}");
    let parsed = cron::Schedule::from_str(&with_seconds)
        .map_err(|e| format!("invalid schedule {schedule:?}: {e}"))?;
    let after = chrono::DateTime::from_timestamp(after.as_second(), 0).unwrap_or_default();
    let next = parsed
        .after(&after)
        .next()
        .ok_or_else(|| format!("schedule {schedule:?} never fires"))?;
    Timestamp::from_second(next.timestamp()).map_err(|e| e.to_string())
}

async fn publish<K: Replication>(
    ctx: &Context,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Synchronize".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!("cannot publish an event: {e}");
    }
}

async fn apply_status<K: Replication>(
    ctx: &Context,
    obj: &K,
    sync: &SyncStatus,
    image: Option<ImageRef>,
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": obj.status_document(sync, image),
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

/// Decides and advances one object.
async fn apply<K: Replication>(obj: Arc<K>, ctx: &Context) -> Result<Action, Error> {
    // The watch cache may not hold this object's last status write yet (a
    // reconcile triggered by an earlier write runs after the later one):
    // decide on what the API server has, or a finished run would repeat.
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let Some(obj) = api.get_opt(&obj.name_any()).await?.map(Arc::new) else {
        return Ok(Action::await_change());
    };
    let mut sync = obj.sync_status();
    let generation = obj.meta().generation;
    let now = Timestamp::now();
    let in_progress = current_reason(&sync)
        .is_some_and(|r| r == reason::SYNC_IN_PROGRESS || r == reason::CLEANING_UP);

    if obj.paused() && !in_progress {
        if set_condition(
            &mut sync,
            condition(
                "False",
                reason::WAITING_FOR_MANUAL,
                "synchronization is paused",
                generation,
            ),
        ) {
            publish(
                ctx,
                &*obj,
                false,
                "Paused",
                "synchronization is paused".into(),
            )
            .await;
        }
        apply_status(ctx, &*obj, &sync, None).await?;
        return Ok(Action::await_change());
    }

    // A failed synchronization is retried after the back-off, not on the
    // watch event of its own status write; a new spec retries at once.
    if let Some(wait) = backing_off(&sync, generation, now) {
        return Ok(Action::requeue(wait));
    }

    // Is a synchronization due?
    let manual = obj.trigger().and_then(|t| t.manual.clone());
    let schedule = obj.trigger().and_then(|t| t.schedule.clone());
    if !in_progress {
        let wait = if let Some(manual) = &manual {
            (sync.last_manual_sync.as_ref() == Some(manual))
                .then_some((reason::WAITING_FOR_MANUAL, None))
        } else if let Some(schedule) = &schedule {
            let base = sync
                .last_sync_time
                .as_ref()
                .or(obj.meta().creation_timestamp.as_ref())
                .map_or(now, |t| t.0);
            match next_fire(schedule, base) {
                Ok(next) if next > now => Some((reason::WAITING_FOR_SCHEDULE, Some(next))),
                Ok(due) => {
                    // Starting so late that the following run is due too.
                    if next_fire(schedule, due).is_ok_and(|after| after <= now) {
                        ctx.metrics
                            .missed_intervals
                            .get_or_create(&labels(&*obj))
                            .inc();
                    }
                    None
                }
                Err(message) => {
                    return fail(ctx, &*obj, sync, message).await;
                }
            }
        } else {
            None
        };
        if let Some((why, next)) = wait {
            sync.next_sync_time = next.map(Time);
            let message = match next {
                Some(next) => format!("next synchronization at {next}"),
                None => "waiting for spec.trigger.manual to change".into(),
            };
            set_condition(&mut sync, condition("False", why, message, generation));
            apply_status(ctx, &*obj, &sync, None).await?;
            return Ok(match next {
                Some(next) => Action::requeue(Duration::from_secs(
                    (next.as_second() - now.as_second()).max(1) as u64,
                )),
                None => Action::await_change(),
            });
        }
    }
    // Before starting: a module that cannot be had fails without a start,
    // so the status holds still and the back-off is not cut short.
    let module = match crate::modules::select(ctx, &*obj, &mut sync).await {
        Ok(module) => module,
        Err(unavailable) => {
            fail(ctx, &*obj, sync, unavailable.message).await?;
            return Ok(Action::requeue(unavailable.retry));
        }
    };
    if !in_progress {
        // Starting a new synchronization.
        sync.last_sync_start_time = Some(Time(now));
        sync.latest_mover_status = None;
        sync.bytes_transferred = None;
        sync.bytes_total = None;
        sync.files_transferred = None;
        sync.files_to_transfer = None;
        set_condition(
            &mut sync,
            condition(
                "True",
                reason::SYNC_IN_PROGRESS,
                "synchronization started",
                generation,
            ),
        );
        publish(
            ctx,
            &*obj,
            false,
            "SyncStarted",
            format!("{} synchronization started", K::ROLE),
        )
        .await;
        apply_status(ctx, &*obj, &sync, None).await?;
    }

    let cleaning = current_reason(&sync) == Some(reason::CLEANING_UP);
    let ran = run_mover(&*obj, ctx, module, cleaning).await.map(|ran| {
        sync.module = Some(ran.module);
        if let Some(progress) = ran.progress {
            sync.bytes_transferred = Some(progress.bytes_done);
            sync.bytes_total = Some(progress.bytes_total);
            sync.files_transferred = Some(progress.entries_done);
            sync.files_to_transfer = Some(progress.entries_total);
        }
        if let Some(transfer) = ran.synchronized {
            // What the finished synchronization's transfer reported (its
            // agents, for blocksync) outranks progress along the way.
            if let Some(t) = &transfer {
                sync.bytes_transferred = Some(t.bytes_on_wire);
                sync.bytes_total = Some(t.bytes_total);
                sync.files_transferred = Some(t.files_transferred);
                sync.files_to_transfer = Some(t.files_transferred);
            }
            sync.last_sync_digest = transfer
                .as_ref()
                .map(|t| t.tree_digest.clone())
                .filter(|d| !d.is_empty());
            sync.last_sync_verified = transfer.map(|t| t.verified);
        }
        ran.step
    });
    match ran {
        Ok(Step::Running(wait)) => {
            let (why, message) = if wait.is_zero() || cleaning {
                (reason::CLEANING_UP, "cleaning up after the synchronization")
            } else {
                (reason::SYNC_IN_PROGRESS, "the mover is synchronizing")
            };
            set_condition(&mut sync, condition("True", why, message, generation));
            apply_status(ctx, &*obj, &sync, None).await?;
            Ok(Action::requeue(wait.max(Duration::from_secs(1))))
        }
        Ok(Step::Done(image)) => {
            let started = sync.last_sync_start_time.as_ref().map_or(now, |t| t.0);
            sync.last_sync_time = Some(Time(now));
            let seconds = (now - started)
                .total(k8s_openapi::jiff::Unit::Second)
                .unwrap_or(0.0);
            sync.last_sync_duration = Some(format!("{seconds:.1}s"));
            ctx.metrics
                .sync_duration
                .get_or_create(&labels(&*obj))
                .observe(seconds);
            ctx.metrics.out_of_sync.get_or_create(&labels(&*obj)).set(0);
            ctx.metrics
                .bytes_transferred
                .get_or_create(&labels(&*obj))
                .inc_by(sync.bytes_transferred.unwrap_or(0));
            ctx.metrics
                .files_transferred
                .get_or_create(&labels(&*obj))
                .inc_by(sync.files_transferred.unwrap_or(0));
            sync.last_manual_sync = manual.clone();
            sync.latest_mover_status = Some(crate::crd::MoverStatus {
                result: "Successful".into(),
                logs: String::new(),
            });
            let (why, next) = match (&manual, &schedule) {
                (Some(_), _) => (reason::WAITING_FOR_MANUAL, None),
                (None, Some(schedule)) => {
                    (reason::WAITING_FOR_SCHEDULE, next_fire(schedule, now).ok())
                }
                (None, None) => (reason::WAITING_FOR_SCHEDULE, Some(now)),
            };
            sync.next_sync_time = next.map(Time);
            set_condition(
                &mut sync,
                condition("False", why, "synchronization completed", generation),
            );
            publish(
                ctx,
                &*obj,
                false,
                "SyncCompleted",
                format!("{} synchronization completed", K::ROLE),
            )
            .await;
            apply_status(ctx, &*obj, &sync, image).await?;
            Ok(match next {
                Some(next) => Action::requeue(Duration::from_secs(
                    (next.as_second() - now.as_second()).max(1) as u64,
                )),
                None => Action::await_change(),
            })
        }
        Err(message) => fail(ctx, &*obj, sync, message).await,
    }
}

/// Records a failure as the condition, an Event and the mover status.
async fn fail<K: Replication>(
    ctx: &Context,
    obj: &K,
    mut sync: SyncStatus,
    message: String,
) -> Result<Action, Error> {
    tracing::warn!(object = %obj.name_any(), "{message}");
    ctx.metrics.out_of_sync.get_or_create(&labels(obj)).set(1);
    let generation = obj.meta().generation;
    if set_condition(
        &mut sync,
        condition("False", reason::ERROR, message.clone(), generation),
    ) {
        publish(ctx, obj, true, "SyncFailed", message.clone()).await;
    }
    sync.latest_mover_status = Some(crate::crd::MoverStatus {
        result: "Failed".into(),
        logs: message,
    });
    apply_status(ctx, obj, &sync, None).await?;
    Ok(Action::requeue(ERROR_RETRY))
}

/// Calls the mover's `cleanup` before the object goes.
async fn cleanup<K: Replication>(obj: Arc<K>, ctx: &Context) -> Result<Action, Error> {
    let selected = crate::modules::select(ctx, &*obj, &mut obj.sync_status()).await;
    let ran = match selected {
        Ok(module) => run_mover(&*obj, ctx, module, true)
            .await
            .map(|ran| ran.step),
        Err(unavailable) => Err(unavailable.message),
    };
    match ran {
        Ok(Step::Done(_)) => Ok(Action::await_change()),
        Ok(Step::Running(wait)) => Err(Error::Kube(kube::Error::Service(
            format!("cleanup still running; retrying in {wait:?}").into(),
        ))),
        Err(message) => {
            // A mover that cannot be found or fails must not block deletion
            // forever; what it created is collected as orphans.
            tracing::warn!(object = %obj.name_any(), "cleanup failed, deleting anyway: {message}");
            publish(ctx, &*obj, true, "CleanupFailed", message).await;
            Ok(Action::await_change())
        }
    }
}

async fn reconcile<K: Replication>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj, &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy<K: Replication>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(object = %obj.name_any(), "reconcile failed: {error}");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            role: K::ROLE.into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(5))
}

/// How the operator runs besides its controllers.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Take the leader Lease before reconciling (for several replicas).
    pub leader: Option<LeaseConfig>,
    /// How often to delete objects whose owner is gone.
    pub gc_interval: Duration,
    /// Modules from OCI registries; `None`: only built-in names.
    pub oci: Option<Arc<OciModules>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            leader: None,
            gc_interval: Duration::from_secs(300),
            oci: None,
        }
    }
}

/// Runs both controllers until the process is told to stop (SIGTERM or
/// Ctrl+C: reconciles in flight finish, then the Lease is released) or
/// loses the leader Lease (an error: the replica should restart and
/// stand by).
pub async fn run(
    client: Client,
    catalog: Catalog,
    metrics: Arc<Metrics>,
    options: RunOptions,
) -> anyhow::Result<()> {
    let ctx = Context::new(client.clone(), catalog, options.oci, metrics.clone());
    let sources: Api<ReplicationSource> = Api::all(client.clone());
    let destinations: Api<ReplicationDestination> = Api::all(client.clone());
    for (kind, check) in [
        (
            "ReplicationSource",
            sources.list(&Default::default()).await.map(|_| ()),
        ),
        (
            "ReplicationDestination",
            destinations.list(&Default::default()).await.map(|_| ()),
        ),
    ] {
        match check {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
                "the API server does not serve {kind}s: install the CRDs with kubectl apply -f operator/yaml/crds.yaml"
            ),
            Err(e) => anyhow::bail!("cannot list {kind}s: {e}"),
        }
    }
    // A replica standing by is healthy and ready; it just does not act.
    metrics.set_ready();
    let candidate = options
        .leader
        .map(|config| Candidate::new(client.clone(), config));
    if let Some(candidate) = &candidate {
        let config = candidate.config();
        tracing::info!(lease = %config.name, identity = %config.identity, "waiting for the leader lease");
        candidate.acquire().await;
        tracing::info!(lease = %config.name, identity = %config.identity, "leading");
        metrics.leader.set(1);
    }

    // Stops the controllers: a signal, or the Lease lost. Everything runs
    // in this future (no spawned tasks), so dropping it stops it all.
    let (stop, stopped) = tokio::sync::watch::channel(None::<String>);
    let shutdown = |mut stopped: tokio::sync::watch::Receiver<Option<String>>| async move {
        let _ = stopped.wait_for(Option::is_some).await;
    };
    let source = Controller::new(sources, watcher::Config::default())
        .shutdown_on_signal()
        .graceful_shutdown_on(shutdown(stopped.clone()))
        .run(
            reconcile::<ReplicationSource>,
            error_policy::<ReplicationSource>,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let destination = Controller::new(destinations, watcher::Config::default())
        .shutdown_on_signal()
        .graceful_shutdown_on(shutdown(stopped.clone()))
        .run(
            reconcile::<ReplicationDestination>,
            error_policy::<ReplicationDestination>,
            ctx,
        )
        .for_each(|_| futures::future::ready(()));
    let hold = async {
        if let Some(candidate) = &candidate {
            let why = candidate.hold().await;
            tracing::error!("{why}; stopping the controllers");
            stop.send_replace(Some(why));
        }
        // Until the controllers have wound down.
        futures::future::pending::<()>().await;
    };
    tokio::select! {
        _ = async { tokio::join!(source, destination) } => {}
        _ = hold => unreachable!("holding the lease never ends by itself"),
        _ = collect_periodically(client, metrics.clone(), options.gc_interval) => {
            unreachable!("the collector never ends by itself")
        }
    }
    metrics.leader.set(0);
    let lost = stopped.borrow().clone();
    match (lost, candidate) {
        (Some(why), _) => {
            anyhow::bail!("lost leadership: {why}; exiting so that another replica leads")
        }
        (None, Some(candidate)) => {
            candidate.release().await;
            Ok(())
        }
        (None, None) => Ok(()),
    }
}

/// Deletes orphans every `interval` (the first pass right away).
async fn collect_periodically(client: Client, metrics: Arc<Metrics>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match gc::collect_orphans(&client, DEFAULT_KINDS).await {
            Ok(collected) => {
                tracing::debug!(
                    examined = collected.examined,
                    deleted = collected.deleted,
                    "collected orphans"
                );
                metrics.orphans_deleted.inc_by(collected.deleted as u64);
            }
            Err(e) => tracing::warn!("collecting orphans failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_fire_at_the_next_matching_minute() {
        let base = Timestamp::from_second(1_700_000_000).unwrap(); // 22:13:20 UTC
        let next = next_fire("*/5 * * * *", base).unwrap();
        assert_eq!(next.as_second(), 1_700_000_100); // 22:15:00
        assert!(
            next_fire("not a cron", base)
                .unwrap_err()
                .contains("invalid schedule")
        );
    }

    #[test]
    fn a_failure_backs_off_until_the_spec_changes() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let mut sync = SyncStatus::default();
        let mut failed = condition("False", reason::ERROR, "boom", Some(3));
        failed.last_transition_time = Time(Timestamp::from_second(1_700_000_000 - 10).unwrap());
        set_condition(&mut sync, failed);
        assert_eq!(
            backing_off(&sync, Some(3), now),
            Some(ERROR_RETRY - Duration::from_secs(10))
        );
        // A new generation (a new manual trigger, say) retries at once.
        assert_eq!(backing_off(&sync, Some(4), now), None);
        // So does the same generation once the back-off has passed.
        let later = Timestamp::from_second(1_700_000_000 + ERROR_RETRY.as_secs() as i64).unwrap();
        assert_eq!(backing_off(&sync, Some(3), later), None);
        // Other reasons never back off.
        set_condition(
            &mut sync,
            condition("True", reason::SYNC_IN_PROGRESS, "running", Some(3)),
        );
        assert_eq!(backing_off(&sync, Some(3), now), None);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_the_reason_holds() {
        let mut sync = SyncStatus::default();
        assert!(set_condition(
            &mut sync,
            condition("True", reason::SYNC_IN_PROGRESS, "a", None)
        ));
        let first = sync.conditions[0].last_transition_time.clone();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!set_condition(
            &mut sync,
            condition("True", reason::SYNC_IN_PROGRESS, "b", None)
        ));
        assert_eq!(sync.conditions[0].last_transition_time, first);
        assert_eq!(sync.conditions[0].message, "b");
        assert!(set_condition(
            &mut sync,
            condition("False", reason::ERROR, "c", None)
        ));
        assert_eq!(sync.conditions.len(), 1);
    }
}
