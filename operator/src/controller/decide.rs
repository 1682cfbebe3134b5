//! What a reconcile does next, decided from the object's spec, its status
//! and the time alone: no API calls, so every choice is unit-tested here.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;

use super::Replication;
use crate::crd::{CONDITION_SYNCHRONIZING, SyncStatus, reason};
use crate::schedule::Schedule;

/// Back-off after a failed synchronization.
pub(super) const ERROR_RETRY: Duration = Duration::from_secs(30);

/// What to do with an object now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Synchronization is paused and none is in flight: say so, then wait
    /// for a change.
    Paused,
    /// The last synchronization of this generation failed recently: look
    /// again after this long, without writing anything.
    BackOff(Duration),
    /// Nothing is due yet.
    Idle(Wait),
    /// The schedule does not parse or never fires.
    InvalidSchedule(String),
    /// Start a synchronization.
    Start {
        /// It starts so late that the following scheduled run is due too.
        missed: bool,
    },
    /// Continue the synchronization in progress.
    Continue {
        /// Only its cleanup is left.
        cleaning: bool,
    },
}

/// Why nothing runs now, and when to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Wait {
    /// `WaitingForManual` or `WaitingForSchedule`.
    pub reason: &'static str,
    /// The next scheduled synchronization; `None`: when the spec changes.
    pub next: Option<Timestamp>,
}

impl Wait {
    /// The condition's message.
    pub fn message(&self) -> String {
        match self.next {
            Some(next) => format!("next synchronization at {next}"),
            None => "waiting for spec.trigger.manual to change".into(),
        }
    }

    /// Requeues at the next synchronization (at least a second from `now`),
    /// or waits for a change.
    pub fn action(&self, now: Timestamp) -> Action {
        match self.next {
            Some(next) => Action::requeue(Duration::from_secs(
                (next.as_second() - now.as_second()).max(1) as u64,
            )),
            None => Action::await_change(),
        }
    }
}

/// Decides what to do with `obj`, whose status is `sync`, at `now`.
pub(super) fn decide<K: Replication>(obj: &K, sync: &SyncStatus, now: Timestamp) -> Decision {
    let current = sync.reason(CONDITION_SYNCHRONIZING);
    let in_progress = sync.synchronizing();
    if obj.paused() && !in_progress {
        return Decision::Paused;
    }
    // A failed synchronization is retried after the back-off, not on the
    // watch event of its own status write; a new spec retries at once.
    if let Some(wait) = backing_off(sync, obj.meta().generation, now) {
        return Decision::BackOff(wait);
    }
    if in_progress {
        return Decision::Continue {
            cleaning: current == Some(reason::CLEANING_UP),
        };
    }
    let trigger = obj.trigger();
    if let Some(manual) = trigger.and_then(|t| t.manual.as_ref()) {
        if sync.last_manual_sync.as_ref() == Some(manual) {
            return Decision::Idle(Wait {
                reason: reason::WAITING_FOR_MANUAL,
                next: None,
            });
        }
    } else if let Some(schedule) = trigger.and_then(|t| t.schedule.as_deref()) {
        let base = sync
            .last_sync_time
            .as_ref()
            .or(obj.meta().creation_timestamp.as_ref())
            .map_or(now, |t| t.0);
        return match next_fire(schedule, base) {
            Ok(next) if next > now => Decision::Idle(Wait {
                reason: reason::WAITING_FOR_SCHEDULE,
                next: Some(next),
            }),
            Ok(due) => Decision::Start {
                missed: next_fire(schedule, due).is_ok_and(|after| after <= now),
            },
            Err(message) => Decision::InvalidSchedule(message),
        };
    }
    Decision::Start { missed: false }
}

/// What to wait for after a synchronization completed at `now`: the next
/// manual trigger, the next scheduled run, or (with no trigger) nothing.
pub(super) fn after_completion<K: Replication>(obj: &K, now: Timestamp) -> Wait {
    let trigger = obj.trigger();
    match (
        trigger.and_then(|t| t.manual.as_ref()),
        trigger.and_then(|t| t.schedule.as_deref()),
    ) {
        (Some(_), _) => Wait {
            reason: reason::WAITING_FOR_MANUAL,
            next: None,
        },
        (None, Some(schedule)) => Wait {
            reason: reason::WAITING_FOR_SCHEDULE,
            next: next_fire(schedule, now).ok(),
        },
        (None, None) => Wait {
            reason: reason::WAITING_FOR_SCHEDULE,
            next: Some(now),
        },
    }
}

