//! The admin's policy: which modules a replication object may name and
//! which limits it may ask for. [`Policy::admit`] is checked before
//! anything of an object runs; a refusal names the rule that refused.
//!
//! The policy is a YAML file given to `wasmover operator --policy` (what a
//! ConfigMap mounts):
//!
//! ```yaml
//! allowedModules:            # absent: any module
//!   - builtin:blocksync      # a name in the operator's catalog; builtin:* for all
//!   - oci://registry.example/movers/   # a registry or repository prefix
//!   - oci://other.example/m@sha256:0123…  # exactly this manifest
//! allowUnpinnedTags: false   # default true
//! defaultLimits: {cpuTimeMs: 30000}   # MoverLimits; unset fields keep theirs
//! maxLimits: {cpuTimeMs: 120000, memoryBytes: 1073741824}
//! ```

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;
use wasmover_host::MoverLimits;
use wasmover_oci::{Digest, ModuleRef};

use crate::crd::{MoverLimitsSpec, MoverSpec};

/// What the operator lets replication objects run. The default allows
/// what an operator without a policy always allowed: any module, tags
/// without digests, any limits.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Policy {
    /// The sources a module may come from; `None`: any.
    pub allowed_modules: Option<Vec<SourceRule>>,
    /// Whether an `oci://` reference may name a tag without a digest.
    pub allow_unpinned_tags: bool,
    /// The limits of an object that asks for none (field by field).
    pub default_limits: MoverLimits,
    /// The most an object may ask for in `spec.mover.limits`.
    pub max_limits: MoverLimitsSpec,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_modules: None,
            allow_unpinned_tags: true,
            default_limits: MoverLimits::default(),
            max_limits: MoverLimitsSpec::default(),
        }
    }
}

/// One allowed source of modules.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SourceRule {
    /// `builtin:*`: any name in the operator's catalog, and an empty
    /// `spec.mover.module` (whichever of them claims the spec).
    AnyBuiltin,
    /// `builtin:NAME`: that name in the operator's catalog.
    Builtin(String),
    /// `oci://host[/path]`: references in that registry, or under that
    /// repository path (matched at a `/` boundary).
    Prefix(String),
    /// `oci://host/repo@sha256:…`: exactly that manifest of that repository.
    Pinned {
        /// `host/repo`.
        repository: String,
        /// The manifest digest.
        digest: Digest,
    },
}

/// Why a rule does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a module source (builtin:NAME, builtin:*, oci://host[/path], oci://host/repo@sha256:...)"
)]
pub struct SourceRuleError(String);

impl FromStr for SourceRule {
    type Err = SourceRuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || SourceRuleError(s.to_owned());
        if let Some(name) = s.strip_prefix("builtin:") {
            return match name {
                "*" => Ok(Self::AnyBuiltin),
                "" => Err(invalid()),
                name => Ok(Self::Builtin(name.to_owned())),
            };
        }
        let path = s.strip_prefix(wasmover_oci::SCHEME).ok_or_else(invalid)?;
        if path.contains('@') {
            let reference: ModuleRef = s.parse().map_err(|_| invalid())?;
            let digest = reference.digest().cloned().ok_or_else(invalid)?;
            return Ok(Self::Pinned {
                repository: repository(&reference),
                digest,
            });
        }
        let prefix = path.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(invalid());
        }
        Ok(Self::Prefix(prefix.to_owned()))
    }
}

impl TryFrom<String> for SourceRule {
    type Error = SourceRuleError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for SourceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = wasmover_oci::SCHEME;
        match self {
            Self::AnyBuiltin => write!(f, "builtin:*"),
            Self::Builtin(name) => write!(f, "builtin:{name}"),
            Self::Prefix(prefix) => write!(f, "{scheme}{prefix}/"),
            Self::Pinned { repository, digest } => write!(f, "{scheme}{repository}@{digest}"),
        }
    }
}

/// `host/repo` of a reference.
fn repository(reference: &ModuleRef) -> String {
    format!("{}/{}", reference.registry(), reference.repository())
}

