//! `kubectl wasmover`: the kubectl plugin that sets up replications across
//! kubeconfig contexts, as kubectl-volsync does for VolSync.
//!
//! A relationship file ([`relationship`]) names both sides; `sync` and
//! `schedule` create or update the ReplicationDestination, wait for its
//! `status.endpoint`, copy its key Secret into the source's namespace and
//! create the ReplicationSource with the address, port and key
//! ([`replication`]). A migration moves a local directory into a PVC
//! through the API server's port-forward ([`migration`]). Every cluster
//! call goes through [`contexts`], which names the context, verb and
//! resource of a failure.

pub mod args;
pub mod contexts;
pub mod migration;
pub mod relationship;
pub mod replication;

use std::path::PathBuf;

/// The field manager of every object the plugin applies.
pub const MANAGER: &str = "kubectl-wasmover";
/// The label on every object made for a relationship: its id.
pub const RELATIONSHIP_LABEL: &str = "wasmover.dev/relationship";

/// Why a `kubectl wasmover` command failed. Refusals name their rule.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `$XDG_CONFIG_HOME` nor `$HOME` is set.
    #[error("no configuration directory: set $XDG_CONFIG_HOME or $HOME, or pass --config-dir")]
    NoConfigDir,
    /// `create` of a relationship that exists.
    #[error("{} exists: delete the relationship first, or choose another name (rule exists)", path.display())]
    Exists {
        /// Its file.
        path: PathBuf,
    },
    /// No file for the relationship.
    #[error(
        "no relationship {name} in {}: create it with `kubectl wasmover {kind} create {name}` \
         (or pass the --config-dir it was created with)",
        path.parent().unwrap_or(path).display()
    )]
    NoRelationship {
        /// Its name.
        name: String,
        /// `replication` or `migration`.
        kind: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file could not be read or written.
    #[error("{}: {cause}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        cause: std::io::Error,
    },
    /// The file does not hold a relationship this build reads.
    #[error("{}: not a relationship file: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A name that cannot name Kubernetes objects.
    #[error(
        "{what} name {name:?} must be a DNS-1123 label: lowercase letters, digits and '-', \
         at most 63, starting and ending with a letter or digit (rule name)"
    )]
    InvalidName {
        /// What it names.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A command of one kind on a relationship of the other.
    #[error("{name} is a {is} relationship, not a {wanted} one (rule kind)")]
    WrongKind {
        /// The relationship.
        name: String,
        /// Its kind.
        is: &'static str,
        /// The command's.
        wanted: &'static str,
    },
    /// A side is missing.
    #[error("relationship {name} has no {missing} yet: set it with `{command}` (rule incomplete)")]
    Incomplete {
        /// The relationship.
        name: String,
        /// `source` or `destination`.
        missing: &'static str,
        /// The command that sets it.
        command: &'static str,
    },
    /// Moving a side whose objects exist would leave them behind.
    #[error("the {side} exists at {old}: run `replication delete` before moving it (rule {rule})")]
    Moved {
        /// The rule.
        rule: &'static str,
        /// `source` or `destination`.
        side: &'static str,
        /// Where it is.
        old: String,
    },
    /// An argument's value is refused.
    #[error("{message} (rule {rule})")]
    Invalid {
        /// The rule.
        rule: &'static str,
        /// What is wrong, naming the flag.
        message: String,
    },
    /// The kubeconfig could not be read.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The kubeconfig has no such context.
    #[error("the kubeconfig has no context {context:?} (it has: {known}) (rule context)")]
    UnknownContext {
        /// The context asked for.
        context: String,
        /// The contexts it has.
        known: String,
    },
    /// The cluster does not serve wasmover's CRDs.
    #[error(
        "wasmover is not installed in context {context}: its API server does not serve \
         {resource}.wasmover.dev/v1alpha1 (install the chart or operator/yaml/crds.yaml; \
         see docs/install.md)"
    )]
    NotInstalled {
        /// The context.
        context: String,
        /// The resource looked for.
        resource: &'static str,
    },
    /// The API server refused a request: 403.
    #[error(
        "context {context}: not allowed to {verb} {resource}{}: {message}",
        in_namespace(namespace)
    )]
    Forbidden {
        /// The context.
        context: String,
        /// The verb (`get`, `patch`, ...).
        verb: &'static str,
        /// The resource (`secrets`, `replicationdestinations.wasmover.dev`).
        resource: String,
        /// The namespace, if any.
        namespace: Option<String>,
        /// The API server's message.
        message: String,
    },
    /// Any other failed request.
    #[error(
        "context {context}: {verb} {resource}{}: {message}",
        in_namespace(namespace)
    )]
    Api {
        /// The context.
        context: String,
        /// The verb.
        verb: &'static str,
        /// The resource.
        resource: String,
        /// The namespace, if any.
        namespace: Option<String>,
        /// The error and its causes, each once.
        message: String,
    },
    /// Something did not happen in time.
    #[error("gave up after {seconds}s waiting for {what}")]
    Timeout {
        /// What was waited for, and what holds it up.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// A synchronization failed.
    #[error("{kind} {place} failed: {message}")]
    SyncFailed {
        /// `ReplicationSource` or `ReplicationDestination`.
        kind: &'static str,
        /// The object.
        place: String,
        /// The `Synchronizing` condition's message.
        message: String,
    },
    /// The local side of a migration failed.
    #[error("sending {}: {cause}", path.display())]
    Send {
        /// The local directory.
        path: PathBuf,
        /// What stopped it.
        cause: String,
    },
}

fn in_namespace(namespace: &Option<String>) -> String {
    namespace
        .as_ref()
        .map(|n| format!(" in namespace {n}"))
        .unwrap_or_default()
}
