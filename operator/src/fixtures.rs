//! Builders of test objects: `ReplicationSource::test().with_schedule(..)`,
//! `SyncStatus::test().failed(..)`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{
    CONDITION_SYNCHRONIZING, ReplicationSource, ReplicationSourceSpec, SyncStatus, Trigger,
    condition, reason,
};

/// When test objects are created: 2023-11-14 22:13:20 UTC.
pub const CREATED: i64 = 1_700_000_000;

impl ReplicationSource {
    /// `ns/db`, generation 1, created at [`CREATED`], without a trigger.
    pub fn test() -> Self {
        let mut src = ReplicationSource::new(
            "db",
            ReplicationSourceSpec {
                source_pvc: "data".into(),
                trigger: None,
                paused: false,
                copy_method: Default::default(),
                storage_class_name: None,
                volume_snapshot_class_name: None,
                access_modes: Vec::new(),
                mover: Default::default(),
            },
        );
        src.metadata.namespace = Some("ns".into());
        src.metadata.generation = Some(1);
        src.metadata.creation_timestamp = Some(Time(Timestamp::from_second(CREATED).unwrap()));
        src
    }

    /// Runs on the cron `schedule`.
    pub fn with_schedule(mut self, schedule: &str) -> Self {
        self.spec
            .trigger
            .get_or_insert_with(Trigger::default)
            .schedule = Some(schedule.into());
        self
    }

    /// Runs once per value of the manual trigger.
    pub fn with_manual(mut self, value: &str) -> Self {
        self.spec
            .trigger
            .get_or_insert_with(Trigger::default)
            .manual = Some(value.into());
        self
    }

    /// Paused.
    pub fn with_pause(mut self) -> Self {
        self.spec.paused = true;
        self
    }

    /// At `generation`.
    pub fn with_generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }
}

impl SyncStatus {
    /// Nothing happened yet.
    pub fn test() -> Self {
        Self::default()
    }

    /// The last synchronization completed at `at`.
    pub fn synced_at(mut self, at: Timestamp) -> Self {
        self.last_sync_time = Some(Time(at));
        self
    }

    /// The manual trigger `value` was served.
    pub fn served_manual(mut self, value: &str) -> Self {
        self.last_manual_sync = Some(value.into());
        self
    }

    /// Synchronizing since `at`, for `why` (`SyncInProgress` or `CleaningUp`).
    pub fn in_progress(self, why: &str, at: Timestamp) -> Self {
        self.set(
            condition(CONDITION_SYNCHRONIZING, "True", why, "", Some(1)),
            at,
        )
    }

    /// The synchronization of `generation` failed at `at`.
    pub fn failed(self, generation: Option<i64>, at: Timestamp) -> Self {
        let failed = condition(
            CONDITION_SYNCHRONIZING,
            "False",
            reason::ERROR,
            "boom",
            generation,
        );
        self.set(failed, at)
    }

    fn set(
        mut self,
        mut new: k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
        at: Timestamp,
    ) -> Self {
        new.last_transition_time = Time(at);
        self.set_condition(new);
        self
    }
}
