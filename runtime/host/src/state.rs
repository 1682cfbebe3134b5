//! What one store holds: the module's grants, its WASI context, its limits
//! and the meter that enforces them.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::blocks::BlockSession;
use crate::channel::Channel;
use crate::kube::ScopedCluster;
use crate::limits::{LimitExceeded, MemoryLimiter, MoverLimits};
use crate::volume::{Access, Volume};

pub use crate::observer::{Event, Observer, Progress, Quiet};

/// Where the volume appears inside the guest (WASI preopen).
pub const GUEST_VOLUME_PATH: &str = "/volume";

/// Bytes of a module's stderr kept for error messages.
const STDERR_CAPTURE: usize = 64 << 10;

/// What the host grants one run of a module: nothing unless given here.
pub struct Grants {
    pub(crate) volume: Option<Volume>,
    pub(crate) channel: Option<Channel>,
    pub(crate) cluster: Option<ScopedCluster>,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) args: Vec<String>,
    pub(crate) inherit_stdio: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            volume: None,
            channel: None,
            cluster: None,
            observer: Arc::new(Quiet),
            args: Vec::new(),
            inherit_stdio: false,
        }
    }
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("volume", &self.volume)
            .field("channel", &self.channel)
            .field("cluster", &self.cluster)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl Grants {
    /// No grants at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants a volume, reachable through the `volume` and `blocks`
    /// imports; a directory tree is also preopened at [`GUEST_VOLUME_PATH`].
    pub fn with_volume(mut self, volume: Volume) -> Self {
        self.volume = Some(volume);
        self
    }

    /// Connects the `channel` and `blocks` imports to a peer.
    pub fn with_channel(mut self, channel: Channel) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Grants scoped Kubernetes access.
    pub fn with_cluster(mut self, cluster: ScopedCluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Sends Events and progress to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Command-line arguments of a command component (`wasi:cli/run`).
    pub fn with_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Lets a command component write to the host's stdout and stderr.
    pub fn with_inherited_stdio(mut self) -> Self {
        self.inherit_stdio = true;
        self
    }

    /// The WASI context: no environment, no network, no clock tricks; only
    /// the granted volume, read-only when the volume is.
    /// Unless stdio is inherited, stderr is kept (bounded) so that a trap's
    /// error can quote what the module printed, such as a panic message.
    fn wasi(&self) -> wasmtime::Result<(WasiCtx, Option<MemoryOutputPipe>)> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .args(&self.args);
        let stderr = if self.inherit_stdio {
            wasi.inherit_stdout().inherit_stderr();
            None
        } else {
            let pipe = MemoryOutputPipe::new(STDERR_CAPTURE);
            wasi.stderr(pipe.clone());
            Some(pipe)
        };
        // A block volume has no directory to show; its content is reached
        // through `blocks` only.
        if let Some(Volume::Tree(volume)) = &self.volume {
            let perms = match volume.access() {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            wasi.preopened_dir(volume.root(), GUEST_VOLUME_PATH, perms)?;
        }
        Ok((wasi.build(), stderr))
    }
}

/// CPU time this thread has consumed. Guests run on the calling thread, so
/// differences of it measure work, not waiting: a loaded machine does not
/// make a guest look slower than it is.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Counts what a module consumed during one call of an export.
#[derive(Debug)]
pub(crate) struct Meter {
    started: Duration,
    in_host: Duration,
    pub(crate) host_calls: u64,
    pub(crate) kube_calls: u64,
    pub(crate) log_bytes: u64,
    pub(crate) logs_dropped: u64,
}

impl Meter {
    fn start() -> Self {
        Self {
            started: thread_cpu_time(),
            in_host: Duration::ZERO,
            host_calls: 0,
            kube_calls: 0,
            log_bytes: 0,
            logs_dropped: 0,
        }
    }

    /// CPU time spent executing the guest's own code.
    pub(crate) fn guest_time(&self) -> Duration {
        thread_cpu_time()
            .saturating_sub(self.started)
            .saturating_sub(self.in_host)
    }
}

/// The data of one store.
pub struct HostState {
    pub(crate) module: Arc<str>,
    pub(crate) limits: MoverLimits,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) meter: Meter,
    pub(crate) grants: Grants,
    pub(crate) blocks: BlockSession,
    /// What the module last reported through `progress`: native work
    /// within a file reports on top of it.
    pub(crate) progress: Progress,
    /// The special files the last scan of a 0.2 module did not list,
    /// which its digests leave out (`crate::host::v0_2`).
    pub(crate) unlisted: Vec<Vec<u8>>,
    pub(crate) stderr: Option<MemoryOutputPipe>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    pub(crate) fn new(
        module: Arc<str>,
        limits: MoverLimits,
        grants: Grants,
    ) -> wasmtime::Result<Self> {
        let mut table = ResourceTable::new();
        // Bounds the handles (files, streams) a module can hold open.
        table.set_max_capacity(1 << 16);
        let (wasi, stderr) = grants.wasi()?;
        Ok(Self {
            module,
            limiter: MemoryLimiter::new(limits.memory_bytes),
            limits,
            meter: Meter::start(),
            wasi,
            stderr,
            grants,
            blocks: BlockSession::default(),
            progress: Progress::default(),
            unlisted: Vec::new(),
            table,
        })
    }

    /// Starts metering a new call of an export.
    pub(crate) fn start_call(&mut self) {
        self.meter = Meter::start();
    }

    /// Runs one host call: counts it against the budget and keeps its time
    /// out of the guest's CPU time.
    pub(crate) fn host_call<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> wasmtime::Result<R> {
        self.meter.host_calls += 1;
        if self.meter.host_calls > self.limits.host_calls {
            return Err(LimitExceeded::HostCalls {
                limit: self.limits.host_calls,
            }
            .into());
        }
        let started = thread_cpu_time();
        let result = f(self);
        self.meter.in_host += thread_cpu_time().saturating_sub(started);
        Ok(result)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
