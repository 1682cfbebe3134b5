//! One client per kubeconfig context, whose failures name the context,
//! the verb and the resource: an unknown context lists the known ones, a
//! cluster without wasmover's CRDs says so, a 403 says what was refused.

use std::fmt::Debug;
use std::path::Path;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, MANAGER};

/// The API version of wasmover's CRDs.
const API_VERSION: &str = "wasmover.dev/v1alpha1";

/// A kubeconfig context to talk to.
#[derive(Clone)]
pub struct Cluster {
    /// The context's name.
    pub context: String,
    /// Its namespace, or `default`.
    pub namespace: String,
    client: Client,
}

/// The kubeconfig at `path`, else `$KUBECONFIG` (merged) or
/// `~/.kube/config`.
pub fn kubeconfig(path: Option<&Path>) -> Result<Kubeconfig, Error> {
    match path {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// The context `wanted` (else the current one) of `config`, and its
/// namespace (else `default`).
pub fn resolve(config: &Kubeconfig, wanted: Option<&str>) -> Result<(String, String), Error> {
    let name = match wanted.or(config.current_context.as_deref()) {
        Some(name) => name,
        None => {
            return Err(Error::Kubeconfig(
                "it sets no current-context: pass --context".into(),
            ));
        }
    };
    let Some(found) = config.contexts.iter().find(|c| c.name == name) else {
        let known: Vec<&str> = config.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::UnknownContext {
            context: name.to_owned(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    let namespace = found
        .context
        .as_ref()
        .and_then(|c| c.namespace.clone())
        .unwrap_or_else(|| "default".into());
    Ok((name.to_owned(), namespace))
}

impl Cluster {
    /// A client for `context` (else the current one) of `config`.
    pub async fn connect(config: &Kubeconfig, context: Option<&str>) -> Result<Self, Error> {
        let (name, namespace) = resolve(config, context)?;
        let options = KubeConfigOptions {
            context: Some(name.clone()),
            ..KubeConfigOptions::default()
        };
        let client = Config::from_custom_kubeconfig(config.clone(), &options)
            .await
            .map_err(|e| Error::Kubeconfig(format!("context {name}: {e}")))
            .and_then(|c| {
                Client::try_from(c).map_err(|e| Error::Kubeconfig(format!("context {name}: {e}")))
            })?;
        Ok(Self {
            context: name,
            namespace,
            client,
        })
    }

    /// Checks that the cluster serves wasmover's `resource`
    /// (`replicationdestinations`, ...).
    pub async fn check_installed(&self, resource: &'static str) -> Result<(), Error> {
        match self.client.list_api_group_resources(API_VERSION).await {
            Ok(list) if list.resources.iter().any(|r| r.name == resource) => Ok(()),
            Ok(_) => Err(self.not_installed(resource)),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(self.not_installed(resource))
            }
            Err(e) => Err(self.error("discover", resource, None, e)),
        }
    }

    fn not_installed(&self, resource: &'static str) -> Error {
        Error::NotInstalled {
            context: self.context.clone(),
            resource,
        }
    }

    /// Objects of `K` in `namespace`.
    pub fn api<K>(&self, namespace: &str) -> Objects<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Objects {
            cluster: self.clone(),
            namespace: namespace.to_owned(),
            api: Api::namespaced(self.client.clone(), namespace),
        }
    }

    /// The client, for what [`Objects`] does not cover (port-forward).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `e`, failing `verb` on `resource`, named.
    pub fn error(
        &self,
        verb: &'static str,
        resource: &str,
        namespace: Option<&str>,
        e: kube::Error,
    ) -> Error {
        describe(&self.context, verb, resource, namespace, e)
    }
}

/// A kube error of `verb` on `resource` in `context`, as the user reads
/// it: a 403 names what was refused.
pub fn describe(
    context: &str,
    verb: &'static str,
    resource: &str,
    namespace: Option<&str>,
    e: kube::Error,
) -> Error {
    match e {
        kube::Error::Api(status) if status.code == 403 => Error::Forbidden {
            context: context.to_owned(),
            verb,
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            message: status.message,
        },
        e => Error::Api {
            context: context.to_owned(),
            verb,
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            message: causes(&e),
        },
    }
}

/// `e` and its sources, leaving out each one its predecessor already
/// says (kube's errors repeat their source in their own message).
fn causes(e: &dyn std::error::Error) -> String {
    let mut said: Vec<String> = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !said.last().is_some_and(|last| last.contains(&text)) {
            said.push(text);
        }
        next = cause.source();
    }
    said.join(": ")
}

/// Objects of one kind in one namespace of one context; each call's
/// failure is [`describe`]d.
pub struct Objects<K> {
    cluster: Cluster,
    namespace: String,
    api: Api<K>,
}

impl<K> Objects<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    /// The resource as RBAC names it: `secrets`,
    /// `replicationdestinations.wasmover.dev`.
    fn resource() -> String {
        let plural = K::plural(&());
        match K::group(&()).as_ref() {
            "" => plural.into_owned(),
            group => format!("{plural}.{group}"),
        }
    }

    fn fail(&self, verb: &'static str, e: kube::Error) -> Error {
        self.cluster
            .error(verb, &Self::resource(), Some(&self.namespace), e)
    }

    /// The object `name`, if it exists.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>, Error> {
        self.api
            .get_opt(name)
            .await
            .map_err(|e| self.fail("get", e))
    }

    /// The objects `params` selects.
    pub async fn list(&self, params: &ListParams) -> Result<Vec<K>, Error> {
        Ok(self
            .api
            .list(params)
            .await
            .map_err(|e| self.fail("list", e))?
            .items)
    }

    /// Server-side applies `object` (apiVersion, kind, metadata.name and
    /// what the plugin sets) as [`MANAGER`].
    pub async fn apply(&self, name: &str, object: &serde_json::Value) -> Result<K, Error> {
        self.api
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .map_err(|e| self.fail("patch", e))
    }

    /// Merge-patches `patch` into `name`.
    pub async fn merge(&self, name: &str, patch: &serde_json::Value) -> Result<K, Error> {
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| self.fail("patch", e))
    }

    /// Deletes `name`; whether it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, Error> {
        match self.api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(self.fail("delete", e)),
        }
    }
}

