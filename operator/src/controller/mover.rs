//! Running an object's mover: claiming it from the catalog with grants
//! scoped to the object, calling `synchronize` and `cleanup` on a blocking
//! thread within the limits of its spec, and forwarding what the module
//! reports as Events on the object.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::Instrument;
use wasmover_host::bindings::types::{self as wit, ImageKind, Outcome};
use wasmover_host::error::{MAX_EVENT_NOTE_BYTES, bounded};
use wasmover_host::kube::{DEFAULT_KINDS, Owner, Refusal, Scope, ScopedCluster};
use wasmover_host::{
    Capability, Claimed, Grants, MoverInstance, MoverLimits, MoverModule, Observer, Progress,
};

use super::metadata;
use super::replication::parameters;
use super::{Context, Error, Replication};
use crate::builtin::BUILTIN;
use crate::cluster::KubeCluster;
use crate::crd::{ImageRef, MoverSpec};
use crate::metrics::{Metrics, RefusalLabels};
use crate::modules::Selected;
use crate::workload::{self, PinnedModule};

/// How long to wait when a mover is in progress without a retry-after.
const DEFAULT_RETRY: Duration = Duration::from_secs(5);

/// Publishes what a module reports (its own Events, refusals of its
/// Kubernetes calls) as Events on the replication object, and keeps its
/// latest progress for the status.
struct EventForwarder {
    recorder: Recorder,
    reference: ObjectReference,
    handle: tokio::runtime::Handle,
    progress: std::sync::Mutex<Option<Progress>>,
    metrics: Arc<Metrics>,
    role: &'static str,
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
            note: Some(bounded(
                format!("{module}: {}", event.note),
                MAX_EVENT_NOTE_BYTES,
            )),
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

    fn refused(&self, module: &str, refusal: &Refusal) {
        self.metrics
            .refusals
            .get_or_create(&RefusalLabels {
                role: self.role.into(),
                rule: refusal.rule.into(),
            })
            .inc();
        self.event(
            module,
            &wasmover_host::Event {
                warning: true,
                reason: "MoverForbidden".into(),
                action: "Authorize".into(),
                note: format!("refused: {refusal}"),
            },
        );
    }

    fn progress(&self, _module: &str, progress: Progress) {
        *self.progress.lock().expect("never poisoned") = Some(progress);
    }
}

/// One run of a mover: what it did, which module ran, what it reported.
pub(super) struct Ran {
    /// What it did.
    pub step: Step,
    /// `name@digest` of the module.
    pub module: String,
    /// Its version, contract and optional exports, as it reports them.
    pub version: String,
    /// The latest progress it reported.
    pub progress: Option<Progress>,
    /// Set when `synchronize` completed: the transfer it reported, if any.
    pub synchronized: Option<Option<wit::TransferReport>>,
}

