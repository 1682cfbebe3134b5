//! Collection of orphans: objects movers created (labelled and owned by a
//! replication object) whose owner is gone.
//!
//! In a full cluster Kubernetes' garbage collector follows the owner
//! references the host stamps; this pass does the same from the owner
//! labels, so nothing is left behind where that collector does not run,
//! or where an owner was deleted while the operator was down and its
//! finalizer removed by hand.

use std::collections::BTreeMap;

use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use wasmover_host::kube::{MANAGED_BY_LABEL, OWNER_KIND_LABEL, OWNER_NAME_LABEL};

use crate::crd::{ReplicationDestination, ReplicationSource};
use crate::volsync;

/// What one pass found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Objects wasmover manages that were looked at.
    pub examined: usize,
    /// Orphans deleted.
    pub deleted: usize,
}

/// Deletes the objects of `kinds` (apiVersion, kind) in every namespace
/// that wasmover manages and whose owner no longer exists (or exists with
/// another UID: a new object under an old name owns nothing of the old
/// one's). Kinds the API server does not serve are skipped.
pub async fn collect_orphans(
    client: &Client,
    kinds: &[(&str, &str)],
) -> Result<Collected, kube::Error> {
    let mut collected = Collected::default();
    // Owners looked up in this pass: (apiVersion, kind, namespace, name) -> uid.
    let mut owners: BTreeMap<(String, String, String, String), Option<String>> = BTreeMap::new();
    let managed = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}=wasmover"));
    for (api_version, kind) in kinds {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let objects = match all.list(&managed).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::debug!("{kind} ({api_version}) is not served; skipped");
                continue;
            }
            Err(e) => return Err(e),
        };
        for object in objects {
            collected.examined += 1;
            if object.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let labels = object.labels();
            let (Some(owner_kind), Some(owner_name)) =
                (labels.get(OWNER_KIND_LABEL), labels.get(OWNER_NAME_LABEL))
            else {
                continue;
            };
            let namespace = object.namespace().unwrap_or_default();
            // The labels name the kind; the owner reference, when there is
            // one, its group: wasmover's or VolSync's kinds of one name.
            let owner_api_version = object
                .owner_references()
                .iter()
                .find(|r| r.kind == *owner_kind)
                .map_or(OWN_API_VERSION, |r| r.api_version.as_str())
                .to_owned();
            let key = (
                owner_api_version,
                owner_kind.clone(),
                namespace.clone(),
                owner_name.clone(),
            );
            let uid = match owners.get(&key) {
                Some(uid) => uid.clone(),
                None => {
                    let Some(uid) =
                        owner_uid(client, &key.0, owner_kind, &namespace, owner_name).await?
                    else {
                        // Not an owner kind of ours: leave it alone.
                        continue;
                    };
                    owners.insert(key, uid.clone());
                    uid
                }
            };
            let owned_by_it = uid.as_ref().is_some_and(|uid| {
                uid.is_empty()
                    || object
                        .owner_references()
                        .iter()
                        .all(|r| r.kind != *owner_kind || r.uid == *uid)
            });
            if owned_by_it {
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &namespace, &resource);
            match api
                .delete(&object.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        "deleted orphan {kind} {namespace}/{} of {owner_kind} {owner_name}",
                        object.name_any()
                    );
                    collected.deleted += 1;
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(collected)
}

/// The apiVersion of the operator's own kinds.
const OWN_API_VERSION: &str = "wasmover.dev/v1alpha1";

/// The UID of the owner (`Some(None)` if it is gone), or `None` if
/// `api_version` `kind` is not one of the kinds the operator serves
/// (its own, VolSync's).
async fn owner_uid(
    client: &Client,
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Option<String>>, kube::Error> {
    let owner = match (api_version, kind) {
        (OWN_API_VERSION, "ReplicationSource") => {
            get_uid::<ReplicationSource>(client, namespace, name).await?
        }
        (OWN_API_VERSION, "ReplicationDestination") => {
            get_uid::<ReplicationDestination>(client, namespace, name).await?
        }
        ("volsync.backube/v1alpha1", "ReplicationSource") => {
            get_uid::<volsync::ReplicationSource>(client, namespace, name).await?
        }
        ("volsync.backube/v1alpha1", "ReplicationDestination") => {
            get_uid::<volsync::ReplicationDestination>(client, namespace, name).await?
        }
        _ => return Ok(None),
    };
    // An owner that exists without a UID cannot happen on a real server;
    // treat it as present.
    Ok(Some(owner.map(|uid| uid.unwrap_or_default())))
}

/// The UID of `K` `name`, `None` if it does not exist (or its kind is not
/// served: its CRD is gone, and with it every object of the kind).
async fn get_uid<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Option<String>>, kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Ok(Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .map(|o| o.uid()))
}