/// How long to wait still if the last synchronization of this generation
/// failed less than [`ERROR_RETRY`] ago.
fn backing_off(sync: &SyncStatus, generation: Option<i64>, now: Timestamp) -> Option<Duration> {
    let failed = sync.conditions.iter().find(|c| {
        c.type_ == CONDITION_SYNCHRONIZING
            && c.reason == reason::ERROR
            && c.observed_generation == generation
    })?;
    let since = Duration::try_from(now.duration_since(failed.last_transition_time.0)).ok()?;
    ERROR_RETRY
        .checked_sub(since)
        .filter(|wait| !wait.is_zero())
}

/// The next time `schedule` fires after `after`.
fn next_fire(schedule: &str, after: Timestamp) -> Result<Timestamp, String> {
    Schedule::parse(schedule)
        .map_err(|e| format!("invalid schedule {schedule:?}: {e}"))?
        .next_after(after)
        .ok_or_else(|| format!("schedule {schedule:?} never fires"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::crd::{ReplicationSource, condition};

    /// 22:13:20 UTC.
    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    #[test]
    fn schedules_fire_at_the_next_matching_minute() {
        let base = Timestamp::from_second(1_700_000_000).unwrap(); // 22:13:20 UTC
        let next = next_fire("*/5 * * * *", base).unwrap();
        assert_eq!(next.as_second(), 1_700_000_100); // 22:15:00
        assert!(
            next_fire("not a cron", base)
                .unwrap_err()
                .contains("invalid schedule")
        );
    }

    #[test]
    fn a_failure_backs_off_until_the_spec_changes() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let mut sync = SyncStatus::default();
        let mut failed = condition(
            CONDITION_SYNCHRONIZING,
            "False",
            reason::ERROR,
            "boom",
            Some(3),
        );
        failed.last_transition_time = Time(Timestamp::from_second(1_700_000_000 - 10).unwrap());
        sync.set_condition(failed);
        assert_eq!(
            backing_off(&sync, Some(3), now),
            Some(ERROR_RETRY - Duration::from_secs(10))
        );
        // A new generation (a new manual trigger, say) retries at once.
        assert_eq!(backing_off(&sync, Some(4), now), None);
        // So does the same generation once the back-off has passed.
        let later = Timestamp::from_second(1_700_000_000 + ERROR_RETRY.as_secs() as i64).unwrap();
        assert_eq!(backing_off(&sync, Some(3), later), None);
        // Other reasons never back off.
        sync.set_condition(condition(
            CONDITION_SYNCHRONIZING,
            "True",
            reason::SYNC_IN_PROGRESS,
            "running",
            Some(3),
        ));
        assert_eq!(backing_off(&sync, Some(3), now), None);
    }

    #[test]
    fn a_schedule_not_due_waits_for_its_next_fire() {
        // Created at 22:13:20; */5 fires at 22:15:00.
        let src = ReplicationSource::test().with_schedule("*/5 * * * *");
        let decision = decide(&src, &SyncStatus::default(), at(60));
        let wait = Wait {
            reason: reason::WAITING_FOR_SCHEDULE,
            next: Some(at(100)),
        };
        assert_eq!(decision, Decision::Idle(wait));
        assert_eq!(
            wait.message(),
            format!("next synchronization at {}", at(100))
        );
        // The requeue lands on the fire time.
        assert_eq!(
            wait.action(at(60)),
            Action::requeue(Duration::from_secs(40))
        );
    }

    #[test]
    fn a_monday_schedule_waits_for_monday() {
        // Created on Tuesday 2023-11-14 at 22:13:20 UTC; VolSync's Monday
        // is day 1, so the next run is Monday 2023-11-20 at 09:00.
        let src = ReplicationSource::test().with_schedule("0 9 * * 1");
        assert_eq!(
            decide(&src, &SyncStatus::default(), at(60)),
            Decision::Idle(Wait {
                reason: reason::WAITING_FOR_SCHEDULE,
                next: Some("2023-11-20T09:00:00Z".parse().unwrap()),
            })
        );
    }

    #[test]
    fn a_due_schedule_synchronizes_and_counts_a_missed_run() {
        let src = ReplicationSource::test().with_schedule("*/5 * * * *");
        assert_eq!(
            decide(&src, &SyncStatus::default(), at(100)),
            Decision::Start { missed: false }
        );
        // At 22:20:00 the 22:15 run is due and so is the 22:20 one.
        assert_eq!(
            decide(&src, &SyncStatus::default(), at(400)),
            Decision::Start { missed: true }
        );
        // The base is the last synchronization, not the creation.
        let synced = SyncStatus::test().synced_at(at(110));
        assert_eq!(
            decide(&src, &synced, at(300)),
            Decision::Idle(Wait {
                reason: reason::WAITING_FOR_SCHEDULE,
                next: Some(at(400))
            })
        );
    }

    #[test]
    fn an_invalid_schedule_is_reported() {
        let src = ReplicationSource::test().with_schedule("not a cron");
        assert!(matches!(
            decide(&src, &SyncStatus::default(), at(0)),
            Decision::InvalidSchedule(message) if message.contains("invalid schedule")
        ));
    }

    #[test]
    fn a_new_manual_trigger_synchronizes_and_a_served_one_idles() {
        let src = ReplicationSource::test()
            .with_manual("first")
            .with_schedule("*/5 * * * *");
        assert_eq!(
            decide(&src, &SyncStatus::default(), at(0)),
            Decision::Start { missed: false }
        );
        let served = SyncStatus::test().served_manual("first");
        let idle = Wait {
            reason: reason::WAITING_FOR_MANUAL,
            next: None,
        };
        // The schedule is not consulted while a manual trigger is set.
        assert_eq!(decide(&src, &served, at(1000)), Decision::Idle(idle));
        assert_eq!(idle.action(at(0)), Action::await_change());
        let src = src.with_manual("second");
        assert_eq!(
            decide(&src, &served, at(0)),
            Decision::Start { missed: false }
        );
    }

    #[test]
    fn without_a_trigger_every_reconcile_synchronizes() {
        let src = ReplicationSource::test();
        assert_eq!(
            decide(&src, &SyncStatus::default(), at(0)),
            Decision::Start { missed: false }
        );
        assert_eq!(
            after_completion(&src, at(5)),
            Wait {
                reason: reason::WAITING_FOR_SCHEDULE,
                next: Some(at(5))
            }
        );
    }

    #[test]
    fn paused_objects_wait_unless_a_synchronization_is_in_flight() {
        let src = ReplicationSource::test().with_pause();
        assert_eq!(
            decide(&src, &SyncStatus::default(), at(0)),
            Decision::Paused
        );
        // Pausing does not abandon a run half done.
        let running = SyncStatus::test().in_progress(reason::SYNC_IN_PROGRESS, at(0));
        assert_eq!(
            decide(&src, &running, at(1)),
            Decision::Continue { cleaning: false }
        );
    }

    #[test]
    fn a_recent_failure_waits_out_the_back_off() {
        let src = ReplicationSource::test().with_generation(3);
        let failed = SyncStatus::test().failed(Some(3), at(0));
        assert_eq!(
            decide(&src, &failed, at(10)),
            Decision::BackOff(ERROR_RETRY - Duration::from_secs(10))
        );
        // Once it has elapsed, the next synchronization starts.
        assert_eq!(
            decide(&src, &failed, at(ERROR_RETRY.as_secs() as i64)),
            Decision::Start { missed: false }
        );
        // A new generation starts at once.
        let src = src.with_generation(4);
        assert_eq!(
            decide(&src, &failed, at(10)),
            Decision::Start { missed: false }
        );
    }

    #[test]
    fn a_synchronization_in_progress_continues() {
        // Even when no trigger is due any more.
        let src = ReplicationSource::test().with_manual("served");
        let running = SyncStatus::test()
            .served_manual("served")
            .in_progress(reason::SYNC_IN_PROGRESS, at(0));
        assert_eq!(
            decide(&src, &running, at(1)),
            Decision::Continue { cleaning: false }
        );
        let cleaning = running.in_progress(reason::CLEANING_UP, at(1));
        assert_eq!(
            decide(&src, &cleaning, at(2)),
            Decision::Continue { cleaning: true }
        );
    }

    #[test]
    fn after_completion_waits_for_the_next_trigger() {
        let scheduled = ReplicationSource::test().with_schedule("*/5 * * * *");
        assert_eq!(
            after_completion(&scheduled, at(0)),
            Wait {
                reason: reason::WAITING_FOR_SCHEDULE,
                next: Some(at(100))
            }
        );
        let manual = scheduled.with_manual("once");
        assert_eq!(
            after_completion(&manual, at(0)),
            Wait {
                reason: reason::WAITING_FOR_MANUAL,
                next: None
            }
        );
    }
}