/// What one step of a mover did.
pub(super) enum Step {
    /// `synchronize` is still running; look again after this long.
    Running(Duration),
    /// Synchronization and cleanup completed, with the image.
    Done(Option<ImageRef>),
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

/// The kinds the object's mover may touch: those it asks for that the
/// operator allows, or all the operator allows.
fn kinds(spec: &MoverSpec) -> Vec<(String, String)> {
    if spec.capabilities.is_empty() {
        DEFAULT_KINDS
            .iter()
            .map(|(v, k)| (v.to_string(), k.to_string()))
            .collect()
    } else {
        spec.capabilities
            .iter()
            .filter(|c| {
                DEFAULT_KINDS
                    .iter()
                    .any(|(v, k)| *v == c.api_version && *k == c.kind)
            })
            .map(|c| (c.api_version.clone(), c.kind.clone()))
            .collect()
    }
}

/// The module agents run, as the operator pinned it, or why agents cannot
/// run this module.
fn pin(
    pinned: Option<&str>,
    module: &MoverModule,
    mover: &MoverSpec,
) -> Result<PinnedModule, String> {
    let name = module.name();
    let source = match pinned {
        Some(reference) => reference.to_owned(),
        None if BUILTIN.iter().any(|(builtin, _)| *builtin == name) => name.to_owned(),
        None => {
            return Err(format!(
                "module {name} was loaded from a file by the operator; agents run only built-in or OCI modules"
            ));
        }
    };
    Ok(PinnedModule {
        source,
        digest: module.digest().to_owned(),
        pull_secret: pinned.and(mover.module_pull_secret.clone()),
    })
}

/// Whether the admin lets agents in `namespace` keep files' owners.
async fn keeps_owners(ctx: &Context, namespace: &str) -> Result<bool, Error> {
    let namespaces: kube::Api<Namespace> = kube::Api::all(ctx.client.clone());
    let annotations = namespaces
        .get_metadata(namespace)
        .await?
        .metadata
        .annotations;
    Ok(workload::keeps_owners(annotations.as_ref()))
}

/// Runs the object's mover on a blocking thread within `limits` (what the
/// policy admitted): `synchronize`, and
/// `cleanup` once it completed (or only `cleanup` when `cleaning`). The
/// run is in a `mover` span naming the object and, once claimed, the
/// module (`name@digest`), so that the module's log lines say whose they are.
pub(super) async fn run_mover<K: Replication>(
    obj: &K,
    ctx: &Context,
    module: Selected,
    limits: MoverLimits,
    cleaning: bool,
) -> Result<Ran, Error> {
    let span = tracing::info_span!(
        "mover",
        kind = %K::kind(&()),
        object = %format_args!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        module = tracing::field::Empty,
    );
    let _permit = ctx
        .runs
        .acquire()
        .instrument(span.clone())
        .await
        .expect("the semaphore is never closed");
    let obj = obj.clone();
    let Selected {
        catalog,
        name: selected,
        pinned,
    } = module;
    let namespace = obj.namespace().unwrap_or_default();
    let keep_owners = keeps_owners(ctx, &namespace).await?;
    // The PVC a destination's agents keep their state in exists before
    // any agent that mounts it is made; a cleanup makes none.
    let metadata = match cleaning {
        false => metadata::ensure(ctx, &obj).await?,
        true => obj
            .metadata_class()
            .map(|_| metadata::claim_name(&obj.name_any())),
    };
    let handle = tokio::runtime::Handle::current();
    let cluster = KubeCluster::new(ctx.client.clone(), handle.clone());
    let recorder = ctx.recorder.clone();
    let metrics = ctx.metrics.clone();
    let agent_image = ctx.agent_image.clone();
    let task = tokio::task::spawn_blocking(move || -> Result<Ran, Error> {
        let _entered = span.enter();
        let owner = Owner {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            name: obj.name_any(),
            uid: obj.uid(),
        };
        let kinds = kinds(obj.mover());
        let named = obj.named();
        let forwarder = Arc::new(EventForwarder {
            recorder: recorder.clone(),
            reference: obj.object_ref(&()),
            handle: handle.clone(),
            progress: Default::default(),
            metrics,
            role: K::ROLE,
        });
        let events: Arc<dyn Observer> = forwarder.clone();
        // Each module's agents run that module, pinned, within `limits`.
        let grants = |module: &MoverModule| {
            let agents = agent_image
                .as_deref()
                .ok_or_else(|| {
                    "the operator has no agent image to start agents with (--agent-image)"
                        .to_owned()
                })
                .and_then(|image| {
                    let module = pin(pinned.as_deref(), module, obj.mover())?;
                    workload::for_module(
                        image,
                        &module,
                        limits,
                        keep_owners,
                        obj.mover(),
                        metadata.as_deref(),
                    )
                });
            let scope = Scope {
                namespace: namespace.clone(),
                kinds: kinds.clone(),
                owner: owner.clone(),
                named: named.clone(),
                agents,
                services: workload::services(obj.mover()),
            };
            Grants::new()
                .with_cluster(ScopedCluster::new(Arc::new(cluster.clone()), scope))
                .with_observer(events.clone())
        };
        let Claimed {
            mut instance,
            mover,
            module,
        } = obj
            .claim(&catalog, selected.as_deref(), limits, &grants)
            .map_err(Error::Claim)?;
        let validates = catalog
            .get(&module)
            .is_some_and(|m| m.has(Capability::Validate));
        let module = match catalog.get(&module) {
            Some(m) => format!("{module}@{}", m.digest()),
            None => module,
        };
        span.record("module", module.as_str());
        let version = {
            let info = instance.version_info().map_err(Error::Mover)?;
            format!(
                "{}, contract {}{}",
                info.version,
                info.contract,
                if validates { ", validate" } else { "" }
            )
        };
        let ran = |step: Step| Ran {
            step,
            module: module.clone(),
            version: version.clone(),
            progress: *forwarder.progress.lock().expect("never poisoned"),
            synchronized: None,
        };
        let cleanup = |instance: &mut MoverInstance| -> Result<Option<Duration>, Error> {
            match instance.cleanup(mover).map_err(Error::Mover)? {
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
        // A module with the `validate` capability checks the parameters
        // before each step; a refusal is the module's error, nothing runs.
        instance
            .validate(&parameters(obj.mover()))
            .map_err(Error::Mover)?;
        Ok(match instance.synchronize(mover).map_err(Error::Mover)? {
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
        })
    });
    task.await?
}
