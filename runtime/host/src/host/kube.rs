//! `kube`: Kubernetes operations through the run's [`ScopedCluster`].

use serde_json::Value;

use crate::bindings::kube::{self as wit, KubeError, ObjectKey};
use crate::kube::{KubeError as Error, ScopedCluster};
use crate::state::{Event, HostState};

impl From<Error> for KubeError {
    fn from(e: Error) -> Self {
        match e {
            Error::Forbidden(m) => KubeError::Forbidden(m),
            Error::NotFound(m) => KubeError::NotFound(m),
            Error::Conflict(m) => KubeError::Conflict(m),
            Error::Invalid(m) => KubeError::Invalid(m),
            Error::Unavailable(m) => KubeError::Unavailable(m),
            Error::Other(m) => KubeError::Other(m),
        }
    }
}

fn parse(json: &str) -> Result<Value, KubeError> {
    serde_json::from_str(json).map_err(|e| KubeError::Invalid(format!("not valid JSON: {e}")))
}

fn text(value: Value) -> String {
    value.to_string()
}

impl HostState {
    /// Runs `f` on the granted cluster, or refuses when none was granted.
    fn with_cluster<R>(
        &mut self,
        f: impl FnOnce(&ScopedCluster) -> Result<R, KubeError>,
    ) -> wasmtime::Result<Result<R, KubeError>> {
        self.host_call(|s| match &s.grants.cluster {
            Some(cluster) => {
                let result = f(cluster);
                if let Err(KubeError::Forbidden(why)) = &result {
                    tracing::warn!(module = &*s.module, "refused a Kubernetes call: {why}");
                    // The user hears of it too, not only the guest.
                    s.grants.observer.event(
                        &s.module,
                        &Event {
                            warning: true,
                            reason: "MoverForbidden".into(),
                            action: "Authorize".into(),
                            note: format!("module {} was refused: {why}", s.module),
                        },
                    );
                }
                result
            }
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
        self.with_cluster(|c| Ok(c.delete(&key.api_version, &key.kind, &key.name)?))
    }
}
