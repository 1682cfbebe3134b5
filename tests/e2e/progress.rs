//! Live progress: a synchronization paced by blocksync's
//! `bandwidth-limit` shows, while it runs, how far it got in both objects'
//! status (read by the operator from the agents' logs), with the files to
//! transfer known from comparing the trees; once done, each object's
//! `latestMoverStatus.logs` holds its agent's summary.

use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use serde_json::json;
use wasmover_operator::controller::Replication;
use wasmover_operator::crd::SyncStatus;

use super::{Pair, SYNC, Suite};

/// New files the paced synchronization moves, of 1 MiB each.
const FILES: u64 = 30;

/// Whether `status` shows a synchronization part-way: running, some but
/// not all bytes and files done, of the files to transfer.
fn part_way(status: &SyncStatus) -> bool {
    let between = |done: Option<u64>, all: Option<u64>| matches!((done, all), (Some(done), Some(all)) if 0 < done && done < all);
    status.synchronizing()
        && between(status.bytes_transferred, status.bytes_total)
        && between(status.files_transferred, status.files_to_transfer)
}

/// Writes `FILES` new files to `pair`'s source, paces its agent to 1 MiB/s
/// (about 30 s: the operator reads progress every 10 s), and reads both
/// objects' status while it runs, then once it completed.
pub(crate) async fn story(suite: &Suite<'_>, pair: &Pair) {
    suite
        .write(
            &pair.src,
            "data",
            &format!(
                "mkdir -p p && for i in $(seq 1 {FILES}); do \
                 dd if=/dev/urandom of=p/f$i bs=1M count=1 2>/dev/null; done"
            ),
        )
        .await;
    let paced = json!({"spec": {"mover": {"parameters": {"bandwidth-limit": "1Mi"}}}});
    pair.sources()
        .patch("app", &PatchParams::default(), &Patch::Merge(paced))
        .await
        .unwrap();
    pair.trigger("paced").await;

    let started = Instant::now();
    let (mut source, mut destination) = (None, None);
    while source.is_none() || destination.is_none() {
        let src = pair.sources().get("app").await.unwrap().sync_status();
        let dst = pair.destinations().get("db").await.unwrap().sync_status();
        for (seen, status) in [(&mut source, &src), (&mut destination, &dst)] {
            if seen.is_none() && part_way(status) {
                *seen = Some((started.elapsed(), status.clone()));
            }
        }
        let done = |s: &SyncStatus| s.last_manual_sync.as_deref() == Some("paced");
        assert!(
            !done(&src) && !done(&dst),
            "the paced synchronization completed before both showed progress part-way: \
             source seen {:?}, destination seen {:?}; now {src:?} and {dst:?}",
            source.as_ref().map(|(at, _)| at),
            destination.as_ref().map(|(at, _)| at),
        );
        assert!(started.elapsed() < SYNC, "no progress part-way in {SYNC:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (kind, (at, status)) in [
        ("source", source.unwrap()),
        ("destination", destination.unwrap()),
    ] {
        eprintln!(
            "{kind} part-way after {at:.1?}: {:?}/{:?} bytes, {:?}/{:?} files",
            status.bytes_transferred,
            status.bytes_total,
            status.files_transferred,
            status.files_to_transfer
        );
        assert_eq!(
            status.files_to_transfer,
            Some(FILES),
            "{kind}: the new files, from comparing the trees"
        );
        assert_eq!(status.bytes_total, Some(FILES << 20), "{kind}");
    }

    let source = pair.wait("paced").await;
    let destination = pair.destinations().get("db").await.unwrap().sync_status();
    for (kind, status, result) in [
        ("source", &source, "sent /data to "),
        ("destination", &destination, "received /data from "),
    ] {
        assert_eq!(
            (status.files_transferred, status.files_to_transfer),
            (Some(FILES), Some(FILES)),
            "{kind}"
        );
        let logs = &status.latest_mover_status.as_ref().unwrap().logs;
        assert!(
            logs.lines().any(|l| l.starts_with(result)) && logs.contains("verified: tree digest"),
            "{kind}: the agent's summary of a successful run: {logs:?}"
        );
    }
    pair.compare("paced").await;
}
