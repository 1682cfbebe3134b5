//! A man in the middle of a transfer: passes the sender's bytes on, but
//! cuts the stream after some bytes or inverts one byte, over a channel pair
//! (movers in this process) or TCP (agents as processes).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;

use wasmover_host::Channel;

/// Copies `from` to `to` until `from` ends, a write fails or `cut_after`
/// bytes went through, with the byte at offset `flip_at` inverted; true if
/// it stopped at `cut_after`. The caller then shuts both down.
pub fn pump(
    from: &mut impl Read,
    to: &mut impl Write,
    cut_after: usize,
    flip_at: Option<usize>,
) -> bool {
    let mut passed = 0;
    let mut buf = vec![0; 64 << 10];
    while passed < cut_after {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n.min(cut_after - passed),
        };
        if let Some(at) = flip_at
            && (passed..passed + n).contains(&at)
        {
            buf[at - passed] ^= 0xff;
        }
        if to.write_all(&buf[..n]).is_err() {
            return false;
        }
        passed += n;
    }
    true
}

/// A connected channel pair for a sender and a receiver in this process
/// (`(sender's, receiver's)`), with the sender-to-receiver direction
/// tampered with as by [`pump`]; the other direction goes straight through.
pub fn channels(cut_after: usize, flip_at: Option<usize>) -> (Channel, Channel) {
    let (sender_end, mut proxy_in) = UnixStream::pair().unwrap();
    let (mut proxy_out, receiver_end) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        pump(&mut proxy_in, &mut proxy_out, cut_after, flip_at);
        let _ = proxy_out.shutdown(Shutdown::Both);
        let _ = proxy_in.shutdown(Shutdown::Both);
    });
    let (back_receiver, back_sender) = UnixStream::pair().unwrap();
    let sender = Channel::new(back_sender, sender_end);
    let receiver = Channel::new(receiver_end, back_receiver);
    (sender, receiver)
}

/// A TCP proxy to `upstream` for one connection, with the
/// client-to-upstream direction tampered with as by [`pump`]; the address
/// to connect to.
pub fn tcp(upstream: SocketAddr, cut_after: usize, flip_at: Option<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (down, _) = listener.accept().unwrap();
        let up = TcpStream::connect(upstream).unwrap();
        let (mut down_read, mut up_write) = (down.try_clone().unwrap(), up.try_clone().unwrap());
        let (mut up_read, mut down_write) = (up.try_clone().unwrap(), down.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut up_read, &mut down_write);
            let _ = down_write.shutdown(Shutdown::Write);
        });
        pump(&mut down_read, &mut up_write, cut_after, flip_at);
        let _ = up.shutdown(Shutdown::Both);
        let _ = down.shutdown(Shutdown::Both);
    });
    addr
}
