//! Paths within a volume: '/'-separated names relative to its root, as
//! bytes, since Linux names are bytes (a name need not be UTF-8). They are
//! [`OsStr`]s, which the filesystem calls take as they are, and are shown
//! escaped ([`shown`]) in messages and logs.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use wasmover_contract::escape_path;

/// `name` in the directory at `parent` (the root when empty).
pub(crate) fn join(parent: &OsStr, name: &OsStr) -> OsString {
    if parent.is_empty() {
        return name.to_owned();
    }
    let mut path = OsString::with_capacity(parent.len() + 1 + name.len());
    path.push(parent);
    path.push("/");
    path.push(name);
    path
}

/// The directory holding `path`'s last name and that name, or `None` for
/// a name at the root.
pub(crate) fn split_last(path: &OsStr) -> Option<(&OsStr, &OsStr)> {
    let bytes = path.as_bytes();
    let slash = bytes.iter().rposition(|&b| b == b'/')?;
    Some((
        OsStr::from_bytes(&bytes[..slash]),
        OsStr::from_bytes(&bytes[slash + 1..]),
    ))
}

/// The directory holding `path`'s last name, `""` at the root.
pub(crate) fn parent(path: &OsStr) -> &OsStr {
    split_last(path).map_or(OsStr::new(""), |(parent, _)| parent)
}

/// `path`'s last name.
pub(crate) fn last_name(path: &OsStr) -> &OsStr {
    split_last(path).map_or(path, |(_, name)| name)
}

/// The names `path` is made of, from the root down.
pub(crate) fn names(path: &OsStr) -> impl Iterator<Item = &OsStr> {
    path.as_bytes().split(|&b| b == b'/').map(OsStr::from_bytes)
}

/// `path` for a message or a log: escaped, on one line.
pub(crate) fn shown(path: &OsStr) -> String {
    escape_path(path.as_bytes())
}

/// `path` with `suffix` appended to its last name.
pub(crate) fn with_suffix(path: &OsStr, suffix: &str) -> OsString {
    let mut out = path.to_owned();
    out.push(suffix);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bytes_split_at_slashes() {
        let path = OsStr::from_bytes(b"a/b\xff/c\nd");
        assert_eq!(
            split_last(path),
            Some((OsStr::from_bytes(b"a/b\xff"), OsStr::new("c\nd")))
        );
        assert_eq!(parent(OsStr::new("top")), "");
        assert_eq!(last_name(OsStr::new("top")), "top");
        assert_eq!(names(path).count(), 3);
        assert_eq!(join(OsStr::new(""), OsStr::new("x")), "x");
        assert_eq!(join(parent(path), last_name(path)), path);
        assert_eq!(shown(path), "a/b\\xff/c\\nd");
    }
}