impl SourceRule {
    /// Whether the rule allows `module` (`spec.mover.module`; `oci`: it
    /// parsed as a reference).
    fn allows(&self, module: &str, oci: Option<&ModuleRef>) -> bool {
        match (self, oci) {
            (Self::AnyBuiltin, None) => true,
            (Self::Builtin(name), None) => name == module,
            (Self::Prefix(prefix), Some(reference)) => {
                let repository = repository(reference);
                repository
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            (
                Self::Pinned {
                    repository: r,
                    digest,
                },
                Some(reference),
            ) => *r == repository(reference) && reference.digest() == Some(digest),
            _ => false,
        }
    }
}

/// The rule that refused an object; its message is the condition's and
/// the Event's.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyRefusal {
    /// The module is from no allowed source.
    #[error("policy: module {module:?} is not from an allowed source (allowed: {allowed})")]
    Source {
        /// `spec.mover.module`.
        module: String,
        /// The allowed sources, comma-separated.
        allowed: String,
    },
    /// The module names a tag without a digest.
    #[error(
        "policy: module {module} names a tag without a digest; the policy requires pinned digests (oci://...@sha256:...)"
    )]
    Unpinned {
        /// `spec.mover.module`.
        module: String,
    },
    /// A requested limit is above the policy's maximum.
    #[error("policy: spec.mover.limits.{field} {requested} exceeds the policy maximum {maximum}")]
    Limit {
        /// The field of `spec.mover.limits`.
        field: &'static str,
        /// What the object asks for.
        requested: u64,
        /// The policy's maximum.
        maximum: u64,
    },
}

/// Why a policy file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// It cannot be read.
    #[error("cannot read the policy {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What failed (in the message, not a source: one line).
        error: std::io::Error,
    },
    /// It is not a policy.
    #[error("the policy {path} is not valid: {error}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong (in the message, not a source: one line).
        error: serde_yaml::Error,
    },
    /// A default limit is above the maximum, so no object could run.
    #[error(
        "the policy {path} is not valid: defaultLimits.{field} {default} exceeds maxLimits.{field} {maximum}"
    )]
    DefaultAboveMax {
        /// The file.
        path: String,
        /// The limit's field.
        field: &'static str,
        /// The default.
        default: u64,
        /// The maximum.
        maximum: u64,
    },
}

