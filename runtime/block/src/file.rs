//! The files a patch rewrites or fills: what they must do beyond
//! reading, writing and seeking.

use std::io::{self, Read, Seek, Write};

/// A file [`patch_in_place`](crate::patch_in_place) can rewrite: readable, writable, seekable,
/// and resizable to the new length.
pub trait InPlaceFile: Read + Write + Seek {
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl InPlaceFile for std::fs::File {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }
}

impl<F: InPlaceFile> InPlaceFile for &mut F {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
}

impl InPlaceFile for io::Cursor<Vec<u8>> {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::OutOfMemory)?;
        self.get_mut().resize(len, 0);
        Ok(())
    }
}
