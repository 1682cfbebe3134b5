//! The agents' Pods: the template every mover's agent Job is built from.
//! The operator's agent image runs `wasmover agent` with the module the
//! replication pinned, its digest and limits; the mover chooses only the
//! role, its flags and the volumes it may use. And the template of the
//! Services that reach them: the type and annotations the replication chose.

use wasmover_host::MoverLimits;
use wasmover_host::kube::{
    AGENT_UID, AgentTemplate, HostMount, MountSource, Named, Privilege, SecretItem, ServiceTemplate,
};

use crate::crd::{MoverSecurityContext, MoverSpec, MoverVolume};

/// The agent's command in the agent image.
pub const AGENT_COMMAND: [&str; 2] = ["wasmover", "agent"];
/// The namespace annotation by which an admin lets agents run as root to
/// keep files' owners (VolSync's is `volsync.backube/privileged-movers`,
/// honoured too).
pub const PRIVILEGED_MOVERS: [&str; 2] = [
    "wasmover.dev/privileged-movers",
    "volsync.backube/privileged-movers",
];

/// Flags of `wasmover agent` that only the host sets: which module runs,
/// its digest, its limits, and where modules come from and are kept.
pub const RESERVED_FLAGS: &[&str] = &[
    "--mover",
    "--module-digest",
    "--cpu-time-ms",
    "--memory-bytes",
    "--host-calls",
    "--log-bytes",
    "--message-bytes",
    "--registry-config",
    "--module-store",
    "--max-module-bytes",
    "--insecure",
    "--cache-dir",
    "--no-cache",
    "--state-dir",
];

/// Where an agent keeps modules and their compiled code: the template's
/// scratch `emptyDir`.
const SCRATCH: &str = "/tmp";
/// Where an agent reads the module's pull secret.
const REGISTRY_SECRET_DIR: &str = "/var/run/wasmover/registry";
/// Where mover volumes are mounted, each in its `mountPath`.
const MOVER_VOLUMES_DIR: &str = "/mnt";
/// Where a destination's agents mount its metadata PVC, their state
/// directory (`--state-dir`): outside the volume they receive into.
pub const STATE_DIR: &str = "/var/lib/wasmover/state";

/// The module an agent runs, as the operator pinned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedModule {
    /// A built-in name, or `oci://registry/repo@sha256:...`.
    pub source: String,
    /// The digest of the module's bytes, which the agent checks.
    pub digest: String,
    /// Its pull secret (for an `oci://` source).
    pub pull_secret: Option<String>,
}

/// A template for `image` with no module: what guest unit tests see.
pub fn template(image: &str) -> AgentTemplate {
    AgentTemplate {
        reserved_flags: RESERVED_FLAGS.iter().map(|f| f.to_string()).collect(),
        env: vec![(
            "WASMOVER_CACHE_DIR".into(),
            format!("{SCRATCH}/wasmover/precompiled"),
        )],
        scratch_dir: SCRATCH.into(),
        ..AgentTemplate::new(image, &AGENT_COMMAND)
    }
}

