//! The parts of the wasmover mover contract that both sides of it compile:
//! the contract's version and the agent report.
//!
//! The contract itself is `mover.wit` beside this crate. The host
//! (`wasmover-host`) and the guest SDK (`wasmover-sdk`) generate their
//! bindings from it; this crate holds what their bindings cannot share:
//! one version constant for every place that names the contract, and the
//! JSON shape in which an agent hands its transfer report to the mover that
//! started it (a Pod's termination message).

#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// The contract's version as a literal, for `concat!` (see [`export_name!`]).
#[macro_export]
macro_rules! version {
    () => {
        "0.3.0"
    };
}

/// The fully qualified name of one of the contract's interfaces:
/// `export_name!("control")` is `"wasmover:mover/control@0.3.0"`.
#[macro_export]
macro_rules! export_name {
    ($interface:literal) => {
        concat!("wasmover:mover/", $interface, "@", $crate::version!())
    };
}

/// The version of the contract (`package wasmover:mover@VERSION` in
/// `mover.wit`).
pub const VERSION: &str = version!();

/// The package name with its version, `wasmover:mover@0.3.0`.
pub const PACKAGE: &str = concat!("wasmover:mover@", version!());

/// The previous contract, `v0.2/mover.wit`, which the host still runs:
/// a module built for it links against adapters over this version's
/// imports (docs/contract-next.md).
pub const PREVIOUS_VERSION: &str = "0.2.0";

/// What an agent reports of a finished transfer: the contract's
/// `transfer-report` record and the module that ran it, as JSON (camelCase
/// keys), written by `wasmover agent --report-file` into the Pod's
/// termination message and read back by the mover that started the agent.
///
/// Each side converts from and to its own bindings' `TransferReport`, so a
/// field added to the record is a compile error on both sides until both
/// carry it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    /// Entries in the source tree.
    pub entries_total: u64,
    /// Regular files whose content was (re)built on the destination.
    pub files_transferred: u64,
    /// Entries removed from the destination because the source lacks them.
    pub entries_deleted: u64,
    /// Bytes of regular-file content in the source tree.
    pub bytes_total: u64,
    /// Bytes rebuilt from blocks the destination already had.
    pub bytes_matched: u64,
    /// Bytes of file content sent as literals.
    pub bytes_literal: u64,
    /// Bytes those literals took on the wire; 0 in a report of an agent
    /// older than this field.
    #[serde(default)]
    pub bytes_literal_wire: u64,
    /// Entries or attributes the receiver could not recreate; 0 in a
    /// report of an agent older than this field.
    #[serde(default)]
    pub entries_skipped: u64,
    /// Bytes that crossed the channel in both directions, framing included.
    pub bytes_on_wire: u64,
    /// The destination's tree digest after the transfer (64 hex digits), or
    /// empty when the mover does not verify.
    pub tree_digest: String,
    /// The destination's tree digest equals the source's.
    pub verified: bool,
    /// The module that ran the transfer, `name@digest` (its content
    /// digest, `sha256:...`); empty in a report of an agent older than
    /// this field.
    #[serde(default)]
    pub module: String,
}

/// A name as bytes, shown readably: UTF-8 as it is, except that
/// backslashes, control characters and bytes that are not UTF-8 appear as
/// escapes (`\\`, `\n`, `\xNN`), so every name prints on one line and
/// two different names never print alike.
pub fn escape_path(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_one_mover_wit_declares() {
        let wit = include_str!("../mover.wit");
        let line = format!("package {PACKAGE};");
        assert!(
            wit.lines().any(|l| l.trim() == line),
            "mover.wit does not declare `{line}`: bump `version!` with the WIT package"
        );
        assert_eq!(export_name!("control"), "wasmover:mover/control@0.3.0");
        let previous = include_str!("../v0.2/mover.wit");
        let line = format!("package wasmover:mover@{PREVIOUS_VERSION};");
        assert!(previous.lines().any(|l| l.trim() == line));
    }

    #[test]
    fn a_report_round_trips_through_its_json() {
        let report = AgentReport {
            entries_total: 60,
            files_transferred: 54,
            entries_deleted: 1,
            bytes_total: 107_080_000,
            bytes_matched: 104_850_000,
            bytes_literal: 4_100,
            bytes_literal_wire: 1_900,
            entries_skipped: 2,
            bytes_on_wire: 58_390,
            tree_digest: "ab".repeat(32),
            verified: true,
            module: format!("blocksync@sha256:{}", "cd".repeat(32)),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<AgentReport>(&json).unwrap(), report);
    }

    /// An older agent wrote no `module`, `bytesLiteralWire` or
    /// `entriesSkipped`: its report still reads, with those unknown.
    #[test]
    fn a_report_without_the_newer_fields_reads_with_them_empty() {
        let mut json = serde_json::to_value(AgentReport {
            entries_total: 3,
            tree_digest: "ef".repeat(32),
            verified: true,
            module: "blocksync@sha256:00".into(),
            ..AgentReport::default()
        })
        .unwrap();
        for newer in ["module", "bytesLiteralWire", "entriesSkipped"] {
            json.as_object_mut().unwrap().remove(newer).unwrap();
        }
        let report: AgentReport = serde_json::from_value(json).unwrap();
        assert_eq!(report.module, "");
        assert_eq!((report.bytes_literal_wire, report.entries_skipped), (0, 0));
        assert_eq!(report.entries_total, 3);
        assert!(report.verified);
    }

    /// The keys are part of the contract: Pods of an older agent must still
    /// be read by a newer mover, so a renamed field fails here.
    #[test]
    fn the_keys_are_the_records_fields_in_camel_case() {
        let json = serde_json::to_value(AgentReport::default()).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bytesLiteral",
                "bytesLiteralWire",
                "bytesMatched",
                "bytesOnWire",
                "bytesTotal",
                "entriesDeleted",
                "entriesSkipped",
                "entriesTotal",
                "filesTransferred",
                "module",
                "treeDigest",
                "verified"
            ]
        );
        assert!(
            serde_json::from_str::<AgentReport>(r#"{"treeDigest":"x"}"#).is_err(),
            "a report missing fields is refused, not read as zeros"
        );
    }

    #[test]
    fn names_print_on_one_line_and_apart() {
        assert_eq!(escape_path(b"plain/n\xc3\xa4me"), "plain/näme");
        assert_eq!(escape_path(b"bad\xffname"), "bad\\xffname");
        assert_eq!(escape_path(b"new\nline"), "new\\nline");
        assert_eq!(escape_path(b"\x07bell"), "\\u{7}bell");
        // A literal backslash-x is told apart from an escaped byte.
        assert_ne!(escape_path(b"a\\xff"), escape_path(b"a\xff"));
        assert_eq!(escape_path(b"a\\xff"), "a\\\\xff");
    }
}
