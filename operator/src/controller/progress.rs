//! Live progress of running synchronizations, read from their agents'
//! logs (see [`agent_log`]) through the API server (`pods/log`), since
//! agents hold no API credentials; and the summary of each agent that
//! ended, for `latestMoverStatus.logs`.
//!
//! Progress costs the API server a log read (proxied to a kubelet) and a
//! status write (an etcd write and a watch event to every watcher of the
//! kind, which reconciles the object once more). Thousands of objects
//! share one API server, so reads are bounded twice: one object's agents
//! are read at most once a [`READ_INTERVAL`], and all objects' together at
//! most [`READS_PER_SECOND`] on average: 1000 objects synchronizing at
//! once each update about every 100 s rather than load the API server
//! with 100 reads and writes a second. An agent that ended is read once
//! more, outside the bound (once per Pod), for its summary and last
//! progress, before the mover's cleanup deletes its Job and Pods.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, LogParams};
use kube::{Client, ResourceExt};
use wasmover_host::Progress;

use super::Replication;
use crate::agent_log::{self, AgentLog};
use crate::crd::SyncStatus;
use crate::metrics::{Metrics, ObjectLabels};

/// The least time between two reads of one object's agents' progress.
pub const READ_INTERVAL: Duration = Duration::from_secs(10);
/// Progress reads of all objects together, a second on average (and at
/// most this many at once).
pub const READS_PER_SECOND: f64 = 10.0;
/// Lines read from a running agent's log: its latest progress line is
/// among the last few, as it writes one a second at most.
const PROGRESS_TAIL_LINES: i64 = 20;
/// Lines read from an agent that ended, for its summary (VolSync's
/// default `MOVER_LOG_TAIL_LINES`).
const SUMMARY_TAIL_LINES: i64 = 100;
/// The most bytes of one log read.
const MAX_READ_BYTES: i64 = 64 << 10;

/// One object: kind, namespace, name.
pub(super) type ObjectKey = (String, String, String);

/// The key of `obj`.
pub(super) fn key<K: Replication>(obj: &K) -> ObjectKey {
    (
        K::kind(&()).into_owned(),
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
    )
}

/// What is known of each object's agents while it synchronizes.
#[derive(Debug)]
pub struct LiveProgress {
    objects: Mutex<HashMap<ObjectKey, Seen>>,
    budget: Mutex<Budget>,
}

impl Default for LiveProgress {
    fn default() -> Self {
        Self {
            objects: Mutex::default(),
            budget: Mutex::new(Budget::new(READS_PER_SECOND, Instant::now())),
        }
    }
}

/// What was read of one object's agents.
#[derive(Debug, Default)]
struct Seen {
    /// When their progress was last read.
    read_at: Option<Instant>,
    /// The Pods whose summary was read, by uid.
    summarized: Vec<String>,
    /// The latest summary read.
    summary: Option<String>,
}

/// A token bucket: [`Budget::take`] grants `rate` a second on average,
/// at most `rate` at once.
#[derive(Debug)]
struct Budget {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate,
            at: now,
        }
    }

    /// Takes one read, if the budget has one at `now`.
    fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

impl LiveProgress {
    /// Whether `key`'s running agents may be read at `now`: not within
    /// [`READ_INTERVAL`] of the last read, and the budget allows one.
    /// Takes the read when it may.
    fn may_read(&self, key: &ObjectKey, now: Instant) -> bool {
        let mut objects = self.objects.lock().expect("never poisoned");
        let seen = objects.entry(key.clone()).or_default();
        if seen
            .read_at
            .is_some_and(|at| now.saturating_duration_since(at) < READ_INTERVAL)
        {
            return false;
        }
        if !self.budget.lock().expect("never poisoned").take(now) {
            return false;
        }
        seen.read_at = Some(now);
        true
    }

    /// Reads what `key`'s agent `pods` created since `started` (those of
    /// this synchronization, not an earlier one's on their way out) report:
    /// the summary and last progress of each agent that ended, once per
    /// Pod; the progress of running agents, within the bounds. Returns the
    /// newest progress read; a failed read only leaves the status as it
    /// was.
    pub(super) async fn observe(
        &self,
        client: &Client,
        key: &ObjectKey,
        pods: &[Pod],
        started: Timestamp,
    ) -> Option<Progress> {
        let namespace = &key.1;
        // Whole seconds, as the API server keeps both times.
        let started = started.as_second();
        let pods: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                p.creation_timestamp()
                    .is_some_and(|t| t.0.as_second() >= started)
            })
            .collect();
        let mut newest = None;
        for pod in pods.iter().filter(|p| ended(p)) {
            let uid = pod.uid().unwrap_or_default();
            let known = self
                .objects
                .lock()
                .expect("never poisoned")
                .get(key)
                .is_some_and(|s| s.summarized.contains(&uid));
            if known {
                continue;
            }
            let Some(log) = read_log(client, namespace, pod, SUMMARY_TAIL_LINES).await else {
                continue;
            };
            let mut objects = self.objects.lock().expect("never poisoned");
            let seen = objects.entry(key.clone()).or_default();
            seen.summarized.push(uid);
            seen.summary = Some(log.summary).filter(|s| !s.is_empty());
            newest = log.progress.or(newest);
        }
        let running: Vec<&Pod> = pods.into_iter().filter(|p| running(p)).collect();
        if !running.is_empty() && self.may_read(key, Instant::now()) {
            for pod in running {
                if let Some(log) = read_log(client, namespace, pod, PROGRESS_TAIL_LINES).await {
                    newest = log.progress.or(newest);
                }
            }
        }
        newest
    }

    /// Forgets `key` (its synchronization ended, or it is going) and
    /// returns the summary of its last agent that ended, if one was read.
    pub(super) fn finish(&self, key: &ObjectKey) -> Option<String> {
        let mut objects = self.objects.lock().expect("never poisoned");
        objects.remove(key).and_then(|s| s.summary)
    }
}

