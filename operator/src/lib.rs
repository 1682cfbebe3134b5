//! wasmover: the command line and (to come) the Kubernetes operator.

#![deny(missing_docs)]

pub mod builtin;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod guest_test;
pub mod metrics;
pub mod replicate;
mod terminal;

pub use terminal::ProgressBar;
