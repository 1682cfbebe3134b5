//! The metadata PVC: a small PVC the operator gives a destination's
//! agents, owned by the ReplicationDestination (created before its mover
//! runs, deleted with it), where the receiving agent keeps what one run
//! leaves for the next outside the replicated volume (`wasmover agent
//! --state-dir`): the partial content of files a lost peer cut off, the
//! file and granule hashes that spare the next run its reads, and the undo
//! journal of a large file patched in place, which the next agent rolls
//! back if a Pod died part-way. So the replica holds nothing the source
//! does not.
//!
//! [`CAPACITY`]: file hashes take 64 bytes a file (1Gi holds those of 16
//! million files) and granule hashes 1/512 of a large file; a file is
//! patched in place only while the PVC has room for a rewrite of all of it
//! (its old bytes in the journal, its new ones waiting for them), and a
//! cut-off file's content is kept only where it fits, so a full PVC costs
//! speed (files rebuilt beside, transfers not resumed), never a run.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use wasmover_host::kube::{MANAGED_BY_LABEL, OWNER_KIND_LABEL, OWNER_NAME_LABEL};

use super::{Context, Error, Replication};

/// The size of a metadata PVC: VolSync's restic mover gives its cache PVC
/// as much by default, and many CSI drivers provision no less anyway.
pub(super) const CAPACITY: &str = "1Gi";

/// The metadata PVC of the object named `object`.
pub(crate) fn claim_name(object: &str) -> String {
    format!("{object}-wasmover-metadata")
}

/// The metadata PVC of `obj`, if it has one: labelled and owned as the
/// objects its mover creates, so that Kubernetes' garbage collector (or
/// the operator's own pass) deletes it with its owner.
pub(super) fn claim<K: Replication>(obj: &K) -> Option<serde_json::Value> {
    let class = obj.metadata_class()?;
    let name = obj.name_any();
    let kind = K::kind(&());
    let mut claim = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(&name),
            "labels": {
                OWNER_NAME_LABEL: name,
                OWNER_KIND_LABEL: kind,
                MANAGED_BY_LABEL: "wasmover",
            },
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": CAPACITY}},
        },
    });
    if let Some(uid) = obj.uid() {
        claim["metadata"]["ownerReferences"] = json!([{
            "apiVersion": K::api_version(&()),
            "kind": kind,
            "name": name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
    }
    if let Some(class) = class {
        claim["spec"]["storageClassName"] = class.into();
    }
    Some(claim)
}

/// Creates `obj`'s metadata PVC if it has one and it is missing; its name.
pub(super) async fn ensure<K: Replication>(
    ctx: &Context,
    obj: &K,
) -> Result<Option<String>, Error> {
    let Some(claim) = claim(obj) else {
        return Ok(None);
    };
    let name = claim_name(&obj.name_any());
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    if api.get_opt(&name).await?.is_none() {
        let claim: PersistentVolumeClaim =
            serde_json::from_value(claim).expect("a PVC deserializes");
        match api.create(&PostParams::default(), &claim).await {
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            created => drop(created?),
        }
        tracing::info!(object = %obj.name_any(), claim = name, "created the metadata PVC");
    }
    Ok(Some(name))
}

/// Deletes `obj`'s metadata PVC, if it has one, as the object goes.
pub(super) async fn delete<K: Replication>(ctx: &Context, obj: &K) -> Result<(), Error> {
    if obj.metadata_class().is_none() {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    match api
        .delete(&claim_name(&obj.name_any()), &DeleteParams::default())
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        deleted => deleted.map(drop).map_err(Error::from),
    }
}
