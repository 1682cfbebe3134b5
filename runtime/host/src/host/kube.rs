//! `kube`: Kubernetes operations through the run's [`ScopedCluster`].

use serde_json::Value;

use crate::bindings::kube::{self as wit, KubeError, ObjectKey};
use crate::kube::{KubeError as Error, ScopedCluster};
use crate::limits::LimitExceeded;
use crate::state::HostState;

impl From<Error> for KubeError {
    fn from(e: Error) -> Self {
        match e {
            Error::Refused(r) => KubeError::Forbidden(r.to_string()),
            Error::Forbidden(m) => KubeError::Forbidden(m),
            Error::NotFound(m) => KubeError::NotFound(m),
            Error::Conflict(m) => KubeError::Conflict(m),
            Error::Invalid(m) => KubeError::Invalid(m),
            Error::Unavailable(m) => KubeError::Unavailable(m),
            Error::Other(m) => KubeError::Other(m),
        }
    }
}

fn parse(json: &str) -> Result<Value, Error> {
    serde_json::from_str(json).map_err(|e| Error::Invalid(format!("not valid JSON: {e}")))
}

fn text(value: Value) -> String {
    value.to_string()
}

impl HostState {
    /// Runs `f` on the granted cluster within the run's budget of
    /// Kubernetes calls, or refuses when none was granted. A refusal by the
    /// scope is reported to the observer (an Event, a metric), not only to
    /// the guest.
    fn with_cluster<R>(
        &mut self,
        f: impl FnOnce(&ScopedCluster) -> Result<R, Error>,
    ) -> wasmtime::Result<Result<R, KubeError>> {
        self.meter.kube_calls += 1;
        if self.meter.kube_calls > self.limits.kube_calls {
            return Err(LimitExceeded::KubeCalls {
                limit: self.limits.kube_calls,
            }
            .into());
        }
        self.host_call(|s| match &s.grants.cluster {
            Some(cluster) => f(cluster).map_err(|e| {
                if let Error::Refused(refusal) = &e {
                    tracing::warn!(
                        module = &*s.module,
                        rule = refusal.rule,
                        "refused a Kubernetes call: {refusal}"
                    );
                    s.grants.observer.refused(&s.module, refusal);
                }
                e.into()
            }),
            None => Err(KubeError::Forbidden(
                "this run grants no Kubernetes access".into(),
            )),
        })
    }
}

impl wit::Host for HostState {
    fn get(&mut self, key: ObjectKey) -> wasmtime::Result<Result<Option<String>, KubeError>> {
        self.with_cluster(|c| Ok(c.get(&key.api_version, &key.kind, &key.name)?.map(text)))
    }

    fn list_objects(
        &mut self,
        api_version: String,
        kind: String,
        label_selector: Option<String>,
    ) -> wasmtime::Result<Result<Vec<String>, KubeError>> {
        self.with_cluster(|c| {
            Ok(c.list(&api_version, &kind, label_selector.as_deref())?
                .into_iter()
                .map(text)
                .collect())
        })
    }

    fn create(&mut self, object: String) -> wasmtime::Result<Result<String, KubeError>> {
        self.with_cluster(|c| Ok(text(c.create(parse(&object)?)?)))
    }

    fn patch(
        &mut self,
        key: ObjectKey,
        merge_patch: String,
    ) -> wasmtime::Result<Result<String, KubeError>> {
        self.with_cluster(|c| {
            Ok(text(c.patch(
                &key.api_version,
                &key.kind,
                &key.name,
                parse(&merge_patch)?,
            )?))
        })
    }

    fn delete(&mut self, key: ObjectKey) -> wasmtime::Result<Result<bool, KubeError>> {
        self.with_cluster(|c| c.delete(&key.api_version, &key.kind, &key.name))
    }
}
