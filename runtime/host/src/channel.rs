//! The byte channel between the two sides of a transfer.
//!
//! One ordered byte stream per direction carries both the guest's framed
//! control messages and the native signature and delta streams, which are
//! self-delimiting. The transport is anything that reads and writes bytes:
//! an in-memory pipe for a local replication, a TCP or TLS stream between
//! agents.
//!
//! A channel also says how the deltas written to it compress their
//! literals ([`Channel::set_compression`]): zstd level
//! [`NETWORK_COMPRESSION`] between agents, none in memory, where there is
//! no wire to save.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use wasmover_block::DeltaOutput;

/// The zstd level of delta literals on a channel over a transport
/// ([`Channel::new`]) unless set otherwise: zstd's default, several
/// hundred MB/s of text on one core, ratios well past deflate's.
pub const NETWORK_COMPRESSION: Option<i32> = Some(3);

/// What [`Channel::new`] starts with, if a process set it
/// ([`Channel::set_network_default`]): a level, [`OFF`], or [`UNSET`].
static NETWORK_DEFAULT: AtomicI32 = AtomicI32::new(UNSET);
const UNSET: i32 = i32::MIN;
const OFF: i32 = i32::MIN + 1;

/// Buffer size on each side; also the unit the in-memory pipe moves.
const BUFFER: usize = 256 << 10;
/// Bytes in flight per direction of an in-memory pipe: bounds its memory,
/// and, like the agents' read-ahead over TCP, lets both sides write this
/// much before either reads (the protocol pipelines in both directions).
const PIPE_BYTES: usize = 64 << 20;

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The peer closed its end.
    #[error("the peer closed the channel")]
    Closed,
    /// A message longer than the limit.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The peer gave up, and said why ([`Channel::abort`]).
    #[error("the peer aborted: {0}")]
    Aborted(String),
    /// Transport failure.
    #[error("channel I/O: {0}")]
    Io(#[from] io::Error),
}

/// Starts an abort record. It can stand where a message or a native stream
/// starts: as a message length it would exceed any limit, and it is no
/// signature's or delta's magic number.
pub const ABORT_MAGIC: [u8; 4] = *b"WMAB";
/// Most bytes of an abort reason.
const MAX_ABORT_REASON: usize = 4096;

/// Set in a message's length when the message comes zstd-compressed (agent
/// protocol 8): the length then counts the compressed bytes, which follow
/// the message's own length (u32, big-endian). A channel that compresses
/// its literals compresses its messages too: a tree's entry list, sent
/// as messages, is most of what an incremental run of many small files
/// sends, and shrinks to a few bytes an entry.
const COMPRESSED: u32 = 1 << 31;
/// Messages shorter than this are sent as they are.
const COMPRESS_MIN: usize = 512;

/// One end of a channel.
pub struct Channel {
    reader: BufReader<Counting<Box<dyn Read + Send>>>,
    writer: ChannelWriter,
    /// What compresses messages, and at which level, once one was.
    squeezer: Option<(i32, zstd::bulk::Compressor<'static>)>,
    /// What decompresses them, once one came.
    unsqueezer: Option<zstd::bulk::Decompressor<'static>>,
}

/// The writing half of a [`Channel`] ([`Channel::writer`]): buffered
/// bytes to the transport, and the compression of the deltas written
/// to it.
pub struct ChannelWriter {
    inner: BufWriter<Counting<Box<dyn Write + Send>>>,
    compression: Option<i32>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl DeltaOutput for ChannelWriter {
    fn literal_compression(&self) -> Option<i32> {
        self.compression
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("bytes_in", &self.reader.get_ref().count)
            .field("bytes_out", &self.writer.inner.get_ref().count)
            .field("compression", &self.writer.compression)
            .finish()
    }
}

impl Channel {
    /// A channel over a transport's read and write halves (between
    /// agents): its deltas compress their literals at
    /// [`NETWORK_COMPRESSION`], or what the process set
    /// ([`Channel::set_network_default`]).
    pub fn new(read: impl Read + Send + 'static, write: impl Write + Send + 'static) -> Self {
        let compression = match NETWORK_DEFAULT.load(Ordering::Relaxed) {
            UNSET => NETWORK_COMPRESSION,
            OFF => None,
            level => Some(level),
        };
        Self::with_compression(read, write, compression)
    }

