//! An authenticated connection, split into a reading and a writing half.
//!
//! rustls keeps one state object per connection, so both halves share it
//! behind a mutex. The socket is non-blocking once the greeting is done:
//! a half holds the lock only while it moves bytes between rustls and the
//! socket, never while it waits. It waits for readiness with `poll`
//! without the lock, so a writer blocked on a full socket never stops the
//! reader, and every wait is bounded by the idle timeout. A writer that
//! waits also reads ahead what the peer sends (up to [`READ_AHEAD`]), so two
//! ends that each write a lot before reading, in one thread each, do not
//! wait for each other.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::hello::{self, Role};
use crate::{NetError, Options, Psk};

/// Encrypted bytes rustls may hold unsent before a write waits for the
/// socket (bounds memory per connection).
const SEND_BUFFER: usize = 1 << 20;
/// Plaintext read ahead while a write waits for the socket, at most. Two
/// ends that both write before they read then wait for each other only
/// once this much is in flight, beyond the kernel's buffers.
const READ_AHEAD: usize = 64 << 20;
/// Smallest burst of the bandwidth limit.
const MIN_BURST: u64 = 16 << 10;

/// An authenticated connection to a peer agent.
#[derive(Clone, Debug)]
pub struct Connection {
    shared: Arc<Shared>,
    version: u16,
}

/// The reading half of a [`Connection`]: the peer's bytes, in order. Reads
/// fail after the idle timeout without progress, and with
/// [`io::ErrorKind::UnexpectedEof`] when the connection ends without the
/// peer's TLS close (cut off or truncated); a clean close reads as end of
/// stream.
#[derive(Debug)]
pub struct NetReader(Arc<Shared>);

/// The writing half of a [`Connection`]. Writes fail after the idle
/// timeout without progress.
#[derive(Debug)]
pub struct NetWriter(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    tcp: TcpStream,
    peer: SocketAddr,
    idle_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    conn: rustls::Connection,
    bucket: Option<Bucket>,
    wire_in: u64,
    wire_out: u64,
    /// Plaintext read ahead by a waiting writer, for the reader.
    ahead: VecDeque<u8>,
    /// Reading ahead met the end of the stream or an error.
    ahead_done: bool,
    /// The error reading ahead met, for the reader once `ahead` is empty.
    ahead_error: Option<io::Error>,
}

impl Connection {
    /// Runs the TLS handshake and the greeting over `tcp` within the
    /// handshake timeout (counted from `started`).
    pub(crate) fn establish(
        tcp: TcpStream,
        conn: rustls::Connection,
        psk: &Psk,
        options: &Options,
        started: Instant,
    ) -> Result<Self, NetError> {
        Self::establish_speaking(
            tcp,
            conn,
            psk,
            options,
            started,
            (hello::MIN_VERSION, hello::MAX_VERSION),
        )
    }