/// Sets the status fields of a running synchronization from its agents'
/// progress: bytes and files of those the transfer rebuilds, done and in
/// all (the files to transfer are known once the trees are compared).
pub(super) fn set_live(sync: &mut SyncStatus, progress: &Progress) {
    sync.bytes_transferred = Some(progress.bytes_done);
    sync.bytes_total = Some(progress.bytes_total);
    sync.files_transferred = Some(progress.entries_done);
    sync.files_to_transfer = Some(progress.entries_total);
}

/// Sets the object's `wasmover_sync_progress` to its status's progress
/// fields.
pub(super) fn set_gauges(metrics: &Metrics, labels: &ObjectLabels, sync: &SyncStatus) {
    metrics.set_progress(
        labels,
        [
            ("bytesTransferred", sync.bytes_transferred),
            ("bytesTotal", sync.bytes_total),
            ("filesTransferred", sync.files_transferred),
            ("filesToTransfer", sync.files_to_transfer),
        ],
    );
}

/// The agent container: the Pod's first.
fn container(pod: &Pod) -> Option<String> {
    Some(pod.spec.as_ref()?.containers.first()?.name.clone())
}

/// Whether the agent's container is running.
fn running(pod: &Pod) -> bool {
    agent_state(pod).is_some_and(|s| s.running.is_some())
}

/// Whether the agent's container ended (well or not).
fn ended(pod: &Pod) -> bool {
    agent_state(pod).is_some_and(|s| s.terminated.is_some())
}

fn agent_state(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerState> {
    let name = container(pod)?;
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find(|s| s.name == name)?.state.as_ref()
}

/// The last `lines` of the agent's log, read; `None` if it cannot be had
/// (logged: the diagnosis is a courtesy, never a reason to fail).
async fn read_log(client: &Client, namespace: &str, pod: &Pod, lines: i64) -> Option<AgentLog> {
    let params = LogParams {
        container: container(pod),
        tail_lines: Some(lines),
        limit_bytes: Some(MAX_READ_BYTES),
        ..LogParams::default()
    };
    let name = pod.name_any();
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .logs(&name, &params)
        .await
    {
        Ok(text) => Some(agent_log::read(&text)),
        Err(e) => {
            tracing::debug!(pod = %name, "cannot read the agent's log: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(name: &str) -> ObjectKey {
        ("ReplicationSource".into(), "team".into(), name.into())
    }

    /// One object is read once an interval; all together within the
    /// budget, which refills at its rate.
    #[test]
    fn reads_are_bounded_per_object_and_in_all() {
        let live = LiveProgress::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(live.may_read(&key("a"), at(0)));
        assert!(!live.may_read(&key("a"), at(9_999)), "within the interval");
        assert!(live.may_read(&key("a"), at(10_000)));
        // A burst of objects drains the budget...
        let granted = (0..100)
            .filter(|i| live.may_read(&key(&format!("o{i}")), at(10_000)))
            .count();
        assert!(
            (READS_PER_SECOND as usize - 2..=READS_PER_SECOND as usize).contains(&granted),
            "{granted}"
        );
        assert!(!live.may_read(&key("late"), at(10_000)));
        // ...which refills at its rate: 10 a second, not more.
        let later = (0..100)
            .filter(|i| live.may_read(&key(&format!("p{i}")), at(11_000)))
            .count();
        assert_eq!(later, READS_PER_SECOND as usize);
        // A denied object is read as soon as it may: its interval did not
        // start.
        assert!(live.may_read(&key("late"), at(12_000)));
    }

    #[test]
    fn an_agent_is_running_or_ended_by_its_containers_state() {
        let pod = |state: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "db-blocksync-dst-x"},
                "spec": {"containers": [{"name": "agent"}]},
                "status": {"containerStatuses": [{
                    "name": "agent", "image": "x", "imageID": "", "ready": true,
                    "restartCount": 0, "state": state,
                }]},
            }))
            .unwrap()
        };
        let up = pod(json!({"running": {}}));
        assert!(running(&up) && !ended(&up));
        let done = pod(json!({"terminated": {"exitCode": 0}}));
        assert!(!running(&done) && ended(&done));
        let waiting = pod(json!({"waiting": {"reason": "ContainerCreating"}}));
        assert!(!running(&waiting) && !ended(&waiting));
        assert_eq!(container(&up).as_deref(), Some("agent"));
    }

    #[test]
    fn a_finished_object_is_forgotten() {
        let live = LiveProgress::default();
        let start = Instant::now();
        assert!(live.may_read(&key("a"), start));
        live.objects
            .lock()
            .unwrap()
            .get_mut(&key("a"))
            .unwrap()
            .summary = Some("sent /data".into());
        assert_eq!(live.finish(&key("a")).as_deref(), Some("sent /data"));
        assert_eq!(live.finish(&key("a")), None);
        assert!(live.may_read(&key("a"), start), "a new synchronization");
    }
}
