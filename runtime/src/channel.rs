//! The byte channel between the two sides of a transfer.
//!
//! One ordered byte stream per direction carries both the guest's framed
//! control messages and the native signature and delta streams, which are
//! self-delimiting. The transport is anything that reads and writes bytes:
//! an in-memory pipe for a local replication, a TCP or TLS stream between
//! agents.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Buffer size on each side; also the unit the in-memory pipe moves.
const BUFFER: usize = 256 << 10;
/// Chunks in flight per direction of an in-memory pipe (bounds its memory).
const PIPE_DEPTH: usize = 16;

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
    /// Transport failure.
    #[error("channel I/O: {0}")]
    Io(#[from] io::Error),
}

/// One end of a channel.
pub struct Channel {
    reader: BufReader<Counting<Box<dyn Read + Send>>>,
    writer: BufWriter<Counting<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("bytes_in", &self.reader.get_ref().count)
            .field("bytes_out", &self.writer.get_ref().count)
            .finish()
    }
}

impl Channel {
    /// A channel over a transport's read and write halves.
    pub fn new(read: impl Read + Send + 'static, write: impl Write + Send + 'static) -> Self {
        Self {
            reader: BufReader::with_capacity(BUFFER, Counting::new(Box::new(read))),
            writer: BufWriter::with_capacity(BUFFER, Counting::new(Box::new(write))),
        }
    }

    /// Two connected ends in memory, for a replication within one process.
    /// Each direction buffers a bounded amount, so a fast side waits for a
    /// slow one instead of filling memory.
    pub fn pair() -> (Channel, Channel) {
        let (a_tx, b_rx) = sync_channel(PIPE_DEPTH);
        let (b_tx, a_rx) = sync_channel(PIPE_DEPTH);
        (
            Channel::new(PipeReader::new(a_rx), PipeWriter(a_tx)),
            Channel::new(PipeReader::new(b_rx), PipeWriter(b_tx)),
        )
    }

    /// One end connected to itself: what it sends, it receives. For wasm
    /// unit tests, where one instance plays both sides of a file's
    /// signature, delta and patch.
    pub fn loopback() -> Channel {
        let buffer = Loopback::default();
        Channel::new(buffer.clone(), buffer)
    }

    /// Sends one framed message.
    pub fn send_message(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        let len = u32::try_from(message.len()).map_err(|_| ChannelError::TooLarge {
            len: message.len() as u64,
            limit: u32::MAX.into(),
        })?;
        self.writer.write_all(&len.to_be_bytes())?;
        self.writer.write_all(message)?;
        Ok(())
    }

    /// Receives one framed message of at most `limit` bytes.
    pub fn receive_message(&mut self, limit: u64) -> Result<Vec<u8>, ChannelError> {
        let mut len = [0; 4];
        self.reader_for_receive()?
            .read_exact(&mut len)
            .map_err(eof_is_closed)?;
        let len = u64::from(u32::from_be_bytes(len));
        if len > limit {
            return Err(ChannelError::TooLarge { len, limit });
        }
        let mut message = Vec::new();
        // Read through `take` so that a lying length cannot make us allocate
        // more than the bytes that actually arrive.
        (&mut self.reader).take(len).read_to_end(&mut message)?;
        if message.len() as u64 != len {
            return Err(ChannelError::Closed);
        }
        Ok(message)
    }

    /// The writing half, for native streams.
    pub fn writer(&mut self) -> &mut impl Write {
        &mut self.writer
    }

    /// The reading half, for native streams. Flushes what was written first:
    /// a side that waits for an answer must have sent its question.
    pub fn reader_for_receive(&mut self) -> io::Result<&mut impl BufRead> {
        self.writer.flush()?;
        Ok(&mut self.reader)
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
            self.writer.get_ref().count + self.writer.buffer().len() as u64,
        )
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

struct PipeWriter(SyncSender<Vec<u8>>);

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf.to_vec()).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the peer closed the channel")
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct PipeReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl PipeReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                // The writer is gone: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An unbounded in-memory byte queue; reading an empty one is end of
/// stream.
#[derive(Clone, Default)]
struct Loopback(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u8>>>);

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
        b.reader_for_receive()
            .unwrap()
            .read_exact(&mut raw)
            .unwrap();
        assert_eq!(&raw, b"raw");
        assert_eq!(b.receive_message(100).unwrap(), b"");
        assert_eq!(a.bytes().1, 4 + 5 + 3 + 4);
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
