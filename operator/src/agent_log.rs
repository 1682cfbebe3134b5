//! What an agent says in its log for the operator to read back: a
//! progress line at most once a [`LINE_INTERVAL`] (and the last one at
//! the end), written by [`ProgressLines`]; [`read`] finds the latest
//! progress in a log's tail and the lines that summarize a run (its
//! result line, warnings, errors) for `latestMoverStatus.logs`, as
//! VolSync fills it from its mover Pod's log.
//!
//! Agents hold no API credentials: their log, which the kubelet keeps and
//! the API server serves (`pods/log`), is how they talk to the operator
//! while they run, as their termination message is once they end.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmover_host::{Observer, Progress};

/// The start of a progress line.
pub const PROGRESS_PREFIX: &str = "wasmover progress: ";

/// The least time between two progress lines: one a second keeps a day's
/// log of a long transfer to a few MB, and the operator reads less often.
pub const LINE_INTERVAL: Duration = Duration::from_secs(1);

/// The most bytes of summary [`read`] returns, its last ones (VolSync's
/// default `MOVER_LOG_MAX_BYTES`).
pub const MAX_SUMMARY_BYTES: usize = 1024;

/// A progress line: `wasmover progress: bytes 1048576/4194304, files 3/40`
/// (done/total; a total of 0 is unknown).
pub fn progress_line(p: &Progress) -> String {
    format!(
        "{PROGRESS_PREFIX}bytes {}/{}, files {}/{}",
        p.bytes_done, p.bytes_total, p.entries_done, p.entries_total
    )
}

/// The progress in a line written by [`progress_line`]; `None` for any
/// other line.
pub fn parse_progress(line: &str) -> Option<Progress> {
    let rest = line.trim_end().strip_prefix(PROGRESS_PREFIX)?;
    let (bytes, files) = rest.split_once(", ")?;
    let pair = |text: &str, label: &str| -> Option<(u64, u64)> {
        let (done, total) = text.strip_prefix(label)?.split_once('/')?;
        Some((done.parse().ok()?, total.parse().ok()?))
    };
    let (bytes_done, bytes_total) = pair(bytes, "bytes ")?;
    let (entries_done, entries_total) = pair(files, "files ")?;
    Some(Progress {
        bytes_done,
        bytes_total,
        entries_done,
        entries_total,
    })
}

/// Writes a module's progress as [`progress_line`]s to stderr (the Pod's
/// log), at most one a [`LINE_INTERVAL`]; [`ProgressLines::finish`]
/// writes the last progress if it was held back.
#[derive(Debug, Default)]
pub struct ProgressLines {
    state: Mutex<LineState>,
}

#[derive(Debug, Default)]
struct LineState {
    /// When the last line was written.
    written: Option<Instant>,
    /// Progress reported since, not written yet.
    pending: Option<Progress>,
}

impl LineState {
    /// The line to write for `progress` reported at `now`, if one is due.
    fn report(&mut self, progress: Progress, now: Instant) -> Option<String> {
        let due = self
            .written
            .is_none_or(|at| now.duration_since(at) >= LINE_INTERVAL);
        if !due {
            self.pending = Some(progress);
            return None;
        }
        self.written = Some(now);
        self.pending = None;
        Some(progress_line(&progress))
    }

    /// The line of the progress held back, if any.
    fn finish(&mut self) -> Option<String> {
        self.pending.take().map(|p| progress_line(&p))
    }
}

impl ProgressLines {
    /// Writes the progress held back, if any: the log ends with the last
    /// progress reported.
    pub fn finish(&self) {
        if let Some(line) = self.state.lock().expect("never poisoned").finish() {
            write_line(&line);
        }
    }
}

impl Observer for ProgressLines {
    fn progress(&self, _module: &str, progress: Progress) {
        let line = self
            .state
            .lock()
            .expect("never poisoned")
            .report(progress, Instant::now());
        if let Some(line) = line {
            write_line(&line);
        }
    }
}

/// One write, so that lines of other threads never land inside it.
fn write_line(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// What the tail of an agent's log says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentLog {
    /// The latest progress line's.
    pub progress: Option<Progress>,
    /// The lines that summarize the run, oldest first, at most
    /// [`MAX_SUMMARY_BYTES`] (the last ones, whole lines).
    pub summary: String,
}

/// Reads the tail of an agent's log: its latest progress, and its summary
/// lines: the result (`sent …`, `received …`), the agent's own notices
/// (`wasmover: …`, but where it listens) and warnings and errors logged
/// as text or JSON.
pub fn read(log: &str) -> AgentLog {
    let mut progress = None;
    let mut summary: Vec<&str> = Vec::new();
    for line in log.lines() {
        if let Some(p) = parse_progress(line) {
            progress = Some(p);
        } else if summarizes(line) {
            summary.push(line.trim_end());
        }
    }
    // The last lines that fit, whole.
    let mut kept = 0;
    let mut bytes = 0;
    for line in summary.iter().rev() {
        let more = line.len() + usize::from(kept > 0);
        if bytes + more > MAX_SUMMARY_BYTES {
            break;
        }
        bytes += more;
        kept += 1;
    }
    AgentLog {
        progress,
        summary: summary[summary.len() - kept..].join("\n"),
    }
}