impl Policy {
    /// Reads the policy file at `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|error| PolicyError::Io {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses a policy, naming it `origin` in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let policy: Self = serde_yaml::from_str(text).map_err(|error| PolicyError::Parse {
            path: origin.to_owned(),
            error,
        })?;
        if let Err(PolicyRefusal::Limit {
            field,
            requested,
            maximum,
        }) = policy.check_max(&policy.default_limits)
        {
            return Err(PolicyError::DefaultAboveMax {
                path: origin.to_owned(),
                field,
                default: requested,
                maximum,
            });
        }
        Ok(policy)
    }

    /// Admits an object's `spec.mover` and returns the limits it runs
    /// with (the defaults, overridden by what it asks for), or the rule
    /// that refuses it.
    pub fn admit(&self, mover: &MoverSpec) -> Result<MoverLimits, PolicyRefusal> {
        let module = mover.module.as_str();
        let oci = module
            .starts_with(wasmover_oci::SCHEME)
            .then(|| module.parse::<ModuleRef>().ok());
        if let Some(rules) = &self.allowed_modules {
            let reference = oci.as_ref().and_then(Option::as_ref);
            // An unparsable reference is refused here only when rules
            // exist; without them, resolution reports it.
            let allowed = (oci.is_none() || reference.is_some())
                && rules.iter().any(|r| r.allows(module, reference));
            if !allowed {
                return Err(PolicyRefusal::Source {
                    module: module.to_owned(),
                    allowed: rules
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        if !self.allow_unpinned_tags
            && let Some(Some(reference)) = &oci
            && !reference.is_pinned()
        {
            return Err(PolicyRefusal::Unpinned {
                module: module.to_owned(),
            });
        }
        let mut limits = self.default_limits;
        if let Some(asked) = &mover.limits {
            limits.cpu_time_ms = asked.cpu_time_ms.unwrap_or(limits.cpu_time_ms);
            limits.memory_bytes = asked.memory_bytes.unwrap_or(limits.memory_bytes);
        }
        self.check_max(&limits)?;
        Ok(limits)
    }

    /// Refuses `limits` above the maximum.
    fn check_max(&self, limits: &MoverLimits) -> Result<(), PolicyRefusal> {
        let max = &self.max_limits;
        for (field, requested, maximum) in [
            ("cpuTimeMs", limits.cpu_time_ms, max.cpu_time_ms),
            ("memoryBytes", limits.memory_bytes, max.memory_bytes),
        ] {
            if let Some(maximum) = maximum
                && requested > maximum
            {
                return Err(PolicyRefusal::Limit {
                    field,
                    requested,
                    maximum,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn policy(yaml: &str) -> Policy {
        Policy::from_yaml(yaml, "test").unwrap()
    }

    fn mover(module: &str) -> MoverSpec {
        MoverSpec {
            module: module.into(),
            ..MoverSpec::default()
        }
    }

    fn asking(cpu_time_ms: Option<u64>, memory_bytes: Option<u64>) -> MoverSpec {
        MoverSpec {
            limits: Some(MoverLimitsSpec {
                cpu_time_ms,
                memory_bytes,
            }),
            ..mover("blocksync")
        }
    }

    #[test]
    fn the_default_policy_admits_everything_with_the_default_limits() {
        let policy = Policy::default();
        assert_eq!(policy, self::policy("{}"));
        for module in ["", "blocksync", "oci://r.example/m:v1", "oci://Bad"] {
            assert_eq!(policy.admit(&mover(module)), Ok(MoverLimits::default()));
        }
        let limits = policy.admit(&asking(Some(5), None)).unwrap();
        assert_eq!(limits.cpu_time_ms, 5);
        assert_eq!(limits.memory_bytes, MoverLimits::default().memory_bytes);
    }

    #[test]
    fn modules_from_no_allowed_source_are_refused_naming_the_sources() {
        let policy = policy(&format!(
            "allowedModules: [builtin:blocksync, 'oci://r.example/movers/', 'oci://o.example/m@{DIGEST}']"
        ));
        for admitted in [
            "blocksync".to_owned(),
            "oci://r.example/movers/blocksync:v1".into(),
            "oci://r.example/movers/team/x@".to_owned() + DIGEST,
            format!("oci://o.example/m:v2@{DIGEST}"),
        ] {
            assert!(policy.admit(&mover(&admitted)).is_ok(), "{admitted}");
        }
        for refused in [
            "",
            "hostile",
            "oci://r.example/movers-evil/x:v1",
            "oci://r.example/other:v1",
            "oci://o.example/m:v2",
            "oci://o.example/m@sha256:1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "oci://Bad",
        ] {
            let refusal = policy.admit(&mover(refused)).unwrap_err();
            assert_eq!(
                refusal.to_string(),
                format!(
                    "policy: module {refused:?} is not from an allowed source (allowed: \
                     builtin:blocksync, oci://r.example/movers/, oci://o.example/m@{DIGEST})"
                )
            );
        }
    }

    #[test]
    fn any_builtin_allows_names_and_the_empty_module_but_no_references() {
        let policy = policy("allowedModules: ['builtin:*']");
        assert!(policy.admit(&mover("")).is_ok());
        assert!(policy.admit(&mover("hostile")).is_ok());
        assert!(policy.admit(&mover("oci://r.example/m:v1")).is_err());
    }

    #[test]
    fn tags_without_digests_are_refused_when_the_policy_requires_pins() {
        let policy = policy("allowUnpinnedTags: false");
        let refusal = policy.admit(&mover("oci://r.example/m:v1")).unwrap_err();
        assert_eq!(
            refusal,
            PolicyRefusal::Unpinned {
                module: "oci://r.example/m:v1".into()
            }
        );
        assert!(refusal.to_string().contains("requires pinned digests"));
        assert!(
            policy
                .admit(&mover(&format!("oci://r.example/m@{DIGEST}")))
                .is_ok()
        );
        assert!(policy.admit(&mover("blocksync")).is_ok());
    }

    #[test]
    fn limits_above_the_maximum_are_refused_and_unset_ones_take_the_defaults() {
        let policy = policy(
            "defaultLimits: {cpuTimeMs: 1000, hostCalls: 7}\n\
             maxLimits: {cpuTimeMs: 2000, memoryBytes: 1073741824}",
        );
        let limits = policy.admit(&mover("blocksync")).unwrap();
        assert_eq!(
            (limits.cpu_time_ms, limits.host_calls, limits.memory_bytes),
            (1000, 7, MoverLimits::default().memory_bytes)
        );
        assert_eq!(
            policy.admit(&asking(Some(2000), None)).unwrap().cpu_time_ms,
            2000
        );
        let refusal = policy.admit(&asking(None, Some(8 << 30))).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "policy: spec.mover.limits.memoryBytes 8589934592 exceeds the policy maximum 1073741824"
        );
        assert!(matches!(
            policy.admit(&asking(Some(2001), None)),
            Err(PolicyRefusal::Limit {
                field: "cpuTimeMs",
                ..
            })
        ));
    }

    #[test]
    fn a_policy_that_no_object_could_pass_or_that_misspells_a_key_is_rejected() {
        let above = Policy::from_yaml("maxLimits: {memoryBytes: 1024}", "p.yaml").unwrap_err();
        assert_eq!(
            above.to_string(),
            "the policy p.yaml is not valid: defaultLimits.memoryBytes 268435456 exceeds maxLimits.memoryBytes 1024"
        );
        assert!(Policy::from_yaml("allowUnpinned: false", "p.yaml").is_err());
        for bad in [
            "builtin:",
            "docker://x",
            "oci://",
            "oci://r.example/m@sha256:12",
        ] {
            assert!(bad.parse::<SourceRule>().is_err(), "{bad}");
        }
    }
}
