//! Entry names in trees: restic stores the inside of Go's
//! `strconv.Quote(name)` in the JSON string, so that any bytes (not only
//! UTF-8) survive. These functions are that quoting and its inverse.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Deserializer, Serializer};

/// Quotes raw name bytes as Go does (without the surrounding quotes):
/// `"` and `\` escaped, control characters and invalid UTF-8 as escapes.
pub fn quote(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Undoes [`quote`] (Go's `strconv.Unquote` of `"` + s + `"`); `None`
/// for a malformed escape.
pub fn unquote(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    let hex = |chars: &mut std::str::Chars, n: usize| -> Option<u32> {
        let digits: String = chars.by_ref().take(n).collect();
        (digits.len() == n)
            .then(|| u32::from_str_radix(&digits, 16).ok())
            .flatten()
    };
    let mut utf8 = [0; 4];
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            continue;
        }
        let byte = |b: u8| Some(vec![b]);
        let escaped = match chars.next()? {
            'a' => byte(7),
            'b' => byte(8),
            'f' => byte(0x0c),
            'n' => byte(b'\n'),
            'r' => byte(b'\r'),
            't' => byte(b'\t'),
            'v' => byte(0x0b),
            '\\' => byte(b'\\'),
            '"' => byte(b'"'),
            '\'' => byte(b'\''),
            'x' => byte(hex(&mut chars, 2)? as u8),
            d @ '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                byte(u8::from_str_radix(&format!("{d}{rest}"), 8).ok()?)
            }
            'u' => Some(
                char::from_u32(hex(&mut chars, 4)?)?
                    .encode_utf8(&mut utf8)
                    .as_bytes()
                    .to_vec(),
            ),
            'U' => Some(
                char::from_u32(hex(&mut chars, 8)?)?
                    .encode_utf8(&mut utf8)
                    .as_bytes()
                    .to_vec(),
            ),
            _ => None,
        }?;
        out.extend_from_slice(&escaped);
    }
    Some(out)
}

/// serde for a name field: raw bytes in memory, Go-quoted in JSON.
pub mod name {
    use super::*;

    /// Writes the quoted form.
    pub fn serialize<S: Serializer>(name: &OsString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&quote(name.as_bytes()))
    }

    /// Reads and unquotes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OsString, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        unquote(&s)
            .map(OsString::from_vec)
            .ok_or_else(|| serde::de::Error::custom(format!("malformed quoted name {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_go_and_round_trips_any_bytes() {
        // Go: strconv.Quote("new\nline \"q\" \\ ü\x01") and invalid UTF-8 "\xff".
        assert_eq!(
            quote("new\nline \"q\" \\ ü\x01".as_bytes()),
            r#"new\nline \"q\" \\ ü\x01"#
        );
        assert_eq!(quote(b"a\xffb"), r"a\xffb");
        for name in [
            &b"plain"[..],
            b"a\xff\xfeb",
            "日本語\t\u{7f}\u{85}".as_bytes(),
            b"\\x41",
        ] {
            assert_eq!(unquote(&quote(name)).as_deref(), Some(name));
        }
        assert_eq!(unquote(r"\101\u00e9\U0001F600").unwrap(), "Aé😀".as_bytes());
        assert_eq!(unquote(r"bad\q"), None);
        assert_eq!(unquote(r"cut\x4"), None);
    }
}
