//! Snapshot files: a root tree with the time, host and paths it was taken from.

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// The JSON of a snapshot file. Fields this crate does not know (restic's
/// `summary`, …) are kept in `extra`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started (RFC 3339).
    pub time: String,
    /// The snapshot this one was based on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// The root tree.
    pub tree: Id,
    /// The paths backed up.
    pub paths: Vec<String>,
    /// The host that took it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// The user who took it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// That user's uid.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u32,
    /// That user's gid.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u32,
    /// Exclusion patterns in effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The snapshot this one is a rewrite of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
    /// The program that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_version: Option<String>,
    /// Fields not modelled here, kept as read.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The current time as restic writes it (RFC 3339, nanoseconds, local offset).
pub fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
}

/// This host's name, or empty if unknown.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The current user's name, or empty if unknown.
pub fn username() -> String {
    std::env::var("USER").unwrap_or_default()
}