/// The template for one replication's agents: `module` within `limits`,
/// as root only when `keep_owners`, with the mover config of the
/// replication's mover section (VolSync's `mover*` fields), and with the
/// PVC `metadata` (a destination's) as their state directory; or why that
/// config cannot be honoured.
pub fn for_module(
    image: &str,
    module: &PinnedModule,
    limits: MoverLimits,
    keep_owners: bool,
    mover: &MoverSpec,
    metadata: Option<&str>,
) -> Result<AgentTemplate, String> {
    let mut template = template(image);
    template.args = [
        ("--mover", module.source.clone()),
        ("--module-digest", module.digest.clone()),
        ("--cpu-time-ms", limits.cpu_time_ms.to_string()),
        ("--memory-bytes", limits.memory_bytes.to_string()),
        ("--host-calls", limits.host_calls.to_string()),
        ("--log-bytes", limits.log_bytes.to_string()),
        ("--message-bytes", limits.message_bytes.to_string()),
        ("--module-store", format!("{SCRATCH}/wasmover/modules")),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect();
    if let Some(secret) = &module.pull_secret {
        template.mounts.push(HostMount {
            source: MountSource::secret(secret.clone()),
            path: REGISTRY_SECRET_DIR.into(),
        });
        template.args.extend([
            "--registry-config".to_owned(),
            format!("{REGISTRY_SECRET_DIR}/.dockerconfigjson"),
        ]);
    }
    if let Some(claim) = metadata {
        template.mounts.push(HostMount {
            source: MountSource::Claim {
                name: claim.to_owned(),
                read_only: false,
            },
            path: STATE_DIR.into(),
        });
        template
            .args
            .extend(["--state-dir".to_owned(), STATE_DIR.to_owned()]);
    }
    template.privilege = privilege(keep_owners, mover.mover_security_context.as_ref())?;
    template.resources = mover.mover_resources.as_ref().map(to_json);
    template.affinity = mover.mover_affinity.as_ref().map(to_json);
    template.service_account = mover.mover_service_account.clone();
    template.pod_labels = mover
        .mover_pod_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (i, volume) in mover.mover_volumes.iter().enumerate() {
        template.mounts.push(mover_volume(i, volume)?);
    }
    Ok(template)
}

/// The host mount of mover volume `i`, at `/mnt/<mountPath>`; or why it
/// cannot be mounted (the CRD's rules refuse the same before it is stored).
fn mover_volume(i: usize, volume: &MoverVolume) -> Result<HostMount, String> {
    let field = format!("spec.mover.moverVolumes[{i}]");
    let segment = &volume.mount_path;
    if !segment.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "{field}.mountPath {segment:?}: one directory name under {MOVER_VOLUMES_DIR} (letters, digits, . _ -)"
        ));
    }
    let source = &volume.volume_source;
    let source = match (&source.persistent_volume_claim, &source.secret) {
        (Some(claim), None) => MountSource::Claim {
            name: claim.claim_name.clone(),
            read_only: claim.read_only.unwrap_or(false),
        },
        (None, Some(secret)) => {
            if secret.optional == Some(true) {
                return Err(format!(
                    "{field}.volumeSource.secret.optional: a mover volume's Secret must exist"
                ));
            }
            MountSource::Secret {
                name: secret
                    .secret_name
                    .clone()
                    .ok_or_else(|| format!("{field}.volumeSource.secret.secretName is required"))?,
                items: secret
                    .items
                    .iter()
                    .flatten()
                    .map(|item| SecretItem {
                        key: item.key.clone(),
                        path: item.path.clone(),
                        mode: item.mode,
                    })
                    .collect(),
                default_mode: secret.default_mode,
            }
        }
        _ => {
            return Err(format!(
                "{field}.volumeSource: one source, persistentVolumeClaim or secret"
            ));
        }
    };
    Ok(HostMount {
        source,
        path: format!("{MOVER_VOLUMES_DIR}/{segment}"),
    })
}

/// The template of a replication's Services: the type and annotations of
/// its mover section (VolSync's `serviceType`, `serviceAnnotations`).
pub fn services(mover: &MoverSpec) -> ServiceTemplate {
    ServiceTemplate {
        service_type: mover.service_type.unwrap_or_default().as_str().into(),
        annotations: mover.service_annotations.clone(),
    }
}

/// A Kubernetes type as the JSON of a Pod spec.
fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("Kubernetes types serialize")
}

/// Whom agents run as: root keeping owners where the namespace allows it,
/// else the user, group and fsGroup of `context` (default: the image's
/// user), never root.
fn privilege(
    keep_owners: bool,
    context: Option<&MoverSecurityContext>,
) -> Result<Privilege, String> {
    let field = "spec.mover.moverSecurityContext";
    let Some(context) = context else {
        return Ok(if keep_owners {
            Privilege::KeepOwners
        } else {
            Privilege::Restricted {
                uid: AGENT_UID,
                gid: AGENT_UID,
                fs_group: AGENT_UID,
            }
        });
    };
    if context.run_as_non_root == Some(false) && !keep_owners {
        return Err(format!(
            "{field}.runAsNonRoot false: agents run as root only in a namespace annotated {}: \"true\" by an admin",
            PRIVILEGED_MOVERS[0]
        ));
    }
    let id = |name: &str, value: Option<i64>, default: u32| match value {
        None => Ok(default),
        Some(v) => {
            u32::try_from(v).map_err(|_| format!("{field}.{name} {v} is not a user or group id"))
        }
    };
    let uid = id("runAsUser", context.run_as_user, AGENT_UID)?;
    let gid = id("runAsGroup", context.run_as_group, uid)?;
    let fs_group = id("fsGroup", context.fs_group, gid)?;
    if uid == 0 {
        return if keep_owners {
            Ok(Privilege::KeepOwners)
        } else {
            Err(format!(
                "{field}.runAsUser 0: agents run as root only in a namespace annotated {}: \"true\" by an admin",
                PRIVILEGED_MOVERS[0]
            ))
        };
    }
    Ok(Privilege::Restricted { uid, gid, fs_group })
}