    fn with_compression(
        read: impl Read + Send + 'static,
        write: impl Write + Send + 'static,
        compression: Option<i32>,
    ) -> Self {
        Self {
            reader: BufReader::with_capacity(BUFFER, Counting::new(Box::new(read))),
            writer: ChannelWriter {
                inner: BufWriter::with_capacity(BUFFER, Counting::new(Box::new(write))),
                compression: compression.map(wasmover_block::zstd_level),
            },
            squeezer: None,
            unsqueezer: None,
        }
    }

    /// Two connected ends in memory, for a replication within one process.
    /// Each direction buffers a bounded amount, so a fast side waits for a
    /// slow one instead of filling memory. Literals are not compressed
    /// unless set ([`Channel::set_compression`]).
    pub fn pair() -> (Channel, Channel) {
        let (a_to_b, b_to_a) = (Pipe::new(PIPE_BYTES), Pipe::new(PIPE_BYTES));
        (
            Channel::with_compression(PipeReader(b_to_a.clone()), PipeWriter(a_to_b.clone()), None),
            Channel::with_compression(PipeReader(a_to_b), PipeWriter(b_to_a), None),
        )
    }

    /// One end connected to itself: what it sends, it receives. For wasm
    /// unit tests, where one instance plays both sides of a file's
    /// signature, delta and patch. Literals are not compressed unless set.
    pub fn loopback() -> Channel {
        let buffer = Loopback::default();
        Channel::with_compression(buffer.clone(), buffer, None)
    }

    /// Sets the zstd level at which the deltas this end writes compress
    /// their literals from now on, `None` for not at all. Levels outside
    /// zstd's range are brought into it (1 to 22, and zstd's fast
    /// negative levels). Chunks that do not compress go as they are
    /// whatever the level. Only this end's writes change: each end
    /// decides for what it sends, and reads both forms.
    pub fn set_compression(&mut self, level: Option<i32>) {
        self.writer.compression = level.map(wasmover_block::zstd_level);
    }

    /// The zstd level of this end's delta literals, `None` if they are not
    /// compressed.
    pub fn compression(&self) -> Option<i32> {
        self.writer.compression
    }

    /// Sets what channels made by [`Channel::new`] from now on start with,
    /// for this whole process: a level or `None`, in place of
    /// [`NETWORK_COMPRESSION`]. For an agent's command line, which sets it
    /// once before it connects.
    pub fn set_network_default(level: Option<i32>) {
        let value = match level {
            Some(level) => wasmover_block::zstd_level(level).max(OFF + 1),
            None => OFF,
        };
        NETWORK_DEFAULT.store(value, Ordering::Relaxed);
    }

    /// Sends one framed message: compressed where the channel compresses
    /// ([`Channel::set_compression`]) and that saves enough.
    pub fn send_message(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        let len = u32::try_from(message.len())
            .ok()
            .filter(|&len| len < COMPRESSED)
            .ok_or(ChannelError::TooLarge {
                len: message.len() as u64,
                limit: u64::from(COMPRESSED - 1),
            })?;
        if let Some(compressed) = self.squeeze(message)? {
            let framed = COMPRESSED | compressed.len() as u32;
            self.writer.write_all(&framed.to_be_bytes())?;
            self.writer.write_all(&len.to_be_bytes())?;
            self.writer.write_all(&compressed)?;
            return Ok(());
        }
        self.writer.write_all(&len.to_be_bytes())?;
        self.writer.write_all(message)?;
        Ok(())
    }

    /// `message` zstd-compressed, if the channel compresses and that
    /// saves at least 1/32 of it.
    fn squeeze(&mut self, message: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let Some(level) = self.writer.compression else {
            return Ok(None);
        };
        if message.len() < COMPRESS_MIN {
            return Ok(None);
        }
        let ctx = match &mut self.squeezer {
            Some((made, ctx)) if *made == level => ctx,
            squeezer => {
                let mut ctx = zstd::bulk::Compressor::new(level)?;
                // A damaged message then fails as such.
                ctx.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                &mut squeezer.insert((level, ctx)).1
            }
        };
        let mut out = vec![0; message.len() - message.len() / 32 - 8];
        // An error is above all output that does not fit: it does not
        // compress.
        Ok(match ctx.compress_to_buffer(message, &mut out[..]) {
            Ok(n) => {
                out.truncate(n);
                Some(out)
            }
            Err(_) => None,
        })
    }

