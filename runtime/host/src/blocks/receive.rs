//! The receiving side's answers to the refinement requests that come
//! ahead of a delta.

use std::ffi::OsStr;
use std::io;

use wasmover_block::{Answer, Incoming, Limits};

use super::error::{aborted, io_error, protocol_error};
use super::send::seed;
use crate::bindings::blocks::BlockError;
use crate::channel::Channel;
use crate::volume::path::shown;

/// Refinement requests answered per file before the peer is refused: the
/// engine asks for at most five ([`RefineOptions::max_rounds`]), and a
/// hostile peer must not keep this side hashing forever.
const MAX_REFINEMENTS: usize = 8;

/// Answers refinement requests from `basis` until the delta arrives, then
/// hands `basis` and the delta to `apply`.
pub(super) fn receive_delta<B: io::Read + io::Seek, T>(
    basis: &mut B,
    basis_len: u64,
    channel: &mut Channel,
    limits: &Limits,
    path: &OsStr,
    apply: impl FnOnce(&mut B, &mut dyn io::Read) -> Result<T, BlockError>,
) -> Result<T, BlockError> {
    let mut answered = 0;
    loop {
        let mut reader = channel.reader_for_receive();
        let incoming = match Incoming::read_from(&mut reader, limits) {
            Ok(incoming) => incoming,
            Err(e) => {
                return Err(
                    aborted(&e, &mut reader).unwrap_or_else(|| protocol_error("delta of", path)(e))
                );
            }
        };
        match incoming {
            Incoming::Refinement(_) if answered == MAX_REFINEMENTS => {
                return Err(BlockError::Protocol(format!(
                    "delta of {}: the peer asked for finer hashes more than {MAX_REFINEMENTS} times",
                    shown(path)
                )));
            }
            Incoming::Refinement(request) => {
                let answer = Answer::compute(&mut *basis, basis_len, &request, seed())
                    .map_err(protocol_error("finer hashes of", path))?;
                answer
                    .write_to(channel.writer())
                    .map_err(io_error("sending the finer hashes of", path))?;
                answered += 1;
            }
            Incoming::Delta(mut delta) => return apply(basis, &mut delta),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::super::send::read_summary;
    use super::*;
    use crate::bindings::channel::ChannelError;

    /// A refinement request for the first 4 KiB of a basis.
    fn request() -> Vec<u8> {
        let mut r = b"WMRF\x08".to_vec();
        r.extend_from_slice(&1024u32.to_be_bytes());
        r.push(0);
        r.extend_from_slice(&1u64.to_be_bytes());
        // Varints: offset 0, length 4096.
        r.extend_from_slice(&[0x00, 0x80, 0x20]);
        assert!(matches!(
            Incoming::read_from(&r[..], &Limits::default()),
            Ok(Incoming::Refinement(_))
        ));
        r
    }

    #[test]
    fn a_peer_that_keeps_asking_for_finer_signatures_is_refused() {
        let (mut here, mut peer) = Channel::pair();
        let basis = vec![7u8; 64 << 10];
        let asker = std::thread::spawn(move || {
            for _ in 0..=MAX_REFINEMENTS {
                peer.writer().write_all(&request()).unwrap();
            }
            peer.flush().unwrap();
            // Read the answers until this side gives up and hangs up.
            let mut sink = Vec::new();
            let _ = peer.reader_for_receive().read_to_end(&mut sink);
            sink.len()
        });
        let err = receive_delta(
            &mut io::Cursor::new(&basis),
            basis.len() as u64,
            &mut here,
            &Limits::default(),
            OsStr::new("f"),
            |_, _| -> Result<(), BlockError> { unreachable!("no delta is sent") },
        )
        .unwrap_err();
        assert!(
            matches!(&err, BlockError::Protocol(m) if m.contains("finer hashes more than 8 times")),
            "{err:?}"
        );
        drop(here);
        let answered = asker.join().unwrap();
        assert!(answered > 0, "the first requests were answered");
    }

    #[test]
    fn an_abort_where_a_signature_or_delta_was_due_says_why() {
        let (mut here, mut peer) = Channel::pair();
        peer.abort("VolumeError: disk full");
        peer.abort("VolumeError: still full");
        let err = read_summary(&mut here, &Limits::default(), OsStr::new("f")).unwrap_err();
        assert!(
            matches!(&err, BlockError::Channel(ChannelError::Aborted(r)) if r == "VolumeError: disk full"),
            "{err:?}"
        );
        let err = receive_delta(
            &mut io::Cursor::new(Vec::new()),
            0,
            &mut here,
            &Limits::default(),
            OsStr::new("f"),
            |_, _| -> Result<(), BlockError> { unreachable!("no delta is sent") },
        )
        .unwrap_err();
        assert!(
            matches!(&err, BlockError::Channel(ChannelError::Aborted(r)) if r == "VolumeError: still full"),
            "{err:?}"
        );
    }
}
