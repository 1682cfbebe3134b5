//! One instance of a module in its own store ([`MoverModule::instantiate`]),
//! and the calls of its exports.
//!
//! Each call starts a fresh meter (CPU time, host calls, log bytes) and maps
//! whatever stopped the guest to a [`RunError`] naming the module, the
//! export and the limit.

use wasmtime::component::{Instance, ResourceAny};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;

use crate::bindings::control::ModuleInfo;
use crate::bindings::types::{
    DestinationSpec, Error, Outcome, Parameter, SourceSpec, TransferReport,
};
use crate::bindings::{control, transfer, v0_2};
use crate::error::{MAX_MESSAGE_BYTES, MAX_REASON_BYTES, RunError, bounded};
use crate::limits::{LimitExceeded, MoverLimits};
use crate::module::{Capability, MoverModule, Versioned};
use crate::state::{Grants, HostState};

/// Lines of a module's stderr quoted in a trap's error.
const STDERR_TAIL_LINES: usize = 12;

/// A module's `control` export, of its contract version.
type Control = Versioned<control::Guest, v0_2::control::Guest>;
/// A module's `transfer` export, of its contract version.
type Transfer = Versioned<transfer::Guest, v0_2::transfer::Guest>;

/// A mover resource returned by a builder, bound to its instance.
#[derive(Clone, Copy, Debug)]
pub struct Mover(ResourceAny);

/// A live instance of a module.
pub struct MoverInstance {
    module: MoverModule,
    store: Store<HostState>,
    instance: Instance,
}

impl std::fmt::Debug for MoverInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoverInstance")
            .field("module", &self.module.name)
            .finish_non_exhaustive()
    }
}

impl MoverInstance {
    fn new(module: MoverModule, store: Store<HostState>, instance: Instance) -> Self {
        Self {
            module,
            store,
            instance,
        }
    }

    /// Stops the guest once it has executed longer than its CPU time. The
    /// callback runs at most once per epoch tick and only while wasm runs,
    /// so time spent in host functions is never charged to the guest.
    fn install_deadline(store: &mut Store<HostState>) {
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.meter.guest_time() > state.limits.cpu_time() {
                Err(LimitExceeded::CpuTime {
                    limit_ms: state.limits.cpu_time_ms,
                }
                .into())
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
    }

    /// Names what stopped a guest.
    fn classify(
        module: &MoverModule,
        export: &'static str,
        store: &Store<HostState>,
        error: wasmtime::Error,
    ) -> RunError {
        let stack_kib = module.engine.config().max_wasm_stack / 1024;
        let module = module.name.to_string();
        if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
            return RunError::Limit {
                module,
                export,
                limit: limit.clone(),
            };
        }
        if let Some(exit) = error.downcast_ref::<I32Exit>() {
            return RunError::Exit {
                module,
                code: exit.0,
            };
        }
        if let Some(Trap::StackOverflow) = error.downcast_ref::<Trap>() {
            return RunError::StackOverflow {
                module,
                export,
                limit_kib: stack_kib,
            };
        }
        // The root cause ("wasm trap: ...") says what happened; the wasm
        // backtrace around it goes to the debug log.
        tracing::debug!(module, export, "trap: {error:?}");
        let mut message = error.root_cause().to_string();
        if let Some(stderr) = &store.data().stderr {
            let text = String::from_utf8_lossy(&stderr.contents()).into_owned();
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if !lines.is_empty() {
                let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
                message.push_str("; module stderr: ");
                message.push_str(&tail.join(" | "));
            }
        }
        RunError::Trap {
            module,
            export,
            message,
        }
    }

