//! Whether a volume may be changed.

/// Whether a volume may be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The sending side: nothing may be written.
    ReadOnly,
    /// The receiving side.
    ReadWrite,
}