    /// Receives one framed message of at most `limit` bytes.
    pub fn receive_message(&mut self, limit: u64) -> Result<Vec<u8>, ChannelError> {
        let mut len = [0; 4];
        let mut reader = self.reader_for_receive();
        reader.read_exact(&mut len).map_err(eof_is_closed)?;
        if len == ABORT_MAGIC {
            return Err(ChannelError::Aborted(read_abort_reason(&mut reader)));
        }
        let framed = u32::from_be_bytes(len);
        let compressed = framed & COMPRESSED != 0;
        let len = if compressed {
            reader.read_exact(&mut len).map_err(eof_is_closed)?;
            u64::from(u32::from_be_bytes(len))
        } else {
            u64::from(framed)
        };
        if len > limit {
            return Err(ChannelError::TooLarge { len, limit });
        }
        let wire = if compressed {
            u64::from(framed & !COMPRESSED)
        } else {
            len
        };
        // A damaged length may claim more compressed bytes than any
        // message may have: refused as any message too long.
        if wire > limit {
            return Err(ChannelError::TooLarge { len: wire, limit });
        }
        if wire > len {
            return Err(ChannelError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a compressed message of {len} bytes takes {wire} on the wire"),
            )));
        }
        let mut message = Vec::new();
        // Read through `take` so that a lying length cannot make us allocate
        // more than the bytes that actually arrive.
        (&mut reader).take(wire).read_to_end(&mut message)?;
        if message.len() as u64 != wire {
            return Err(ChannelError::Closed);
        }
        if !compressed {
            return Ok(message);
        }
        let ctx = match &mut self.unsqueezer {
            Some(ctx) => ctx,
            none => none.insert(zstd::bulk::Decompressor::new()?),
        };
        let plain = ctx
            .decompress(&message, len as usize)
            .ok()
            .filter(|plain| plain.len() as u64 == len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a compressed message does not decompress to its {len} bytes"),
                )
            })?;
        Ok(plain)
    }

    /// Tells the peer this side gives up and why: an abort record, then a
    /// flush. Best effort: a peer already gone is not an error.
    pub fn abort(&mut self, reason: &str) {
        let reason = &reason.as_bytes()[..reason.floor_char_boundary(MAX_ABORT_REASON)];
        let _ = self
            .writer
            .inner
            .write_all(&ABORT_MAGIC)
            .and_then(|()| {
                self.writer
                    .inner
                    .write_all(&(reason.len() as u32).to_be_bytes())
            })
            .and_then(|()| self.writer.inner.write_all(reason))
            .and_then(|()| self.writer.inner.flush());
    }

    /// The writing half, for native streams: a delta written to it
    /// compresses its literals as set ([`Channel::set_compression`]).
    pub fn writer(&mut self) -> &mut ChannelWriter {
        &mut self.writer
    }

    /// The reading half, for native streams and messages. It flushes what
    /// was written before it waits on the transport: a side that waits for
    /// an answer must have sent its question. What already arrived is read
    /// without a flush, so the many small writes of a pipelined exchange
    /// (a signature and a delta per small file) leave together instead of
    /// one TLS record and one `send` each.
    pub fn reader_for_receive(&mut self) -> Receiving<'_> {
        Receiving {
            reader: &mut self.reader,
            writer: &mut self.writer.inner,
        }
    }

    /// Flushes written bytes to the transport.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Bytes received and sent so far: what the reader consumed and what
    /// was written, whether or not it has left the buffers yet.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.reader.get_ref().count - self.reader.buffer().len() as u64,
            self.writer.inner.get_ref().count + self.writer.inner.buffer().len() as u64,
        )
    }
}

/// The reading half of a [`Channel`] for one receive
/// ([`Channel::reader_for_receive`]): it flushes the writing half before
/// it reads from the transport, never when what it reads is buffered.
pub struct Receiving<'a> {
    reader: &'a mut BufReader<Counting<Box<dyn Read + Send>>>,
    writer: &'a mut BufWriter<Counting<Box<dyn Write + Send>>>,
}

impl Receiving<'_> {
    fn flush_before_waiting(&mut self) -> io::Result<()> {
        if self.reader.buffer().is_empty() {
            self.writer.flush()?;
        }
        Ok(())
    }
}

