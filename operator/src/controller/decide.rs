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
    Start,
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
    } else if let Some(schedule) = schedule(obj) {
        let base = schedule_base(obj, sync).unwrap_or(now);
        return match next_fire(schedule, base) {
            Ok(next) if next > now => Decision::Idle(Wait {
                reason: reason::WAITING_FOR_SCHEDULE,
                next: Some(next),
            }),
            Ok(_) => Decision::Start,
            Err(message) => Decision::InvalidSchedule(message),
        };
    }
    Decision::Start
}

/// The schedule that triggers `obj`: none while a manual trigger is set.
fn schedule<K: Replication>(obj: &K) -> Option<&str> {
    let trigger = obj.trigger()?;
    match trigger.manual {
        Some(_) => None,
        None => trigger.schedule.as_deref(),
    }
}

/// What the schedule counts from: the last completion, else the creation.
fn schedule_base<K: Replication>(obj: &K, sync: &SyncStatus) -> Option<Timestamp> {
    sync.last_sync_time
        .as_ref()
        .or(obj.meta().creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// When the volume falls out of sync unless a synchronization completes
/// first, as VolSync reckons it: the synchronization that the schedule
/// starts after the last completion (or the creation) must complete by
/// the start after that one. `None` without a schedule, while a manual
/// trigger is set, or for a schedule that does not parse or never fires.
pub(super) fn deadline<K: Replication>(obj: &K, sync: &SyncStatus) -> Option<Timestamp> {
    let schedule = schedule(obj)?;
    let due = next_fire(schedule, schedule_base(obj, sync)?).ok()?;
    next_fire(schedule, due).ok()
}

/// Whether `obj`'s volume is out of sync at `now`: it never completed a
/// synchronization, the last one failed or was refused, or a schedule's
/// synchronization is [`overdue`]. Only a completion brings it back.
pub(super) fn out_of_sync<K: Replication>(obj: &K, sync: &SyncStatus, now: Timestamp) -> bool {
    let failed = matches!(
        sync.reason(CONDITION_SYNCHRONIZING),
        Some(reason::ERROR | reason::POLICY_REFUSED)
    );
    sync.last_sync_time.is_none() || failed || overdue(obj, sync, now)
}

/// Whether a schedule's synchronization is still not complete at `now`,
/// past its [`deadline`]: one completing now missed an interval.
pub(super) fn overdue<K: Replication>(obj: &K, sync: &SyncStatus, now: Timestamp) -> bool {
    deadline(obj, sync).is_some_and(|deadline| now > deadline)
}

/// How long from `now` until `obj` is [`overdue`], if it is not yet: when
/// to look again, lest the deadline pass unnoticed.
pub(super) fn until_overdue<K: Replication>(
    obj: &K,
    sync: &SyncStatus,
    now: Timestamp,
) -> Option<Duration> {
    let left = Duration::try_from(deadline(obj, sync)?.duration_since(now)).ok()?;
    // A second past it: the deadline itself is still on time.
    Some(left + Duration::from_secs(1))
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
    fn a_due_schedule_synchronizes() {
        let src = ReplicationSource::test().with_schedule("*/5 * * * *");
        assert_eq!(
            decide(&src, &SyncStatus::default(), at(100)),
            Decision::Start
        );
        // At 22:20:00 the 22:15 run is late, and still starts.
        assert_eq!(
            decide(&src, &SyncStatus::default(), at(400)),
            Decision::Start
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
    fn a_synchronization_is_overdue_once_the_start_after_its_own_passes() {
        // Completed at 22:15:10: the 22:20 run must complete by 22:25.
        let src = ReplicationSource::test().with_schedule("*/5 * * * *");
        let synced = SyncStatus::test().synced_at(at(110));
        assert_eq!(deadline(&src, &synced), Some(at(700)));
        // Running or not yet started makes no difference.
        let running = synced
            .clone()
            .in_progress(reason::SYNC_IN_PROGRESS, at(400));
        for sync in [&synced, &running] {
            assert!(!overdue(&src, sync, at(699)));
            assert!(!overdue(&src, sync, at(700)), "the deadline is on time");
            assert!(overdue(&src, sync, at(701)));
            assert!(!out_of_sync(&src, sync, at(700)));
            assert!(out_of_sync(&src, sync, at(701)));
        }
        // Until then, look again a second past the deadline.
        assert_eq!(
            until_overdue(&src, &running, at(640)),
            Some(Duration::from_secs(61))
        );
        assert_eq!(until_overdue(&src, &running, at(701)), None);
        // Never synchronized: counted from the creation at 22:13:20, the
        // 22:15 run must complete by 22:20; out of sync all along.
        let new = SyncStatus::default();
        assert_eq!(deadline(&src, &new), Some(at(400)));
        assert!(!overdue(&src, &new, at(400)) && overdue(&src, &new, at(401)));
        assert!(out_of_sync(&src, &new, at(0)));
    }

    #[test]
    fn only_a_schedule_has_a_deadline_but_a_failure_is_always_out_of_sync() {
        let synced = SyncStatus::test().synced_at(at(0));
        let far = at(365 * 24 * 3600);
        let unscheduled = ReplicationSource::test();
        let manual = ReplicationSource::test()
            .with_schedule("*/5 * * * *")
            .with_manual("once");
        let invalid = ReplicationSource::test().with_schedule("0 0 30 2 *");
        for src in [&unscheduled, &manual, &invalid] {
            assert_eq!(deadline(src, &synced), None);
            assert!(!overdue(src, &synced, far));
            assert!(!out_of_sync(src, &synced, far));
            assert_eq!(until_overdue(src, &synced, far), None);
        }
        // A failure or a refusal is out of sync at once, on time or not.
        let failed = synced.clone().failed(Some(1), at(10));
        assert!(out_of_sync(&unscheduled, &failed, at(11)));
        let mut refused = synced;
        refused.set_condition(condition(
            CONDITION_SYNCHRONIZING,
            "False",
            reason::POLICY_REFUSED,
            "refused",
            Some(1),
        ));
        assert!(out_of_sync(&unscheduled, &refused, at(11)));
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
        assert_eq!(decide(&src, &SyncStatus::default(), at(0)), Decision::Start);
        let served = SyncStatus::test().served_manual("first");
        let idle = Wait {
            reason: reason::WAITING_FOR_MANUAL,
            next: None,
        };
        // The schedule is not consulted while a manual trigger is set.
        assert_eq!(decide(&src, &served, at(1000)), Decision::Idle(idle));
        assert_eq!(idle.action(at(0)), Action::await_change());
        let src = src.with_manual("second");
        assert_eq!(decide(&src, &served, at(0)), Decision::Start);
    }

    #[test]
    fn without_a_trigger_every_reconcile_synchronizes() {
        let src = ReplicationSource::test();
        assert_eq!(decide(&src, &SyncStatus::default(), at(0)), Decision::Start);
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
            Decision::Start
        );
        // A new generation starts at once.
        let src = src.with_generation(4);
        assert_eq!(decide(&src, &failed, at(10)), Decision::Start);
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
