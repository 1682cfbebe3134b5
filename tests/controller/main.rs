//! The operator against a real kube-apiserver and etcd on loopback, built
//! and started by `tests/apiserver/` (no mocks of the API): one test binary,
//! a module per story.
//!
//! Nothing runs Pods here. Where a synchronization waits for its agent Job,
//! the test plays the Job controller: it writes the Job's status as the Job
//! controller would (`job_controller_stand_in`).

mod endpoint;
mod kubectl;
mod leader;
mod lifecycle;
mod oci;
mod policy;
mod replication;
mod sandbox;
mod schedule;
mod snapshot;
mod volsync;