/// Whether a log line belongs in the summary of a run.
fn summarizes(line: &str) -> bool {
    let result = line.starts_with("sent ") || line.starts_with("received ");
    let notice = line.starts_with("wasmover: ") && !line.starts_with("wasmover: listening on ");
    let level = [
        " WARN ",
        " ERROR ",
        r#""level":"WARN""#,
        r#""level":"ERROR""#,
    ]
    .iter()
    .any(|l| line.contains(l));
    result || notice || level
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(bytes_done: u64, entries_done: u64) -> Progress {
        Progress {
            bytes_done,
            bytes_total: 4 << 20,
            entries_done,
            entries_total: 40,
        }
    }

    #[test]
    fn a_progress_line_reads_back_and_nothing_else_does() {
        let p = progress(1 << 20, 3);
        let line = progress_line(&p);
        assert_eq!(line, "wasmover progress: bytes 1048576/4194304, files 3/40");
        assert_eq!(parse_progress(&line), Some(p));
        assert_eq!(parse_progress(&format!("{line}\r")), Some(p));
        for other in [
            "wasmover progress: bytes 1/2",
            "wasmover progress: bytes x/2, files 1/2",
            "wasmover progress: bytes 1/2, files 1/-2",
            "wasmover progress: files 1/2, bytes 1/2",
            "  wasmover progress: bytes 1/2, files 1/2",
            "sent /data to 10.0.0.1:8873",
        ] {
            assert_eq!(parse_progress(other), None, "{other}");
        }
    }

    /// One line a second at most; what was held back comes out at the end.
    #[test]
    fn lines_are_written_at_most_once_an_interval_and_the_last_at_the_end() {
        let mut state = LineState::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert!(state.report(progress(1, 1), at(0)).is_some(), "the first");
        assert_eq!(state.report(progress(2, 2), at(300)), None);
        assert_eq!(state.report(progress(3, 3), at(999)), None);
        let line = state.report(progress(4, 4), at(1000)).unwrap();
        assert_eq!(parse_progress(&line), Some(progress(4, 4)));
        assert_eq!(state.finish(), None, "nothing held back");
        assert_eq!(state.report(progress(5, 5), at(1500)), None);
        let last = state.finish().unwrap();
        assert_eq!(parse_progress(&last), Some(progress(5, 5)));
        assert_eq!(state.finish(), None);
    }

    #[test]
    fn a_logs_tail_gives_the_latest_progress_and_the_summary() {
        let log = "\
wasmover: listening on 0.0.0.0:8873
wasmover progress: bytes 0/100, files 0/2
2026-01-01T00:00:00.000000Z  INFO transfer: sending a tree of 4 entries
wasmover progress: bytes 50/100, files 1/2
2026-01-01T00:00:01.000000Z  WARN mover: owners are not kept
{\"timestamp\":\"x\",\"level\":\"ERROR\",\"fields\":{\"message\":\"m\"}}
wasmover progress: bytes 100/100, files 2/2
received /data from 10.0.0.2:41000 with blocksync@sha256:ab in 1.00s: 4 entries
";
        let tail = read(log);
        assert_eq!(
            tail.progress,
            Some(Progress {
                bytes_done: 100,
                bytes_total: 100,
                entries_done: 2,
                entries_total: 2
            })
        );
        let lines: Vec<&str> = tail.summary.lines().collect();
        assert_eq!(lines.len(), 3, "{}", tail.summary);
        assert!(lines[0].contains("WARN mover: owners are not kept"));
        assert!(lines[1].contains(r#""level":"ERROR""#));
        assert!(lines[2].starts_with("received /data from"));
        assert_eq!(read(""), AgentLog::default());
    }

    #[test]
    fn the_summary_keeps_the_last_whole_lines_that_fit() {
        let warning = |i| {
            format!(
                "2026-01-01T00:00:00Z  WARN mover: warning {i} {}",
                "x".repeat(80)
            )
        };
        let mut log: Vec<String> = (0..100).map(warning).collect();
        log.push("sent /data to 10.0.0.1:8873 with blocksync in 1.00s".into());
        let summary = read(&log.join("\n")).summary;
        assert!(summary.len() <= MAX_SUMMARY_BYTES, "{}", summary.len());
        assert!(summary.len() > MAX_SUMMARY_BYTES - 120, "{}", summary.len());
        assert!(summary.ends_with("in 1.00s"), "the result line is last");
        assert!(summary.starts_with("2026-"), "whole lines: {summary}");
        assert!(summary.contains("warning 99 "));
        assert!(!summary.contains("warning 0 "));
    }
}
