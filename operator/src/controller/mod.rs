//! The reconcilers of ReplicationSource and ReplicationDestination.
//!
//! Each reconcile decides whether a synchronization is due (schedule,
//! manual trigger, pause, back-off: [`decide`]), asks the catalog for the
//! one mover that claims the spec, calls its `synchronize` until it
//! completes (honouring retry-after), then `cleanup` ([`mover`]), and
//! records status with server-side apply ([`status`]). Modules run on
//! blocking threads behind a semaphore; their Kubernetes host calls go
//! through [`KubeCluster`](crate::cluster::KubeCluster) scoped to the
//! object's namespace.

mod decide;
mod endpoint;
mod metadata;
mod mover;
mod progress;
mod reconcile;
mod replication;
mod status;
mod stuck;
mod volsync;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::Error as FinalizerError;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::Semaphore;
use wasmover_host::kube::{DEFAULT_KINDS, OWNER_KIND_LABEL, OWNER_NAME_LABEL};
use wasmover_host::{Catalog, CatalogError, RunError};

use crate::crd::{ReplicationDestination, ReplicationSource};
use crate::gc;
use crate::leader::{Candidate, LeaseConfig};
use crate::metrics::{ErrorLabels, Metrics};
use crate::modules::{ModuleError, OciModules};
use crate::policy::{Policy, PolicyRefusal};
use reconcile::reconcile;
pub use replication::Replication;
pub use status::MANAGER;

/// Why a reconcile failed, one variant per class of failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer machinery failed, or the reconcile inside it.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<FinalizerError<Error>>),
    /// The object's module could not be had.
    #[error(transparent)]
    Module(ModuleError),
    /// The admin's policy refuses the object's module or limits.
    #[error(transparent)]
    Policy(PolicyRefusal),
    /// No single mover claims the object.
    #[error(transparent)]
    Claim(CatalogError),
    /// The mover failed, trapped or ran into one of its limits.
    #[error(transparent)]
    Mover(RunError),
    /// The object's schedule does not parse or never fires.
    #[error("{0}")]
    InvalidSchedule(String),
    /// The spec cannot run as written (a VolSync object's parameters);
    /// the message names the field and the rule.
    #[error("{0}")]
    InvalidSpec(String),
    /// The mover's blocking task panicked or was cancelled.
    #[error("mover task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The mover's `cleanup` is still running: not a failure, but it must
    /// keep the finalizer (which an `Ok` would remove), so it is an `Err`
    /// that `error_policy` requeues after this long.
    #[error("cleanup still running; retrying in {0:?}")]
    CleanupInProgress(Duration),
}

impl Error {
    /// The reconcile's own error, out of the finalizer's wrapping.
    fn inner(&self) -> &Error {
        match self {
            Error::Finalizer(e) => match &**e {
                FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e.inner(),
                _ => self,
            },
            _ => self,
        }
    }

    /// The failure's class as a Prometheus label.
    pub fn metric_label(&self) -> &'static str {
        match self.inner() {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Module(_) => "module",
            Error::Policy(_) => "policy",
            Error::Claim(CatalogError::Run(e)) | Error::Mover(e) => e.metric_label(),
            Error::Claim(_) => "claim",
            Error::InvalidSchedule(_) => "invalid_schedule",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Join(_) => "mover_task",
            Error::CleanupInProgress(_) => "cleanup_in_progress",
        }
    }

    /// The mover's error when one of its limits stopped it.
    pub fn limit(&self) -> Option<&RunError> {
        match self.inner() {
            Error::Claim(CatalogError::Run(e)) | Error::Mover(e) => {
                matches!(e, RunError::Limit { .. } | RunError::StackOverflow { .. }).then_some(e)
            }
            _ => None,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Movers by name.
    pub catalog: Arc<Catalog>,
    /// Modules from OCI registries; `None`: only built-in names.
    pub oci: Option<Arc<OciModules>>,
    /// What objects may run, checked before anything of theirs does.
    pub policy: Arc<Policy>,
    /// The image agents run, by digest; `None`: movers may start no agents.
    pub agent_image: Option<String>,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Bounds module runs in flight (each holds a blocking thread).
    pub runs: Semaphore,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// What running synchronizations' agents report, read from their
    /// logs at a bounded rate.
    pub progress: progress::LiveProgress,
}

impl Context {
    /// A context serving `catalog` (and OCI modules through `oci`) to
    /// objects that `options.policy` admits, recording into `metrics`.
    pub fn new(
        client: Client,
        catalog: Catalog,
        options: &RunOptions,
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
            oci: options.oci.clone(),
            policy: options.policy.clone(),
            agent_image: options.agent_image.clone(),
            runs: Semaphore::new(16),
            metrics,
            progress: progress::LiveProgress::default(),
        })
    }

    /// Counts a failure of a `role` object in `wasmover_reconcile_errors_total`.
    fn count_error(&self, role: &str, error: &Error) {
        self.metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                role: role.into(),
                error: error.metric_label().into(),
            })
            .inc();
    }
}

