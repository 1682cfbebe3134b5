//! Tree blobs: one directory's entries, as JSON.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Go's `fs.FileMode` bits restic stores beside the permission bits.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_STICKY: u32 = 1 << 20;

/// A directory listing: its entries, sorted by name.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tree {
    /// The entries.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The blob form: compact JSON and a newline, as restic writes it.
    pub fn to_blob(&self) -> Vec<u8> {
        let mut blob = serde_json::to_vec(self).expect("trees serialize");
        blob.push(b'\n');
        blob
    }
}

/// An entry's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A block device.
    Dev,
    /// A character device.
    Chardev,
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
    /// Any kind this crate does not know.
    #[serde(other)]
    Other,
}

/// One entry of a tree. Fields this crate does not model (extended
/// attributes, device numbers, …) are kept in `extra`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    /// The entry's name: any bytes (Go-quoted in the JSON).
    #[serde(with = "crate::quote::name")]
    pub name: OsString,
    /// Its kind.
    #[serde(rename = "type")]
    pub kind: NodeType,
    /// Go's `fs.FileMode`: permissions plus type and special bits.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub mode: u32,
    /// Modification time (RFC 3339).
    #[serde(default)]
    pub mtime: String,
    /// Access time (RFC 3339).
    #[serde(default)]
    pub atime: String,
    /// Status change time (RFC 3339).
    #[serde(default)]
    pub ctime: String,
    /// Owner.
    #[serde(default)]
    pub uid: u32,
    /// Group.
    #[serde(default)]
    pub gid: u32,
    /// Owner's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Group's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Inode number.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub inode: u64,
    /// Device of the file system (hard links only).
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub device_id: u64,
    /// File size in bytes.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub size: u64,
    /// Number of hard links.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub links: u64,
    /// A symlink's target, if UTF-8 (else with replacement characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub linktarget: String,
    /// A symlink's target that is not UTF-8, in base64 (restic 0.16+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linktarget_raw: Option<String>,
    /// A file's data blobs, in order (`null` for other kinds).
    #[serde(default)]
    pub content: Option<Vec<Id>>,
    /// A directory's tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Fields not modelled here, kept as read.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

fn is_zero64(n: &u64) -> bool {
    *n == 0
}

impl Node {
    /// A symlink's target, as raw bytes.
    pub fn link_target(&self) -> OsString {
        match self
            .linktarget_raw
            .as_deref()
            .and_then(|raw| BASE64.decode(raw).ok())
        {
            Some(raw) => OsString::from_vec(raw),
            None => OsString::from(&self.linktarget),
        }
    }

    /// Sets a symlink's target: `linktarget`, plus `linktarget_raw` if it is not UTF-8.
    pub fn set_link_target(&mut self, target: &OsStr) {
        self.linktarget = target.to_string_lossy().into_owned();
        self.linktarget_raw = target
            .to_str()
            .is_none()
            .then(|| BASE64.encode(target.as_bytes()));
    }

    /// The Unix permission and special bits (`0o7777`) from Go's mode.
    pub fn unix_mode(&self) -> u32 {
        let mut mode = self.mode & 0o777;
        for (go, unix) in [
            (GO_SETUID, 0o4000),
            (GO_SETGID, 0o2000),
            (GO_STICKY, 0o1000),
        ] {
            if self.mode & go != 0 {
                mode |= unix;
            }
        }
        mode
    }

    /// Go's mode for an entry of `kind` with Unix mode bits `st_mode`.
    pub fn go_mode(kind: NodeType, st_mode: u32) -> u32 {
        let mut mode = st_mode & 0o777;
        for (unix, go) in [
            (0o4000, GO_SETUID),
            (0o2000, GO_SETGID),
            (0o1000, GO_STICKY),
        ] {
            if st_mode & unix != 0 {
                mode |= go;
            }
        }
        match kind {
            NodeType::Dir => mode | GO_DIR,
            NodeType::Symlink => mode | GO_SYMLINK,
            _ => mode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_through_go_file_mode() {
        // restic's documented symlink mode: ModeSymlink | 0777.
        assert_eq!(Node::go_mode(NodeType::Symlink, 0o120777), 134218239);
        assert_eq!(Node::go_mode(NodeType::Dir, 0o40755), (1 << 31) | 0o755);
        let node: Node = serde_json::from_str(&format!(
            r#"{{"name":"x","type":"file","mode":{},"content":[]}}"#,
            Node::go_mode(NodeType::File, 0o6751)
        ))
        .unwrap();
        assert_eq!(node.unix_mode(), 0o6751);
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let json = r#"{"name":"a","type":"dev","mode":67109280,"mtime":"2024-01-01T00:00:00Z","atime":"","ctime":"","uid":0,"gid":0,"device":2049,"content":null}"#;
        let node: Node = serde_json::from_str(json).unwrap();
        assert_eq!(node.kind, NodeType::Dev);
        assert_eq!(node.extra["device"], 2049);
        assert!(
            serde_json::to_string(&node)
                .unwrap()
                .contains(r#""device":2049"#)
        );
    }
}
