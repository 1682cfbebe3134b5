//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! operator replicas exactly one reconciles.
//!
//! The algorithm is client-go's: a candidate takes the Lease when it does
//! not exist, when it names this candidate, or when its record has not
//! changed for a whole lease duration as measured on the candidate's own
//! clock (so clock skew between replicas does not matter). Every write
//! carries the `resourceVersion` it read, so two candidates racing for an
//! expired Lease cannot both win. The holder renews well inside the
//! duration and steps down when it cannot.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

/// Where the Lease lives and how it is held.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This candidate's identity (the Pod name in a cluster).
    pub identity: String,
    /// How long a Lease lasts without renewal before others may take it.
    pub duration: Duration,
    /// How often the holder renews and a candidate retries.
    pub retry_period: Duration,
    /// How long the holder keeps leading while renewals fail.
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    /// client-go's defaults (15 s lease, 10 s renew deadline, 2 s retry).
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            name: "wasmover-operator".into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// A candidate for the Lease.
pub struct Candidate {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The Lease record last seen (resourceVersion) and when it last changed.
    observed: Mutex<Option<(String, Instant)>>,
}

impl Candidate {
    /// A candidate through `client`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(None),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        loop {
            let attempt =
                tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => return,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.config.name, "cannot take the lease: {e}")
                }
                Err(_) => tracing::warn!(lease = %self.config.name, "taking the lease timed out"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease until it is lost: another candidate took it, or
    /// renewals kept failing for the renew deadline. Returns why.
    pub async fn hold(&self) -> String {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let attempt =
                tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => return "another replica holds the lease".into(),
                Ok(Err(e)) if renewed.elapsed() >= self.config.renew_deadline => {
                    return format!("cannot renew the lease: {e}");
                }
                Ok(Err(e)) => tracing::warn!("renewing the lease failed, retrying: {e}"),
                Err(_) if renewed.elapsed() >= self.config.renew_deadline => {
                    return "renewing the lease timed out".into();
                }
                Err(_) => tracing::warn!("renewing the lease timed out, retrying"),
            }
        }
    }

    /// Gives the Lease up so that a successor need not wait for it to
    /// expire (client-go's ReleaseOnCancel).
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(&self.config.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(e) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!("releasing the lease failed: {e}");
        }
    }

    /// One round: takes or renews the Lease if this candidate may. A
    /// conflict (someone else wrote first) is `Ok(false)`.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };

        let version = lease.resource_version().unwrap_or_default();
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.config.identity;
        if !mine && !holder.is_empty() {
            // Someone else's: take it only once its record has stood still
            // for a whole lease duration on our clock.
            let lasts =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration).max(0) as u64);
            let mut observed = self.observed.lock().await;
            let since = match observed.as_ref() {
                Some((seen, at)) if *seen == version => *at,
                _ => {
                    *observed = Some((version, Instant::now()));
                    return Ok(false);
                }
            };
            if since.elapsed() < lasts {
                return Ok(false);
            }
        }
        if !mine {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(now);
        let written = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await;
        if !mine && written.is_ok() {
            tracing::info!(lease = %self.config.name, from = %holder, "took over the lease");
        }
        conflict_is_false(written)
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