impl Read for Receiving<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.flush_before_waiting()?;
        self.reader.read(buf)
    }
}

impl BufRead for Receiving<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.flush_before_waiting()?;
        self.reader.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.reader.consume(amount);
    }
}

/// Reads the reason of an abort record whose magic was read; what cannot be
/// read is said so.
pub fn read_abort_reason(reader: &mut impl Read) -> String {
    let mut len = [0; 4];
    if reader.read_exact(&mut len).is_err() {
        return "(the reason was cut off)".into();
    }
    let len = (u32::from_be_bytes(len) as usize).min(MAX_ABORT_REASON);
    let mut reason = Vec::with_capacity(len);
    match reader.take(len as u64).read_to_end(&mut reason) {
        Ok(n) if n == len => String::from_utf8_lossy(&reason).into_owned(),
        _ => "(the reason was cut off)".into(),
    }
}

fn eof_is_closed(e: io::Error) -> ChannelError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ChannelError::Closed
    } else {
        e.into()
    }
}

/// Counts the bytes that pass through.
struct Counting<T> {
    inner: T,
    count: u64,
}

impl<T> Counting<T> {
    fn new(inner: T) -> Self {
        Self { inner, count: 0 }
    }
}

impl<T: Read> Read for Counting<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl<T: Write> Write for Counting<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One direction of an in-memory pipe: chunks as written, bounded in
/// bytes (not in chunks: many small flushes must not fill it).
#[derive(Clone)]
struct Pipe(Arc<(Mutex<PipeState>, Condvar)>);

struct PipeState {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    limit: usize,
    writer_gone: bool,
    reader_gone: bool,
}

impl Pipe {
    fn new(limit: usize) -> Self {
        Self(Arc::new((
            Mutex::new(PipeState {
                chunks: VecDeque::new(),
                bytes: 0,
                limit,
                writer_gone: false,
                reader_gone: false,
            }),
            Condvar::new(),
        )))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.0.0.lock().expect("pipe lock")
    }
}

struct PipeWriter(Pipe);

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (_, changed) = &*self.0.0;
        let mut state = self.0.state();
        // Wait for room; a chunk larger than the limit goes alone.
        while !state.reader_gone && state.bytes > 0 && state.bytes + buf.len() > state.limit {
            state = changed.wait(state).expect("pipe lock");
        }
        if state.reader_gone {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the peer closed the channel",
            ));
        }
        state.bytes += buf.len();
        state.chunks.push_back(buf.to_vec());
        changed.notify_all();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.0.state().writer_gone = true;
        self.0.0.1.notify_all();
    }
}

struct PipeReader(Pipe);

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (_, changed) = &*self.0.0;
        let mut state = self.0.state();
        loop {
            if let Some(chunk) = state.chunks.front_mut() {
                let n = buf.len().min(chunk.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                if n == chunk.len() {
                    state.chunks.pop_front();
                } else {
                    chunk.drain(..n);
                }
                state.bytes -= n;
                changed.notify_all();
                return Ok(n);
            }
            // The writer is gone: end of stream.
            if state.writer_gone {
                return Ok(0);
            }
            state = changed.wait(state).expect("pipe lock");
        }
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.0.state().reader_gone = true;
        self.0.0.1.notify_all();
    }
}

/// An unbounded in-memory byte queue; reading an empty one is end of
/// stream.
#[derive(Clone, Default)]
struct Loopback(Arc<Mutex<VecDeque<u8>>>);

