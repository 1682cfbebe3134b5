//! The block protocol between a volume and a channel: signature, delta
//! and patch, run natively through the block engine for the `blocks`
//! calls ([`crate::host`]).
//!
//! A large file is delta'd in rounds: where the first round against what
//! the peer sent of its basis leaves literals, the sending side asks for
//! finer hashes of the basis ranges no copy used (a signature, or aligned
//! tags where the changes were made in place), and the receiving side
//! answers from inside `receive-patch` before the delta arrives. The
//! receiving side may have sent summaries of later files ahead of that
//! answer; they are kept, in order, for the next `send-delta` calls.
//!
//! For a large file the first round is granule-first: the receiving side
//! sends the tags of its granules' BLAKE3 hashes ([`BasisHashes`]), the
//! sending side hashes its own granules (which its file's BLAKE3 needs
//! anyway) and only granules that differ go through block rounds. The
//! receiving side keeps the granule hashes for the patch that follows:
//! granules left in place are then not read again, whether the file is
//! rebuilt beside the old one or, when large, patched in place under an
//! undo journal. After the patch it keeps the new file's granule hashes
//! for the next run ([`KeptHashes`]), which then reads nothing before it
//! answers, as long as the file's stamp is unchanged.
//!
//! [`BasisHashes`]: wasmover_block::BasisHashes
//! [`KeptHashes`]: crate::volume::KeptHashes

mod basis;
mod beside;
mod error;
mod in_place;
mod progress;
mod receive;
mod send;
mod session;

pub(crate) use basis::{Basis, open_source};
pub(crate) use beside::{Target, receive_beside};
pub(crate) use error::io_error;
pub(crate) use in_place::{IN_PLACE_MIN_FILE, receive_in_place, receive_in_place_tree};
pub(crate) use progress::FileProgress;
pub(crate) use send::{
    GRANULES_FIRST_MIN_FILE, REFINE_MIN_FILE, granule_summary, read_summary, refine_and_write, seed,
};
pub(crate) use session::BlockSession;
