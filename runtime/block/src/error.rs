//! Errors of decoding, delta and patch.

/// A signature or delta could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The input does not start with the expected magic number.
    #[error("bad magic number: expected {expected:?}, found {found:02x?}")]
    BadMagic {
        /// The magic expected.
        expected: &'static str,
        /// The bytes found.
        found: [u8; 4],
    },
    /// A version this engine does not read.
    #[error("unsupported format version {found} (this engine reads {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
        /// The version supported.
        supported: u8,
    },
    /// The input ended early.
    #[error("truncated input while reading {reading}")]
    Truncated {
        /// What was being read.
        reading: &'static str,
    },
    /// A value exceeds a decoding limit.
    #[error("{what} of {value} exceeds the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// Values that contradict each other or the format.
    #[error("malformed input: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// An unknown delta instruction.
    #[error("unknown delta instruction {opcode:#04x}")]
    UnknownInstruction {
        /// The opcode found.
        opcode: u8,
    },
    /// The underlying reader failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FormatError {
    /// Maps an I/O error, turning an early end into [`FormatError::Truncated`].
    pub(crate) fn reading(reading: &'static str) -> impl Fn(std::io::Error) -> FormatError {
        move |e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                FormatError::Truncated { reading }
            } else {
                FormatError::Io(e)
            }
        }
    }
}

/// A delta could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// Reading the new file or writing the delta failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A delta could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The delta is malformed or truncated.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// An instruction refers to bytes the basis does not have.
    #[error("copy of {len} bytes at offset {offset} is outside the basis of {basis_len} bytes")]
    OutOfBasis {
        /// Start of the copy.
        offset: u64,
        /// Its length.
        len: u64,
        /// The basis length.
        basis_len: u64,
    },
    /// The rebuilt file is not the one the delta describes.
    #[error("verification failed: expected {expected}, rebuilt {actual}")]
    Verification {
        /// Length and hash announced by the delta.
        expected: String,
        /// Length and hash of what was written.
        actual: String,
    },
    /// An in-place patch failed part-way and so did rolling it back from
    /// its undo journal: the file is neither old nor new until the journal
    /// is rolled back, so the journal must be kept.
    #[error(
        "{error}; rolling back from the undo journal failed too ({roll_back}): \
         the journal must be kept and rolled back before the file is used"
    )]
    Unrecovered {
        /// Why the patch failed.
        error: String,
        /// Why rolling back failed.
        roll_back: String,
    },
    /// Reading the basis or writing the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
