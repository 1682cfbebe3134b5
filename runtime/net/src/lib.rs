//! The network channel between two wasmover agents.
//!
//! TLS 1.3 (rustls) carries the bytes; a pre-shared key authenticates both
//! ends. rustls has no external-PSK mode, so the server presents a
//! throwaway self-signed certificate, the client does not trust it by PKI,
//! and then both ends prove that they know the key with a keyed BLAKE3 hash
//! over the connection's TLS exporter value (RFC 8446 §7.5). The exporter
//! differs on each leg of a man in the middle, so a relay cannot reuse a
//! proof, and a wrong key is refused by both ends before a byte of the
//! transfer moves.
//!
//! After the handshake each end sends a greeting ([`hello`]) with the
//! protocol versions it speaks; they settle on the highest common one or
//! refuse with both ranges in the error.
//!
//! ```no_run
//! use wasmover_net::{Listener, Options, Psk, connect};
//! # fn main() -> Result<(), wasmover_net::NetError> {
//! let psk = Psk::from_file("/keys/psk".as_ref())?;
//! let listener = Listener::bind("127.0.0.1:8873", &psk, Options::default())?;
//! let (server, _peer) = listener.accept()?;
//! # let client = connect("127.0.0.1:8873", &psk, &Options::default())?;
//! let (read, write) = (server.reader(), server.writer());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod error;
pub mod hello;
mod key;
mod stream;
mod tls;

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use error::NetError;
pub use key::{MIN_KEY_BYTES, Psk};
pub use stream::{Connection, NetReader, NetWriter};

/// Timeouts, keepalive and bandwidth of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How long to wait for the TCP connection (client side).
    pub connect_timeout: Duration,
    /// How long the TLS handshake and the greeting may take, together.
    pub handshake_timeout: Duration,
    /// How long a read or write may wait without any progress before the
    /// peer is declared dead. Bounds a hung peer; the kernel's keepalive
    /// below bounds a vanished one.
    pub idle_timeout: Duration,
    /// Idle time before TCP keepalive probes start, also their interval
    /// (three probes).
    pub keepalive: Duration,
    /// Most bytes per second written to the socket (TLS bytes), if any.
    pub rate_limit: Option<u64>,
}

impl Default for Options {
    /// 10 s to connect, 30 s for the handshake, 300 s without progress
    /// (long enough for a peer hashing a large file), keepalive after 30 s,
    /// no bandwidth limit.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            keepalive: Duration::from_secs(30),
            rate_limit: None,
        }
    }
}

/// Connects to a listening agent and authenticates both ends.
pub fn connect(addr: &str, psk: &Psk, options: &Options) -> Result<Connection, NetError> {
    let connect_error = |cause| NetError::Connect {
        addr: addr.to_owned(),
        cause,
    };
    let candidates: Vec<SocketAddr> = addr.to_socket_addrs().map_err(connect_error)?.collect();
    let mut last = None;
    for candidate in &candidates {
        match TcpStream::connect_timeout(candidate, options.connect_timeout) {
            Ok(tcp) => {
                let started = Instant::now();
                let conn = tls::client(options)?;
                return Connection::establish(tcp, conn, psk, options, started);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == std::io::ErrorKind::TimedOut => NetError::ConnectTimeout {
            addr: addr.to_owned(),
            secs: options.connect_timeout.as_secs_f64(),
        },
        Some(e) => connect_error(e),
        None => connect_error(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name resolves to no address",
        )),
    })
}

/// A listening agent: accepts TCP connections and authenticates them.
pub struct Listener {
    tcp: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    psk: Psk,
    options: Options,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.tcp.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Listens on `addr` with a freshly generated certificate.
    pub fn bind(addr: &str, psk: &Psk, options: Options) -> Result<Self, NetError> {
        let tcp = TcpListener::bind(addr).map_err(|cause| NetError::Listen {
            addr: addr.to_owned(),
            cause,
        })?;
        Ok(Self {
            tcp,
            tls: tls::server_config()?,
            psk: psk.clone(),
            options,
        })
    }

    /// The address it listens on (useful after binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Waits for the next connection and authenticates it. An error names
    /// the peer when one connected (see [`NetError::peer`]).
    pub fn accept(&self) -> Result<(Connection, SocketAddr), NetError> {
        let (tcp, peer) = self.tcp.accept().map_err(NetError::Accept)?;
        let started = Instant::now();
        let conn = rustls::ServerConnection::new(self.tls.clone()).map_err(NetError::Tls)?;
        Connection::establish(tcp, conn.into(), &self.psk, &self.options, started)
            .map(|c| (c, peer))
            .map_err(|e| NetError::From {
                peer,
                cause: Box::new(e),
            })
    }
}

#[cfg(test)]
mod tests;
