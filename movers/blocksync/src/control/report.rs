//! What an agent reported: the transfer report it left as its Pod's
//! termination message, read back for the replication's status.

use serde_json::Value;
use wasmover_sdk::kube;
use wasmover_sdk::types::TransferReport;
use wasmover_sdk::{AgentReport, log};

use super::jobs::AGENT_LABEL;
use super::objects::kube_error;

/// Where an agent writes its transfer report (`--report-file`): its
/// container's termination message, which the kubelet copies into the
/// Pod's status for the control plane to read.
pub(super) const REPORT_FILE: &str = "/dev/termination-log";

/// The transfer report the agent of Job `job` left as its Pod's
/// termination message; `None` when no Pod of the Job ended with one, or
/// when Pods cannot be read here.
pub(super) fn agent_report(job: &str) -> Option<TransferReport> {
    let pods = match kube::list_objects("v1", "Pod", Some(&format!("{AGENT_LABEL}={job}"))) {
        Ok(pods) => pods,
        Err(e) => {
            log::warn(kube_error(&format!("reading the Pods of Job {job}"), e).message);
            return None;
        }
    };
    let report = pods
        .iter()
        .filter_map(|pod| serde_json::from_str::<Value>(pod).ok())
        .find_map(|pod| report_of_pod(&pod));
    if report.is_none() {
        log::warn(format!(
            "no Pod of Job {job} left a transfer report: the status shows no tree digest"
        ));
    }
    report
}

/// The report in a Pod's termination message, if a container ended well
/// with one (`wasmover agent --report-file`).
fn report_of_pod(pod: &Value) -> Option<TransferReport> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find_map(|status| {
            let ended = &status["state"]["terminated"];
            if ended["exitCode"].as_i64() != Some(0) {
                return None;
            }
            let r: AgentReport = serde_json::from_str(ended["message"].as_str()?).ok()?;
            Some(TransferReport {
                entries_total: r.entries_total,
                files_transferred: r.files_transferred,
                entries_deleted: r.entries_deleted,
                bytes_total: r.bytes_total,
                bytes_matched: r.bytes_matched,
                bytes_literal: r.bytes_literal,
                bytes_literal_wire: r.bytes_literal_wire,
                entries_skipped: r.entries_skipped,
                bytes_on_wire: r.bytes_on_wire,
                tree_digest: r.tree_digest,
                verified: r.verified,
            })
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What `wasmover agent --report-file` writes and the kubelet copies
    /// into the Pod's status is read back; other terminations are not.
    #[test]
    fn the_agents_report_is_read_from_its_pods_termination_message() {
        let message = json!({
            "entriesTotal": 4, "filesTransferred": 2, "entriesDeleted": 1,
            "bytesTotal": 100, "bytesMatched": 60, "bytesLiteral": 40,
            "bytesOnWire": 90, "treeDigest": "ab".repeat(32), "verified": true,
        })
        .to_string();
        let pod = |exit_code: i64, message: &str| {
            json!({"status": {"containerStatuses": [
                {"state": {"terminated": {"exitCode": exit_code, "message": message}}},
            ]}})
        };
        let report = report_of_pod(&pod(0, &message)).unwrap();
        assert_eq!(report.tree_digest, "ab".repeat(32));
        assert!(report.verified);
        assert_eq!(
            (
                report.entries_total,
                report.entries_deleted,
                report.bytes_on_wire
            ),
            (4, 1, 90)
        );
        assert!(report_of_pod(&pod(1, &message)).is_none(), "a failed agent");
        assert!(report_of_pod(&pod(0, "done")).is_none(), "not a report");
        assert!(
            report_of_pod(&json!({"status": {}})).is_none(),
            "still running"
        );
        // The test cluster has no Pods for this Job: no report, no error.
        assert!(agent_report("nothing-ran").is_none());
    }
}