/// The Secrets a replication names through its parameters: the value of
/// every parameter whose key ends in `-secret` (`key-secret`,
/// `repository-secret`, ...).
pub fn named_secrets(mover: &MoverSpec) -> impl Iterator<Item = Named> + '_ {
    mover
        .parameters
        .iter()
        .filter(|(key, _)| key.ends_with("-secret"))
        .map(|(_, name)| Named::new("Secret", name.clone()))
}

/// Whether `annotations` of a namespace let its agents keep owners.
pub fn keeps_owners(annotations: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    annotations.is_some_and(|a| {
        PRIVILEGED_MOVERS
            .iter()
            .any(|key| a.get(*key).is_some_and(|v| v == "true"))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_agent_runs_the_pinned_module_within_its_limits() {
        let module = PinnedModule {
            source: "oci://r.example/movers/x@sha256:ab".into(),
            digest: "sha256:cd".into(),
            pull_secret: Some("pull".into()),
        };
        let limits = MoverLimits {
            cpu_time_ms: 7,
            ..MoverLimits::default()
        };
        let t = for_module(
            "img@sha256:1",
            &module,
            limits,
            false,
            &MoverSpec::default(),
            None,
        )
        .unwrap();
        let arg = |flag: &str| {
            let i = t.args.iter().position(|a| a == flag).unwrap();
            t.args[i + 1].clone()
        };
        assert_eq!(arg("--mover"), module.source);
        assert_eq!(arg("--module-digest"), "sha256:cd");
        assert_eq!(arg("--cpu-time-ms"), "7");
        assert_eq!(
            arg("--registry-config"),
            "/var/run/wasmover/registry/.dockerconfigjson"
        );
        assert_eq!(t.mounts[0].source, MountSource::secret("pull"));
        assert_eq!(
            t.privilege,
            Privilege::Restricted {
                uid: AGENT_UID,
                gid: AGENT_UID,
                fs_group: AGENT_UID,
            }
        );
        // Every flag the host passes is one a mover may not.
        for flag in t.args.iter().filter(|a| a.starts_with("--")) {
            assert!(t.reserved_flags.contains(flag), "{flag} is not reserved");
        }
    }

    #[test]
    fn mover_volumes_mount_under_mnt_as_volsyncs_do() {
        let mover: MoverSpec = serde_json::from_value(json!({"moverVolumes": [
            {"mountPath": "repo", "volumeSource": {"persistentVolumeClaim": {"claimName": "backups", "readOnly": true}}},
            {"mountPath": "ca", "volumeSource": {"secret": {"secretName": "ca", "items": [{"key": "ca.crt", "path": "ca.pem"}]}}},
        ]}))
        .unwrap();
        let module = PinnedModule {
            source: "blocksync".into(),
            digest: "sha256:cd".into(),
            pull_secret: None,
        };
        let t = for_module("img", &module, MoverLimits::default(), false, &mover, None).unwrap();
        assert_eq!(
            t.mounts,
            [
                HostMount {
                    source: MountSource::Claim {
                        name: "backups".into(),
                        read_only: true
                    },
                    path: "/mnt/repo".into(),
                },
                HostMount {
                    source: MountSource::Secret {
                        name: "ca".into(),
                        items: vec![SecretItem {
                            key: "ca.crt".into(),
                            path: "ca.pem".into(),
                            mode: None
                        }],
                        default_mode: None,
                    },
                    path: "/mnt/ca".into(),
                },
            ]
        );
        for (volume, why) in [
            (
                json!({"mountPath": "../etc", "volumeSource": {"secret": {"secretName": "s"}}}),
                "mountPath \"../etc\": one directory name under /mnt",
            ),
            (
                json!({"mountPath": "x", "volumeSource": {}}),
                "volumeSource: one source",
            ),
            (
                json!({"mountPath": "x", "volumeSource": {"secret": {"secretName": "s", "optional": true}}}),
                "optional: a mover volume's Secret must exist",
            ),
        ] {
            let mover: MoverSpec =
                serde_json::from_value(json!({"moverVolumes": [volume]})).unwrap();
            let err = for_module("img", &module, MoverLimits::default(), false, &mover, None)
                .unwrap_err();
            assert!(
                err.starts_with("spec.mover.moverVolumes[0].") && err.contains(why),
                "{err}"
            );
        }
    }

    /// A destination's agents keep their state on its metadata PVC,
    /// mounted outside their volume, and a mover cannot point them
    /// elsewhere.
    #[test]
    fn a_destinations_agents_keep_their_state_on_its_metadata_pvc() {
        let module = PinnedModule {
            source: "blocksync".into(),
            digest: "sha256:cd".into(),
            pull_secret: None,
        };
        let limits = MoverLimits::default();
        let mover = MoverSpec::default();
        let t = for_module(
            "img",
            &module,
            limits,
            false,
            &mover,
            Some("db-wasmover-metadata"),
        )
        .unwrap();
        assert_eq!(
            t.mounts,
            [HostMount {
                source: MountSource::Claim {
                    name: "db-wasmover-metadata".into(),
                    read_only: false,
                },
                path: STATE_DIR.into(),
            }]
        );
        let at = t.args.iter().position(|a| a == "--state-dir").unwrap();
        assert_eq!(t.args[at + 1], STATE_DIR);
        assert!(t.reserved_flags.contains(&"--state-dir".to_owned()));
        // A source's agents keep nothing between runs.
        let t = for_module("img", &module, limits, false, &mover, None).unwrap();
        assert!(t.mounts.is_empty());
        assert!(!t.args.contains(&"--state-dir".to_owned()));
    }

    #[test]
    fn services_take_the_mover_sections_type_and_annotations() {
        assert_eq!(services(&MoverSpec::default()), ServiceTemplate::default());
        let mover: MoverSpec = serde_json::from_value(json!({
            "serviceType": "LoadBalancer",
            "serviceAnnotations": {"lb.example/internal": "true"},
        }))
        .unwrap();
        let template = services(&mover);
        assert_eq!(template.service_type, "LoadBalancer");
        assert_eq!(template.annotations["lb.example/internal"], "true");
    }

    #[test]
    fn only_an_admins_namespace_annotation_keeps_owners() {
        let annotated =
            |k: &str, v: &str| Some([(k.to_owned(), v.to_owned())].into_iter().collect());
        assert!(!keeps_owners(None));
        assert!(keeps_owners(
            annotated("wasmover.dev/privileged-movers", "true").as_ref()
        ));
        assert!(keeps_owners(
            annotated("volsync.backube/privileged-movers", "true").as_ref()
        ));
        assert!(!keeps_owners(
            annotated("wasmover.dev/privileged-movers", "yes").as_ref()
        ));
    }

    #[test]
    fn parameters_ending_in_secret_name_secrets() {
        let mover = MoverSpec {
            parameters: [
                ("key-secret", "k"),
                ("address", "a"),
                ("repository-secret", "r"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..MoverSpec::default()
        };
        let names: Vec<String> = named_secrets(&mover).map(|n| n.name).collect();
        assert_eq!(names, ["k", "r"]);
    }

    #[test]
    fn a_security_context_picks_users_but_never_root_without_the_admin() {
        let context =
            |json: serde_json::Value| serde_json::from_value::<MoverSecurityContext>(json).unwrap();
        assert_eq!(
            privilege(
                false,
                Some(&context(json!({"runAsUser": 1000, "fsGroup": 2000})))
            ),
            Ok(Privilege::Restricted {
                uid: 1000,
                gid: 1000,
                fs_group: 2000
            })
        );
        let root = context(json!({"runAsUser": 0}));
        assert!(
            privilege(false, Some(&root))
                .unwrap_err()
                .contains("runAsUser 0")
        );
        assert_eq!(privilege(true, Some(&root)), Ok(Privilege::KeepOwners));
        assert!(privilege(false, Some(&context(json!({"runAsNonRoot": false})))).is_err());
    }
}