/// The agent Jobs of `K`'s movers, by the owner label the host puts on
/// everything a mover creates: a change of one (created, running, done)
/// reconciles its object at once, not at the mover's next poll.
fn agent_jobs<K: Replication>() -> watcher::Config {
    watcher::Config::default().labels(&format!("{OWNER_KIND_LABEL}={}", K::kind(&())))
}

/// The object whose mover made `job`, by its owner labels.
fn owner<K: Replication>(job: Job) -> Option<ObjectRef<K>> {
    let name = job.metadata.labels.as_ref()?.get(OWNER_NAME_LABEL)?;
    Some(ObjectRef::new(name).within(job.metadata.namespace.as_deref()?))
}

/// Requeues a failed reconcile after logging and counting it; a cleanup
/// in progress is neither, and is looked at again when it asked.
fn error_policy<K: Replication>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::CleanupInProgress(wait) = error.inner() {
        tracing::debug!(object = %obj.name_any(), "{}", error.inner());
        return Action::requeue((*wait).max(Duration::from_secs(1)));
    }
    tracing::warn!(object = %obj.name_any(), "reconcile failed: {error}");
    ctx.count_error(K::ROLE, error);
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
    /// What objects may run (default: anything, as without a policy).
    pub policy: Arc<Policy>,
    /// The image agents run, by digest (`--agent-image`); `None`: a mover
    /// that starts agents is refused, naming the missing setting.
    pub agent_image: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            leader: None,
            gc_interval: Duration::from_secs(300),
            oci: None,
            policy: Arc::default(),
            agent_image: None,
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
    let ctx = Context::new(client.clone(), catalog, &options, metrics.clone());
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
    let serve_volsync = serves_volsync(&client).await;
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
    let until_stopped = || shutdown(stopped.clone());
    let source = controller::<ReplicationSource>(client.clone(), ctx.clone(), until_stopped());
    let destination =
        controller::<ReplicationDestination>(client.clone(), ctx.clone(), until_stopped());
    // VolSync's kinds, where the API server serves them.
    let volsync = futures::future::OptionFuture::from(serve_volsync.then(|| {
        futures::future::join(
            controller::<crate::volsync::ReplicationSource>(
                client.clone(),
                ctx.clone(),
                until_stopped(),
            ),
            controller::<crate::volsync::ReplicationDestination>(
                client.clone(),
                ctx,
                until_stopped(),
            ),
        )
    }));
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
        _ = async { tokio::join!(source, destination, volsync) } => {}
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

/// The controller of kind `K`, until `stop`: its objects, and the agent
/// Jobs of their movers.
fn controller<K: Replication>(
    client: Client,
    ctx: Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> {
    Controller::new(Api::<K>::all(client.clone()), watcher::Config::default())
        .watches(Api::<Job>::all(client), agent_jobs::<K>(), owner)
        .shutdown_on_signal()
        .graceful_shutdown_on(stop)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|_| futures::future::ready(()))
}

/// Whether the API server serves VolSync's ReplicationSource and
/// ReplicationDestination (`volsync.backube/v1alpha1`); when it does not,
/// says so once: the operator serves its own kinds only.
async fn serves_volsync(client: &Client) -> bool {
    let one = ListParams::default().limit(1);
    let checks = [
        (
            "ReplicationSources",
            Api::<crate::volsync::ReplicationSource>::all(client.clone())
                .list_metadata(&one)
                .await
                .map(|_| ()),
        ),
        (
            "ReplicationDestinations",
            Api::<crate::volsync::ReplicationDestination>::all(client.clone())
                .list_metadata(&one)
                .await
                .map(|_| ()),
        ),
    ];
    for (kinds, check) in checks {
        match check {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::info!(
                    "the API server does not serve volsync.backube {kinds} (VolSync's CRDs are not installed): VolSync objects with spec.external.provider {} are not served; install VolSync's CRDs and restart the operator to serve them",
                    crate::volsync::PROVIDER
                );
                return false;
            }
            Err(e) => {
                tracing::warn!(
                    "cannot list volsync.backube {kinds}: {e}; VolSync objects are not served"
                );
                return false;
            }
        }
    }
    tracing::info!(
        "serving VolSync's ReplicationSources and ReplicationDestinations with spec.external.provider {}",
        crate::volsync::PROVIDER
    );
    true
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

/// The whole operator server: the metrics endpoints on `metrics_addr`
/// and both controllers, with a client from KUBECONFIG or the in-cluster
/// config; returns when [`run`] does or the endpoints fail.
pub async fn serve(
    metrics_addr: std::net::SocketAddr,
    catalog: Catalog,
    options: RunOptions,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let config = kube::Config::infer().await?;
    let client = crate::client::instrumented(config, metrics.clone())?;
    let listener = tokio::net::TcpListener::bind(metrics_addr).await?;
    let server = axum::serve(listener, crate::metrics::router(metrics.clone()));
    tokio::select! {
        result = run(client, catalog, metrics, options) => result,
        result = server => Ok(result?),
    }
}
