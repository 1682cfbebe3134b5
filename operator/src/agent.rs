//! `wasmover agent`: one side of a mover's data plane in this process, the
//! other side in another agent, joined by a TLS connection authenticated by
//! a pre-shared key (`wasmover-net`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmover_host::bindings::types::{Parameter, TransferReport};
use wasmover_host::{
    Access, Channel, Grants, HashStore, MoverLimits, MoverModule, Observer, RunError, Volume,
};
use wasmover_net::{Connection, Listener, NetError, Options, Psk};

use crate::replicate::{StateDir, check_transfer, is_peer_gone};

/// How long a side that failed keeps reading from its peer so that the
/// peer reads why ([`Connection::abandon`]).
const ABANDON_LIMIT: Duration = Duration::from_secs(5);
/// Pause between connection attempts while the receiver is not up.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The volume could not be opened or created.
    #[error("volume {path}: {cause}")]
    Volume {
        /// The directory, device or image file.
        path: PathBuf,
        /// The error.
        cause: std::io::Error,
    },
    /// The loaded module is not the one the operator pinned.
    #[error(
        "module {module} has digest {digest}, but the operator pinned {pinned} \
         (--module-digest): refusing to run a module other than the pinned one"
    )]
    NotPinned {
        /// The loaded module's name.
        module: String,
        /// Its content digest.
        digest: String,
        /// The digest the operator pinned.
        pinned: String,
    },
    /// The mover cannot run a transfer with these parameters.
    #[error(transparent)]
    Module(Box<RunError>),
    /// No authenticated connection.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The mover failed during the transfer.
    #[error("transfer {direction} {peer}: {cause}")]
    Transfer {
        /// `to` or `from`.
        direction: &'static str,
        /// The peer agent.
        peer: SocketAddr,
        /// What stopped it.
        cause: Box<RunError>,
    },
}

/// Checks that `module` is the one pinned by content digest `pinned`
/// ([`MoverModule::digest`]), before anything runs.
pub fn check_pinned(module: &MoverModule, pinned: &str) -> Result<(), AgentError> {
    if module.digest() == pinned {
        return Ok(());
    }
    Err(AgentError::NotPinned {
        module: module.name().to_owned(),
        digest: module.digest().to_owned(),
        pinned: pinned.to_owned(),
    })
}

/// What each side runs: the module, its limits and parameters.
#[derive(Clone, Copy, Debug)]
pub struct Transfer<'a> {
    /// The mover module.
    pub module: &'a MoverModule,
    /// Limits for the data-plane call.
    pub limits: MoverLimits,
    /// The mover's parameters (the same on both sides).
    pub parameters: &'a [Parameter],
}

/// A finished transfer.
#[derive(Debug)]
pub struct Finished {
    /// The peer agent.
    pub peer: SocketAddr,
    /// The receiving side's report (the sender gets it at the end).
    pub report: TransferReport,
    /// Bytes received and sent on the socket, TLS included.
    pub tls_bytes: (u64, u64),
    /// From authentication to the end.
    pub elapsed: Duration,
}

impl Transfer<'_> {
    /// Runs one side over `conn`: sends a read-only volume, receives into
    /// a writable one.
    fn run(
        &self,
        conn: &Connection,
        (volume, state): (Volume, Option<(&VolumePath, &StateDir)>),
        observer: Arc<dyn Observer>,
    ) -> Result<Finished, AgentError> {
        let started = Instant::now();
        let peer = conn.peer_addr();
        let sending = volume.access() == Access::ReadOnly;
        // What interrupted runs kept for resuming a tree is removed after
        // a complete one.
        let tree = match &volume {
            Volume::Tree(_) if !sending => state,
            _ => None,
        };
        let grants = Grants::new()
            .with_volume(volume)
            .with_channel(Channel::new(conn.reader(), conn.writer()))
            .with_observer(observer);
        // The instance (and with it the channel, flushing what it holds) is
        // gone before the connection is closed.
        let report = self
            .module
            .instantiate(self.limits, grants)
            .and_then(|mut instance| {
                if sending {
                    instance.send(self.parameters)
                } else {
                    instance.receive(self.parameters)
                }
            })
            .map_err(|cause| {
                // This side failed on its own and told the peer why: let
                // the peer finish what it is writing and read that, rather
                // than reset the connection under it.
                if !is_peer_gone(&cause) {
                    conn.abandon(ABANDON_LIMIT);
                }
                AgentError::Transfer {
                    direction: if sending { "to" } else { "from" },
                    peer,
                    cause: Box::new(cause),
                }
            })?;
        // The transfer is complete on both sides by now (the receiver's
        // report is the last message): a close that goes wrong loses
        // nothing. The peer waits for it, not for the cleanup below.
        if let Err(e) = conn.finish() {
            tracing::warn!(%peer, "closing the connection: {e}");
        }
        if let Some((at, state)) = tree
            && let Ok(volume) = at.open(Access::ReadWrite, state)
        {
            volume.discard_leftovers();
        }
        let (tls_in, tls_out) = conn.wire_bytes();
        tracing::info!(%peer, tls_in, tls_out, "transfer finished");
        Ok(Finished {
            peer,
            report,
            tls_bytes: (tls_in, tls_out),
            elapsed: started.elapsed(),
        })
    }
}

