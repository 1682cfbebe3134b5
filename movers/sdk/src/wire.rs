//! A small binary codec for a mover's own control messages: LEB128
//! integers and length-prefixed strings. Decoding never panics and never
//! allocates more than the input holds.

/// Appends values to a message.
#[derive(Debug, Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an unsigned integer.
    pub fn u64(&mut self, mut v: u64) -> &mut Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return self;
            }
            self.0.push(byte | 0x80);
        }
    }

    /// Appends a signed integer (zigzag).
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.u64(((v << 1) ^ (v >> 63)) as u64)
    }

    /// Appends a string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// Appends a byte string, such as a path.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.u64(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends bytes encoded by another [`Writer`].
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The message.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Why a message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed message: {}", self.0)
    }
}

/// Reads values from a message.
#[derive(Debug)]
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Reads from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    /// Reads an unsigned integer.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .0
                .split_first()
                .ok_or(DecodeError("truncated integer"))?;
            self.0 = rest;
            v |= u64::from(byte & 0x7f)
                .checked_shl(shift)
                .ok_or(DecodeError("integer overflow"))?;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("integer too long"))
    }

    /// Reads a signed integer.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let v = self.u64()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// Reads an integer that must fit `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.u64()?).map_err(|_| DecodeError("integer exceeds u32"))
    }

    /// Reads a string.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError("string is not UTF-8"))
    }

    /// Reads a byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.u64()?).map_err(|_| DecodeError("string too long"))?;
        if len > self.0.len() {
            return Err(DecodeError("truncated string"));
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(bytes)
    }

    /// Whether the whole message was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::new();
        w.u64(0)
            .u64(300)
            .u64(u64::MAX)
            .i64(-5)
            .i64(i64::MIN)
            .str("ü/x y")
            .bytes(b"not\xffutf-8");
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u64().unwrap(), 0);
        assert_eq!(r.u64().unwrap(), 300);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.i64().unwrap(), i64::MIN);
        assert_eq!(r.str().unwrap(), "ü/x y");
        assert_eq!(r.bytes().unwrap(), b"not\xffutf-8");
        assert!(r.is_empty());
    }

    #[test]
    fn hostile_input_is_an_error() {
        assert_eq!(
            Reader::new(&[0x80]).u64(),
            Err(DecodeError("truncated integer"))
        );
        assert!(Reader::new(&[0xff; 11]).u64().is_err());
        assert_eq!(
            Reader::new(&[100, b'a']).str(),
            Err(DecodeError("truncated string"))
        );
        assert!(Reader::new(&[2, 0xff, 0xfe]).str().is_err());
    }
}
