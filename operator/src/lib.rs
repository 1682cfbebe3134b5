//! wasmover: the command line and (to come) the Kubernetes operator.

#![deny(missing_docs)]

pub mod builtin;
pub mod guest_test;
pub mod replicate;
mod terminal;

pub use terminal::ProgressBar;