impl Read for Loopback {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut queue = self.0.lock().expect("loopback lock");
        let n = buf.len().min(queue.len());
        for (dst, src) in buf.iter_mut().zip(queue.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

impl Write for Loopback {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("loopback lock").extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_raw_bytes_interleave_in_order() {
        let (mut a, mut b) = Channel::pair();
        a.send_message(b"hello").unwrap();
        a.writer().write_all(b"raw").unwrap();
        a.send_message(b"").unwrap();
        a.flush().unwrap();
        assert_eq!(b.receive_message(100).unwrap(), b"hello");
        let mut raw = [0; 3];
        b.reader_for_receive().read_exact(&mut raw).unwrap();
        assert_eq!(&raw, b"raw");
        assert_eq!(b.receive_message(100).unwrap(), b"");
        assert_eq!(a.bytes().1, 4 + 5 + 3 + 4);
    }

    /// Where the channel compresses, a message that compresses crosses
    /// compressed and arrives whole; one that does not, or a short one,
    /// crosses as it is. A compressed message is refused by its own
    /// length, before it is read, and fails clearly when damaged.
    #[test]
    fn messages_cross_compressed_where_that_saves() {
        let mut loopback = Channel::loopback();
        loopback.set_compression(Some(3));
        let list: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("d{:02}/f{i:05} 0644 1577836800\n", i % 100).into_bytes())
            .collect();
        let mut random = vec![0; 4096];
        blake3::Hasher::new().finalize_xof().fill(&mut random);
        for message in [&list[..], &random[..], b"short"] {
            let before = loopback.bytes().1;
            loopback.send_message(message).unwrap();
            loopback.flush().unwrap();
            let sent = loopback.bytes().1 - before;
            assert_eq!(loopback.receive_message(1 << 20).unwrap(), message);
            if message.len() == list.len() {
                assert!(
                    sent < list.len() as u64 / 10,
                    "{sent} bytes for {}",
                    list.len()
                );
            } else {
                assert_eq!(sent, 4 + message.len() as u64);
            }
        }
        loopback.send_message(&list).unwrap();
        loopback.flush().unwrap();
        assert!(matches!(
            loopback.receive_message(1000),
            Err(ChannelError::TooLarge { len, limit: 1000 }) if len == list.len() as u64
        ));

        let mut damaged = Channel::loopback();
        damaged.set_compression(Some(3));
        damaged.send_message(&list).unwrap();
        damaged.flush().unwrap();
        let mut framed = Vec::new();
        damaged
            .reader_for_receive()
            .read_to_end(&mut framed)
            .unwrap();
        framed[20] ^= 0xff;
        damaged.writer().write_all(&framed).unwrap();
        damaged.flush().unwrap();
        let err = damaged.receive_message(1 << 20).unwrap_err();
        assert!(err.to_string().contains("does not decompress"), "{err}");
    }

    /// A side that waits for an answer has sent its question (flushed
    /// before the wait), but what it reads from its buffer does not flush:
    /// the writes between such reads leave together.
    #[test]
    fn a_receive_flushes_before_it_waits_and_only_then() {
        let (mut a, mut b) = Channel::pair();
        let answering = std::thread::spawn(move || {
            let question = b.receive_message(100).unwrap();
            b.send_message(&question).unwrap();
            b.send_message(b"two").unwrap();
            b.flush().unwrap();
            b
        });
        a.send_message(b"one").unwrap();
        // Buffered until a waits: without the flush, both would wait.
        assert_eq!(a.receive_message(100).unwrap(), b"one");
        let _b = answering.join().unwrap();
        a.send_message(b"later").unwrap();
        assert_eq!(a.receive_message(100).unwrap(), b"two");
        assert_eq!(
            a.writer.inner.buffer(),
            b"\0\0\0\x05later",
            "a buffered answer was read without a flush"
        );
    }

    #[test]
    fn an_abort_ends_a_message_wait_with_the_reason_cut_at_a_character() {
        let (mut a, mut b) = Channel::pair();
        a.abort("VolumeModeMismatch: no");
        assert!(matches!(
            b.receive_message(1 << 30),
            Err(ChannelError::Aborted(r)) if r == "VolumeModeMismatch: no"
        ));
        // 4095 bytes of 'x' then a 2-byte character: cut before it.
        let long = format!("{}é and more", "x".repeat(MAX_ABORT_REASON - 1));
        a.abort(&long);
        match b.receive_message(100) {
            Err(ChannelError::Aborted(r)) => assert_eq!(r, "x".repeat(MAX_ABORT_REASON - 1)),
            other => panic!("{other:?}"),
        }
        // An abort cut off part-way still ends the wait.
        a.writer().write_all(&ABORT_MAGIC).unwrap();
        a.writer().write_all(&[0, 0]).unwrap();
        drop(a);
        assert!(matches!(
            b.receive_message(100),
            Err(ChannelError::Aborted(r)) if r.contains("cut off")
        ));
    }

    /// Both sides writing many small flushed messages before reading (the
    /// shape of a tree of small files) must not fill the pipe: it is bounded
    /// in bytes, not in chunks.
    #[test]
    fn both_sides_may_write_many_small_messages_before_reading() {
        const MESSAGES: usize = 20_000;
        let (a, b) = Channel::pair();
        let (done, finished) = std::sync::mpsc::channel();
        for mut side in [a, b] {
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..MESSAGES {
                    side.send_message(&(i as u32).to_be_bytes()).unwrap();
                    side.flush().unwrap();
                }
                for i in 0..MESSAGES {
                    assert_eq!(side.receive_message(4).unwrap(), (i as u32).to_be_bytes());
                }
                done.send(()).unwrap();
            });
        }
        for _ in 0..2 {
            finished
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("a side is stuck writing: the pipes deadlocked");
        }
    }

    #[test]
    fn a_pipe_holds_at_most_its_limit() {
        let pipe = Pipe::new(16);
        let mut writer = PipeWriter(pipe.clone());
        let sent = std::thread::spawn(move || {
            for i in 0..100u64 {
                writer.write_all(&i.to_be_bytes()).unwrap();
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(pipe.state().bytes, 16, "the writer waits at the limit");
        let mut reader = PipeReader(pipe);
        for i in 0..100u64 {
            let mut word = [0; 8];
            reader.read_exact(&mut word).unwrap();
            assert_eq!(u64::from_be_bytes(word), i);
        }
        sent.join().unwrap();
        assert_eq!(reader.read(&mut [0; 1]).unwrap(), 0, "end of stream");
    }

    /// Agents' channels compress delta literals at level 3 unless set,
    /// in-memory ones not at all; a compressed delta crosses and patches.
    #[test]
    fn deltas_compress_their_literals_as_the_channel_is_set() {
        let (mut a, mut b) = Channel::pair();
        assert_eq!((a.compression(), b.compression()), (None, None));
        assert_eq!(
            Channel::new(io::empty(), io::sink()).compression(),
            NETWORK_COMPRESSION
        );
        a.set_compression(Some(99));
        assert_eq!(a.compression(), Some(22), "brought into zstd's range");
        a.set_compression(Some(3));
        let text: Vec<u8> = (0..40_000)
            .flat_map(|i| format!("{i} INFO request served in {} ms\n", i % 97).into_bytes())
            .collect();
        let empty = wasmover_block::Signature::empty();
        let stats = wasmover_block::delta(&empty, &text[..], a.writer()).unwrap();
        a.flush().unwrap();
        assert_eq!(stats.literal_bytes, text.len() as u64);
        assert!(
            stats.literal_wire_bytes * 4 < stats.literal_bytes,
            "{stats:?}"
        );
        assert_eq!(a.bytes().1, stats.encoded_bytes);
        let mut reader = b.reader_for_receive();
        let limits = wasmover_block::Limits::default();
        let Ok(wasmover_block::Incoming::Delta(delta)) =
            wasmover_block::Incoming::read_from(&mut reader, &limits)
        else {
            panic!("a delta");
        };
        let mut out = Vec::new();
        let patched =
            wasmover_block::patch(io::Cursor::new(&[][..]), delta, &mut out, &limits).unwrap();
        assert!(out == text);
        assert_eq!(patched.literal_wire_bytes, stats.literal_wire_bytes);
    }

    #[test]
    fn loopback_returns_what_it_sent() {
        let mut a = Channel::loopback();
        a.send_message(b"one").unwrap();
        a.send_message(b"two").unwrap();
        assert_eq!(a.receive_message(10).unwrap(), b"one");
        assert_eq!(a.receive_message(10).unwrap(), b"two");
        assert!(matches!(a.receive_message(10), Err(ChannelError::Closed)));
    }

    #[test]
    fn oversized_and_truncated_messages_are_errors() {
        let (mut a, mut b) = Channel::pair();
        a.send_message(&[7; 10]).unwrap();
        a.flush().unwrap();
        assert!(matches!(
            b.receive_message(9),
            Err(ChannelError::TooLarge { len: 10, limit: 9 })
        ));

        let (mut a, mut b) = Channel::pair();
        // A header announcing 1000 bytes, then the peer goes away.
        a.writer().write_all(&1000u32.to_be_bytes()).unwrap();
        a.writer().write_all(b"short").unwrap();
        drop(a);
        assert!(matches!(
            b.receive_message(1 << 20),
            Err(ChannelError::Closed)
        ));
        assert!(matches!(b.receive_message(10), Err(ChannelError::Closed)));
    }
}