    /// [`Connection::establish`], claiming to speak `versions`.
    pub(crate) fn establish_speaking(
        tcp: TcpStream,
        mut conn: rustls::Connection,
        psk: &Psk,
        options: &Options,
        started: Instant,
        versions: (u16, u16),
    ) -> Result<Self, NetError> {
        let peer = tcp.peer_addr()?;
        tcp.set_nodelay(true)?;
        keepalive(&tcp, options)?;
        let role = match conn {
            rustls::Connection::Client(_) => Role::Sender,
            rustls::Connection::Server(_) => Role::Receiver,
        };
        let deadline = started + options.handshake_timeout;
        let secs = options.handshake_timeout.as_secs_f64();
        let bounded = |tcp: &TcpStream| -> Result<(), NetError> {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(NetError::HandshakeTimeout { secs })?;
            tcp.set_read_timeout(Some(left))?;
            tcp.set_write_timeout(Some(left))?;
            Ok(())
        };
        let failed = |e: io::Error| handshake_error(e, secs);

        while conn.is_handshaking() {
            bounded(&tcp)?;
            conn.complete_io(&mut &tcp).map_err(failed)?;
        }
        let mut exporter = [0; 32];
        conn.export_keying_material(&mut exporter, hello::EXPORTER_LABEL, None)
            .map_err(NetError::Tls)?;
        conn.writer()
            .write_all(&hello::encode(role, psk, &exporter, versions))?;
        while conn.wants_write() {
            bounded(&tcp)?;
            conn.write_tls(&mut &tcp).map_err(failed)?;
        }
        let mut greeting = [0; hello::LEN];
        let mut got = 0;
        while got < hello::LEN {
            match conn.reader().read(&mut greeting[got..]) {
                Ok(0) => {
                    return Err(NetError::HandshakeClosed(
                        "it closed before its greeting".into(),
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    bounded(&tcp)?;
                    conn.read_tls(&mut &tcp).map_err(failed)?;
                    conn.process_new_packets().map_err(NetError::Tls)?;
                }
                Err(e) => return Err(failed(e)),
            }
        }
        let version = hello::check(&greeting, role, psk, &exporter, versions)?;
        tracing::debug!(%peer, version, "authenticated");

        conn.set_buffer_limit(Some(SEND_BUFFER));
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        tcp.set_nonblocking(true)?;
        Ok(Self {
            shared: Arc::new(Shared {
                tcp,
                peer,
                idle_timeout: options.idle_timeout,
                state: Mutex::new(State {
                    conn,
                    bucket: options.rate_limit.map(Bucket::new),
                    wire_in: 0,
                    wire_out: 0,
                    ahead: VecDeque::new(),
                    ahead_done: false,
                    ahead_error: None,
                }),
            }),
            version,
        })
    }

    /// A reading half.
    pub fn reader(&self) -> NetReader {
        NetReader(self.shared.clone())
    }

    /// A writing half.
    pub fn writer(&self) -> NetWriter {
        NetWriter(self.shared.clone())
    }

    /// The protocol version both ends settled on.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// Bytes received and sent on the socket since the greeting (TLS
    /// records included).
    pub fn wire_bytes(&self) -> (u64, u64) {
        let state = self.shared.lock();
        (state.wire_in, state.wire_out)
    }

    /// Ends the connection cleanly: flushes, sends the TLS close, and waits
    /// (at most the idle timeout) for the peer to close too, discarding
    /// anything it still sends, so that neither end resets a connection
    /// whose last bytes the other has not read yet.
    pub fn finish(&self) -> io::Result<()> {
        self.close_and_drain(None)
    }

    /// Ends a connection this side gives up on: closes its direction, then
    /// reads and discards what the peer still sends, for at most `limit`.
    /// A peer in the middle of writing gets to the end of its write and
    /// reads the last thing this side said (why it gives up), where closing
    /// with unread data at once would reset the connection under it.
    pub fn abandon(&self, limit: Duration) {
        let _ = self.close_and_drain(Some(Instant::now() + limit));
    }

    fn close_and_drain(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.shared.lock().conn.send_close_notify();
        self.shared.flush()?;
        let _ = self.shared.tcp.shutdown(Shutdown::Write);
        let mut sink = [0; 16 << 10];
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            match self.shared.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // The peer closed its socket without a TLS close after it
                // had everything: nothing is lost.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

fn handshake_error(e: io::Error, secs: f64) -> NetError {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return NetError::Tls(tls.clone());
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NetError::HandshakeTimeout { secs },
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => NetError::HandshakeClosed(e.to_string()),
        _ => NetError::Io(e),
    }
}

fn keepalive(tcp: &TcpStream, options: &Options) -> io::Result<()> {
    use rustix::net::sockopt;
    let interval = options.keepalive.max(Duration::from_secs(1));
    sockopt::set_socket_keepalive(tcp, true)?;
    sockopt::set_tcp_keepidle(tcp, interval)?;
    sockopt::set_tcp_keepintvl(tcp, interval)?;
    sockopt::set_tcp_keepcnt(tcp, 3)?;
    // Sent data left unacknowledged this long also ends the connection.
    let user_timeout = u32::try_from(options.idle_timeout.as_millis()).unwrap_or(u32::MAX);
    sockopt::set_tcp_user_timeout(tcp, user_timeout)?;
    Ok(())
}

/// What stopped pushing encrypted bytes out.
enum Blocked {
    /// Nothing left to send.
    No,
    /// The socket is full.
    Socket,
    /// The bandwidth limit: wait this long.
    Rate(Duration),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves rustls in an unknown state;
        // the connection is unusable then anyway.
        self.state.lock().expect("connection state lock")
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut since = Instant::now();
        loop {
            {
                let mut state = self.lock();
                if !state.ahead.is_empty() {
                    let n = buf.len().min(state.ahead.len());
                    for (dst, src) in buf.iter_mut().zip(state.ahead.drain(..n)) {
                        *dst = src;
                    }
                    return Ok(n);
                }
                if let Some(e) = state.ahead_error.take() {
                    return Err(e);
                }
                if let Some(result) = plaintext(&mut state, buf) {
                    return result;
                }
                if self.receive(&mut state)? {
                    since = Instant::now();
                    continue;
                }
            }
            self.wait(PollFlags::IN, since, "nothing received from")?;
        }
    }

    /// Reads encrypted bytes from the socket into rustls; whether any came.
    /// Never blocks.
    fn receive(&self, state: &mut State) -> io::Result<bool> {
        match state.conn.read_tls(&mut &self.tcp) {
            Ok(n) => {
                state.wire_in += n as u64;
                if let Err(e) = state.conn.process_new_packets() {
                    // Tell the peer why (best effort).
                    let _ = state.conn.write_tls(&mut &self.tcp);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("TLS: {e}"),
                    ));
                }
                if state.conn.wants_write() {
                    // A handshake message to answer (key update).
                    let _ = self.push(state)?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Moves what the peer has sent into `ahead` while a write waits.
    /// Returns whether anything came.
    fn read_ahead(&self, state: &mut State) -> bool {
        let mut chunk = [0; 16 << 10];
        let mut got = false;
        while !state.ahead_done && state.ahead.len() < READ_AHEAD {
            match plaintext(state, &mut chunk) {
                Some(Ok(n)) if n > 0 => {
                    state.ahead.extend(&chunk[..n]);
                    got = true;
                    continue;
                }
                // The end (clean or cut): the reader meets it again there.
                Some(Ok(_)) => state.ahead_done = true,
                Some(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    state.ahead_done = true;
                }
                Some(Err(e)) => {
                    state.ahead_error = Some(e);
                    state.ahead_done = true;
                }
                None => match self.receive(state) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        state.ahead_error = Some(e);
                        state.ahead_done = true;
                    }
                },
            }
        }
        got
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut since = Instant::now();
        loop {
            let blocked = {
                let mut state = self.lock();
                let accepted = state.conn.writer().write(buf)?;
                let (pushed, blocked) = self.push(&mut state)?;
                if accepted > 0 {
                    return Ok(accepted);
                }
                if pushed > 0 {
                    since = Instant::now();
                    continue;
                }
                if let Blocked::No = blocked {
                    // Nothing buffered, yet nothing accepted: closed.
                    return Err(io::ErrorKind::WriteZero.into());
                }
                blocked
            };
            self.wait_blocked(blocked, &mut since)?;
        }
    }

    fn flush(&self) -> io::Result<()> {
        let mut since = Instant::now();
        loop {
            let blocked = {
                let mut state = self.lock();
                let (pushed, blocked) = self.push(&mut state)?;
                if let Blocked::No = blocked {
                    return Ok(());
                }
                if pushed > 0 {
                    since = Instant::now();
                }
                blocked
            };
            self.wait_blocked(blocked, &mut since)?;
        }
    }

    /// Writes encrypted bytes to the socket until done, the socket is full
    /// or the bandwidth limit says wait. Never blocks.
    fn push(&self, state: &mut State) -> io::Result<(usize, Blocked)> {
        let mut total = 0;
        while state.conn.wants_write() {
            let allowed = match &mut state.bucket {
                Some(bucket) => match bucket.available() {
                    0 => return Ok((total, Blocked::Rate(bucket.refill_time()))),
                    n => n,
                },
                None => usize::MAX,
            };
            let mut capped = Capped {
                tcp: &self.tcp,
                allowed,
            };
            match state.conn.write_tls(&mut capped) {
                Ok(n) => {
                    total += n;
                    state.wire_out += n as u64;
                    if let Some(bucket) = &mut state.bucket {
                        bucket.take(n as u64);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((total, Blocked::Socket));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((total, Blocked::No))
    }

    fn wait_blocked(&self, blocked: Blocked, since: &mut Instant) -> io::Result<()> {
        match blocked {
            Blocked::No => Ok(()),
            Blocked::Socket => {
                // Meanwhile take in what the peer sends, so that it is not
                // stuck writing to us while we are stuck writing to it.
                let reading = {
                    let state = self.lock();
                    !state.ahead_done && state.ahead.len() < READ_AHEAD
                };
                let flags = if reading {
                    PollFlags::OUT | PollFlags::IN
                } else {
                    PollFlags::OUT
                };
                let ready = self.wait(flags, *since, "nothing could be sent to")?;
                if reading && ready.contains(PollFlags::IN) && self.read_ahead(&mut self.lock()) {
                    *since = Instant::now();
                }
                Ok(())
            }
            Blocked::Rate(pause) => {
                std::thread::sleep(pause);
                // Our own throttle is not the peer's silence.
                *since = Instant::now();
                Ok(())
            }
        }
    }

    /// Waits until the socket is ready for `flags` and returns what it is
    /// ready for, failing (saying `what` happened) once the idle timeout has
    /// passed since `since`.
    fn wait(&self, flags: PollFlags, since: Instant, what: &str) -> io::Result<PollFlags> {
        let Some(left) = self
            .idle_timeout
            .checked_sub(since.elapsed())
            .filter(|d| !d.is_zero())
        else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{what} the peer for {} s (idle timeout)",
                    self.idle_timeout.as_secs_f64()
                ),
            ));
        };
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.tcp, flags)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) => Ok(fds[0].revents()),
            Err(rustix::io::Errno::INTR) => Ok(PollFlags::empty()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Plaintext rustls has for the reader: `None` when it has none yet.
fn plaintext(state: &mut State, buf: &mut [u8]) -> Option<io::Result<usize>> {
    match state.conn.reader().read(buf) {
        Ok(n) => Some(Ok(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Some(Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection ended without the peer's TLS close (cut off)",
        ))),
        Err(e) => Some(Err(e)),
    }
}

impl Read for NetReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for NetWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The socket, accepting at most `allowed` bytes per write.
struct Capped<'a> {
    tcp: &'a TcpStream,
    allowed: usize,
}

impl Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.allowed);
        let written = self.tcp.write(&buf[..n])?;
        self.allowed -= written;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A token bucket: `rate` bytes per second, bursts of a twentieth of a
/// second (at least [`MIN_BURST`]).
#[derive(Debug)]
struct Bucket {
    rate: u64,
    burst: u64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        let rate = rate.max(1);
        let burst = (rate / 20).max(MIN_BURST);
        Self {
            rate,
            burst,
            tokens: burst as f64,
            at: Instant::now(),
        }
    }

    /// Whole bytes that may be written now.
    fn available(&mut self) -> usize {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.rate as f64;
        self.tokens = (self.tokens + earned).min(self.burst as f64);
        self.at = now;
        self.tokens as usize
    }

    fn take(&mut self, n: u64) {
        self.tokens -= n as f64;
    }

    /// How long until a useful amount (a quarter burst) is available.
    fn refill_time(&self) -> Duration {
        let missing = (self.burst as f64 / 4.0 - self.tokens).max(1.0);
        Duration::from_secs_f64(missing / self.rate as f64)
    }
}