    /// Calls an export with a fresh meter and maps the outcome.
    fn call<R>(
        &mut self,
        export: &'static str,
        f: impl FnOnce(&mut Self) -> wasmtime::Result<Result<R, Error>>,
    ) -> Result<R, RunError> {
        self.store.data_mut().start_call();
        self.store.set_epoch_deadline(1);
        match f(self) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(RunError::Mover {
                module: self.module.name.to_string(),
                export,
                reason: bounded(e.reason, MAX_REASON_BYTES),
                message: bounded(e.message, MAX_MESSAGE_BYTES),
            }),
            Err(e) => Err(Self::classify(&self.module, export, &self.store, e)),
        }
    }

    fn missing(&self, capability: Capability) -> RunError {
        RunError::MissingExport {
            module: self.module.name.to_string(),
            export: capability.export_name().to_owned(),
        }
    }

    /// Calls into the module's `control` export.
    fn with_control<R>(
        &mut self,
        export: &'static str,
        f: impl FnOnce(&Control, &mut Store<HostState>) -> wasmtime::Result<Result<R, Error>>,
    ) -> Result<R, RunError> {
        let indices = (self.module.exports.control.clone())
            .ok_or_else(|| self.missing(Capability::Control))?;
        self.call(export, |s| {
            let guest = match indices {
                Versioned::Current(i) => Versioned::Current(i.load(&mut s.store, &s.instance)?),
                Versioned::V0_2(i) => Versioned::V0_2(i.load(&mut s.store, &s.instance)?),
            };
            let result = f(&guest, &mut s.store);
            // What the module said last (the receiver's report) reaches the
            // peer now, not once this side has torn the instance down.
            // Best effort: a peer gone by now has everything it needed.
            if let Some(channel) = &mut s.store.data_mut().grants.channel {
                let _ = channel.flush();
            }
            result
        })
    }

    /// Calls into the module's `transfer` export.
    fn with_transfer<R>(
        &mut self,
        export: &'static str,
        f: impl FnOnce(&Transfer, &mut Store<HostState>) -> wasmtime::Result<Result<R, Error>>,
    ) -> Result<R, RunError> {
        let indices = (self.module.exports.transfer.clone())
            .ok_or_else(|| self.missing(Capability::Transfer))?;
        self.call(export, |s| {
            let guest = match indices {
                Versioned::Current(i) => Versioned::Current(i.load(&mut s.store, &s.instance)?),
                Versioned::V0_2(i) => Versioned::V0_2(i.load(&mut s.store, &s.instance)?),
            };
            let result = f(&guest, &mut s.store);
            // What the module said last (the receiver's report) reaches the
            // peer now, not once this side has torn the instance down.
            // Best effort: a peer gone by now has everything it needed.
            if let Some(channel) = &mut s.store.data_mut().grants.channel {
                let _ = channel.flush();
            }
            result
        })
    }

    /// The module's own description (`control.version-info`).
    pub fn version_info(&mut self) -> Result<ModuleInfo, RunError> {
        self.with_control("version-info", |control, store| match control {
            Versioned::Current(c) => c.call_version_info(store).map(Ok),
            Versioned::V0_2(c) => c.call_version_info(store).map(|i| Ok(i.into())),
        })
    }

    /// Asks the builder for a source mover; `None` means it declined.
    pub fn from_source(&mut self, spec: &SourceSpec) -> Result<Option<Mover>, RunError> {
        self.with_control("from-source", |control, store| {
            Ok(match control {
                Versioned::Current(c) => c.call_from_source(store, spec)?,
                Versioned::V0_2(c) => c.call_from_source(store, &spec.into())?.map_err(Into::into),
            }
            .map(|m| m.map(Mover)))
        })
    }

    /// Asks the builder for a destination mover; `None` means it declined.
    pub fn from_destination(&mut self, spec: &DestinationSpec) -> Result<Option<Mover>, RunError> {
        self.with_control("from-destination", |control, store| {
            Ok(match control {
                Versioned::Current(c) => c.call_from_destination(store, spec)?,
                Versioned::V0_2(c) => {
                    (c.call_from_destination(store, &spec.into())?).map_err(Into::into)
                }
            }
            .map(|m| m.map(Mover)))
        })
    }

    /// Advances a synchronization.
    pub fn synchronize(&mut self, mover: Mover) -> Result<Outcome, RunError> {
        self.with_control("synchronize", |control, store| match control {
            Versioned::Current(c) => c.mover().call_synchronize(store, mover.0),
            Versioned::V0_2(c) => Ok(c
                .mover()
                .call_synchronize(store, mover.0)?
                .map(Into::into)
                .map_err(Into::into)),
        })
    }

    /// Cleans up after synchronization.
    pub fn cleanup(&mut self, mover: Mover) -> Result<Outcome, RunError> {
        self.with_control("cleanup", |control, store| match control {
            Versioned::Current(c) => c.mover().call_cleanup(store, mover.0),
            Versioned::V0_2(c) => Ok(c
                .mover()
                .call_cleanup(store, mover.0)?
                .map(Into::into)
                .map_err(Into::into)),
        })
    }

    /// Validates parameters when the module has the `validate` capability;
    /// without it, every parameter set is accepted here and left to the
    /// module's builder.
    pub fn validate(&mut self, parameters: &[Parameter]) -> Result<(), RunError> {
        let Some(indices) = self.module.exports.validate.clone() else {
            return Ok(());
        };
        self.call("validate", |s| match indices {
            Versioned::Current(i) => {
                (i.load(&mut s.store, &s.instance)?).call_parameters(&mut s.store, parameters)
            }
            Versioned::V0_2(i) => Ok((i.load(&mut s.store, &s.instance)?)
                .call_parameters(&mut s.store, &v0_2::parameters(parameters))?
                .map_err(Into::into)),
        })
    }

    /// Runs the sending side of a transfer.
    pub fn send(&mut self, parameters: &[Parameter]) -> Result<TransferReport, RunError> {
        self.with_transfer("transfer.send", |transfer, store| match transfer {
            Versioned::Current(t) => t.call_send(store, parameters),
            Versioned::V0_2(t) => Ok(t
                .call_send(store, &v0_2::parameters(parameters))?
                .map(Into::into)
                .map_err(Into::into)),
        })
    }

    /// Runs the receiving side of a transfer.
    pub fn receive(&mut self, parameters: &[Parameter]) -> Result<TransferReport, RunError> {
        self.with_transfer("transfer.receive", |transfer, store| match transfer {
            Versioned::Current(t) => t.call_receive(store, parameters),
            Versioned::V0_2(t) => Ok(t
                .call_receive(store, &v0_2::parameters(parameters))?
                .map(Into::into)
                .map_err(Into::into)),
        })
    }

    /// Runs a command component (`wasi:cli/run`), such as a wasm unit-test
    /// harness. A non-zero exit is an error.
    pub fn run_command(&mut self) -> Result<(), RunError> {
        let indices = self
            .module
            .exports
            .run
            .clone()
            .ok_or_else(|| self.missing(Capability::Command))?;
        let module = self.module.name.to_string();
        self.call("wasi:cli/run", |s| {
            let run = indices.load(&mut s.store, &s.instance)?;
            Ok(run.call_run(&mut s.store)?.map_err(|()| Error {
                reason: "Exit".into(),
                message: format!("{module} reported failure"),
            }))
        })
    }
}

impl MoverModule {
    /// A fresh instance in its own store with the given limits and grants.
    pub fn instantiate(
        &self,
        limits: MoverLimits,
        grants: Grants,
    ) -> Result<MoverInstance, RunError> {
        let instantiate_error = |e: wasmtime::Error| RunError::Instantiate {
            module: self.name.to_string(),
            source: e.into(),
        };
        let state = HostState::new(self.name.clone(), limits, grants).map_err(instantiate_error)?;
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|state| &mut state.limiter);
        MoverInstance::install_deadline(&mut store);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| MoverInstance::classify(self, "instantiate", &store, e))?;
        Ok(MoverInstance::new(self.clone(), store, instance))
    }
}