impl Objects<k8s_openapi::api::core::v1::Pod> {
    /// The log of Pod `name`'s only container.
    pub async fn log(&self, name: &str) -> Result<String, Error> {
        self.api
            .logs(name, &kube::api::LogParams::default())
            .await
            .map_err(|e| {
                self.cluster
                    .error("get", "pods/log", Some(&self.namespace), e)
            })
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn config() -> Kubeconfig {
        serde_yaml::from_str(
            "apiVersion: v1\nkind: Config\ncurrent-context: east\ncontexts:\n\
             - name: east\n  context: {cluster: c, user: u, namespace: backup}\n\
             - name: west\n  context: {cluster: c, user: u}\n",
        )
        .unwrap()
    }

    #[test]
    fn contexts_resolve_to_a_name_and_a_namespace() {
        let config = config();
        assert_eq!(
            resolve(&config, None).unwrap(),
            ("east".into(), "backup".into())
        );
        assert_eq!(
            resolve(&config, Some("west")).unwrap(),
            ("west".into(), "default".into())
        );
        assert_eq!(
            resolve(&config, Some("north")).unwrap_err().to_string(),
            "the kubeconfig has no context \"north\" (it has: east, west) (rule context)"
        );
        let none = Kubeconfig::default();
        assert!(
            resolve(&none, None)
                .unwrap_err()
                .to_string()
                .contains("no current-context: pass --context")
        );
    }

    #[test]
    fn a_403_names_the_verb_the_resource_and_the_namespace() {
        let status = Status::failure(
            "secrets \"db-key\" is forbidden: User \"bob\" cannot get resource \"secrets\"",
            "Forbidden",
        )
        .with_code(403);
        let e = describe(
            "east",
            "get",
            "secrets",
            Some("backup"),
            kube::Error::Api(status.boxed()),
        );
        assert_eq!(
            e.to_string(),
            "context east: not allowed to get secrets in namespace backup: \
             secrets \"db-key\" is forbidden: User \"bob\" cannot get resource \"secrets\""
        );
        let conflict = Status::failure("conflict", "Conflict").with_code(409);
        let e = describe(
            "east",
            "patch",
            "replicationdestinations.wasmover.dev",
            None,
            kube::Error::Api(conflict.boxed()),
        );
        assert!(matches!(e, Error::Api { verb: "patch", .. }), "{e}");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let wrapped = kube::Error::ReadEvents(refused);
        assert_eq!(
            causes(&wrapped),
            "Error reading events stream: refused",
            "a cause the message repeats is said once"
        );
        assert!(
            e.to_string()
                .starts_with("context east: patch replicationdestinations.wasmover.dev: ")
        );
    }

    #[test]
    fn resources_are_named_as_rbac_names_them() {
        use k8s_openapi::api::core::v1::Secret;

        use crate::crd::ReplicationDestination;
        assert_eq!(Objects::<Secret>::resource(), "secrets");
        assert_eq!(
            Objects::<ReplicationDestination>::resource(),
            "replicationdestinations.wasmover.dev"
        );
    }
}
