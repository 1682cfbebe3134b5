//! Why a connection could not be made or authenticated.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a connection could not be made or authenticated.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The key file could not be read or is not a key.
    #[error("key file {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The listening socket could not be opened.
    #[error("listening on {addr}: {cause}")]
    Listen {
        /// The address.
        addr: String,
        /// The error.
        cause: io::Error,
    },
    /// Accepting a connection failed.
    #[error("accepting a connection: {0}")]
    Accept(io::Error),
    /// The TCP connection could not be made.
    #[error("connecting to {addr}: {cause}")]
    Connect {
        /// The address.
        addr: String,
        /// The error.
        cause: io::Error,
    },
    /// The TCP connection was not made in time.
    #[error("connecting to {addr}: no answer within {secs} s")]
    ConnectTimeout {
        /// The address.
        addr: String,
        /// The timeout.
        secs: f64,
    },
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// The handshake and greeting did not finish in time.
    #[error("the peer did not complete the TLS handshake and greeting within {secs} s")]
    HandshakeTimeout {
        /// The timeout.
        secs: f64,
    },
    /// The peer closed the connection during the handshake or greeting.
    #[error("the peer closed the connection during the handshake ({0})")]
    HandshakeClosed(String),
    /// The peer does not speak this protocol.
    #[error("the peer is not a wasmover agent (unexpected greeting)")]
    NotAnAgent,
    /// The peer's proof of the pre-shared key did not verify.
    #[error(
        "peer failed pre-shared-key authentication (the key files differ, or something between the agents altered the connection)"
    )]
    AuthenticationFailed,
    /// Both ends claim the same role.
    #[error("both ends are {0}s")]
    SameRole(&'static str),
    /// No protocol version both ends speak.
    #[error(
        "the peer speaks agent protocol versions {}..={}, this agent {}..={}; upgrade the older agent",
        theirs.0, theirs.1, ours.0, ours.1
    )]
    Version {
        /// What this agent speaks.
        ours: (u16, u16),
        /// What the peer speaks.
        theirs: (u16, u16),
    },
    /// Transport failure during the handshake.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A failure on a connection from `peer` (server side).
    #[error("connection from {peer}: {cause}")]
    From {
        /// The peer's address.
        peer: SocketAddr,
        /// What failed.
        cause: Box<NetError>,
    },
}

impl NetError {
    /// The peer this error concerns, when a peer had connected.
    pub fn peer(&self) -> Option<SocketAddr> {
        match self {
            NetError::From { peer, .. } => Some(*peer),
            _ => None,
        }
    }
}
