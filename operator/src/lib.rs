//! wasmover: the command line and the Kubernetes operator.

#![deny(missing_docs)]

pub mod agent;
pub mod agent_log;
pub mod builtin;
pub mod client;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod dirs;
#[cfg(test)]
mod fixtures;
pub mod gc;
pub mod guest_test;
pub mod kubectl;
pub mod leader;
pub mod metrics;
pub mod modules;
pub mod policy;
pub mod registry;
pub mod replicate;
pub mod schedule;
mod terminal;
pub mod volsync;
pub mod workload;

pub use terminal::ProgressBar;