/// Where a side's volume is.
#[derive(Clone, Debug)]
pub struct VolumePath {
    /// A directory, a block device or an image file.
    pub path: PathBuf,
    /// The undo journal of a block volume received into (see
    /// [`Volume::open_with_journal`]).
    pub journal: Option<PathBuf>,
    /// Where the digest keeps its file hashes between runs [default: a
    /// receiving tree keeps them in its state directory, a sending one
    /// nowhere].
    pub hashes: Option<PathBuf>,
    /// The digest reads every file, trusting no kept hash.
    pub read_every_file: bool,
}

impl VolumePath {
    /// Opens the volume; a writable tree with its state directory `state`.
    fn open(&self, access: Access, state: &StateDir) -> Result<Volume, AgentError> {
        let error = |cause| AgentError::Volume {
            path: self.path.clone(),
            cause,
        };
        let mut volume = match access {
            Access::ReadWrite => state.open_volume(&self.path, self.journal.clone()),
            Access::ReadOnly => Volume::open_with_journal(&self.path, access, self.journal.clone()),
        }
        .map_err(error)?;
        if let Some(hashes) = &self.hashes {
            volume
                .set_hash_store(HashStore::File(hashes.clone()))
                .map_err(error)?;
        }
        if self.read_every_file {
            volume.read_every_file();
        }
        Ok(volume)
    }
}

/// Connects to the receiver at `addr` (retrying for `retry_for` while
/// nothing listens there) and sends `volume`, read-only.
pub fn send(
    transfer: &Transfer,
    volume: &VolumePath,
    addr: &str,
    key: &Psk,
    options: &Options,
    retry_for: Duration,
    observer: Arc<dyn Observer>,
) -> Result<Finished, AgentError> {
    check_transfer(transfer.module, transfer.limits, transfer.parameters)
        .map_err(|e| AgentError::Module(Box::new(e)))?;
    let opened = volume.open(Access::ReadOnly, &StateDir::Temporary)?;
    let deadline = Instant::now() + retry_for;
    let conn = loop {
        match wasmover_net::connect(addr, key, options) {
            Err(e @ (NetError::Connect { .. } | NetError::ConnectTimeout { .. }))
                if Instant::now() + RETRY_PAUSE < deadline =>
            {
                tracing::info!("{e}; retrying");
                std::thread::sleep(RETRY_PAUSE);
            }
            result => break result?,
        }
    };
    transfer.run(&conn, (opened, None), observer)
}

/// A receiving agent, listening.
#[derive(Debug)]
pub struct Receiver {
    listener: Listener,
    volume: VolumePath,
    state: StateDir,
}

impl Receiver {
    /// Checks the module and parameters, creates `volume` as a directory
    /// if missing, rolls back an interrupted patch in place (a tree keeps
    /// its journal, and all else one run leaves for the next, in `state`),
    /// and listens on `listen`.
    pub fn bind(
        transfer: &Transfer,
        listen: &str,
        volume: &VolumePath,
        state: StateDir,
        key: &Psk,
        options: Options,
    ) -> Result<Self, AgentError> {
        check_transfer(transfer.module, transfer.limits, transfer.parameters)
            .map_err(|e| AgentError::Module(Box::new(e)))?;
        let io = |cause| AgentError::Volume {
            path: volume.path.clone(),
            cause,
        };
        if !volume.path.exists() {
            std::fs::create_dir_all(&volume.path).map_err(io)?;
        }
        let volume = VolumePath {
            path: volume.path.canonicalize().map_err(io)?,
            ..volume.clone()
        };
        volume.open(Access::ReadWrite, &state)?;
        Ok(Self {
            listener: Listener::bind(listen, key, options)?,
            volume,
            state,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the next connection: authenticates it and receives one
    /// transfer into the volume.
    pub fn receive(
        &self,
        transfer: &Transfer,
        observer: Arc<dyn Observer>,
    ) -> Result<Finished, AgentError> {
        let (conn, _) = self.listener.accept()?;
        let volume = self.volume.open(Access::ReadWrite, &self.state)?;
        transfer.run(&conn, (volume, Some((&self.volume, &self.state))), observer)
    }
}
