//! The relationship file: what `kubectl wasmover` knows of a replication or
//! a migration between runs, as kubectl-volsync keeps it: both sides'
//! context, namespace and object names, and how they were set.
//!
//! One YAML file per relationship, `DIR/NAME.yaml`, written whole to a
//! temporary file and renamed into place, so an interrupted write leaves
//! the old file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use crate::crd::CopyMethod;

/// The version of the file's layout this build reads and writes.
pub const VERSION: u32 = 1;

/// What a relationship moves.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A PVC into a ReplicationDestination, by a ReplicationSource.
    Replication,
    /// A local directory into a ReplicationDestination, by a local sender.
    Migration,
}

impl Kind {
    /// The command group that handles it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Replication => "replication",
            Kind::Migration => "migration",
        }
    }
}

/// One relationship, as its file holds it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    /// [`VERSION`].
    pub version: u32,
    /// Replication or migration.
    pub kind: Kind,
    /// The name, also the default name of the objects.
    pub name: String,
    /// A random id: the label value `wasmover.dev/relationship` on every
    /// object made for it.
    pub id: String,
    /// The sending side (a replication's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The receiving side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// The source's cron schedule (`replication schedule`); absent: it runs
    /// when `replication sync` triggers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// Where an object is: a kubeconfig context, a namespace, a name.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Place {
    /// The kubeconfig context (resolved when set, never "the current one").
    pub context: String,
    /// The namespace.
    pub namespace: String,
    /// The ReplicationSource's or ReplicationDestination's name.
    pub name: String,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} in context {}",
            self.namespace, self.name, self.context
        )
    }
}

/// The volume options both sides share with VolSync's.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeOptions {
    /// How the source is captured, or the destination's image made.
    #[serde(default)]
    pub copy_method: CopyMethod,
    /// StorageClass of what is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// VolumeSnapshotClass for `Snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class: Option<String>,
    /// Access modes of what is provisioned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
}

/// The replication's source.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Where the ReplicationSource is.
    #[serde(flatten)]
    pub place: Place,
    /// The PVC it replicates.
    pub pvc: String,
    /// Its volume options.
    #[serde(flatten)]
    pub volume: VolumeOptions,
    /// Whether its objects were created in the cluster.
    #[serde(default)]
    pub applied: bool,
}

/// The receiving side.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Where the ReplicationDestination is.
    #[serde(flatten)]
    pub place: Place,
    /// Receive into this existing PVC (`destinationPVC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<String>,
    /// Size of the PVC to provision; absent: the source PVC's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// Its volume options.
    #[serde(flatten)]
    pub volume: VolumeOptions,
    /// `spec.mover.serviceType`: how sources reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// Whether its objects were created in the cluster.
    #[serde(default)]
    pub applied: bool,
}

impl Relationship {
    /// A new relationship `name` of `kind`, with nothing set.
    pub fn new(kind: Kind, name: &str) -> Result<Self, Error> {
        check_name("relationship", name)?;
        let mut id = [0u8; 8];
        getrandom(&mut id);
        Ok(Self {
            version: VERSION,
            kind,
            name: name.to_owned(),
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
            source: None,
            destination: None,
            schedule: None,
        })
    }

    /// Sets the source, refusing to move one whose objects exist: they
    /// would be left behind.
    pub fn set_source(&mut self, source: Source) -> Result<(), Error> {
        self.expect_kind(Kind::Replication)?;
        if let Some(old) = &self.source
            && old.applied
            && old.place != source.place
        {
            return Err(Error::Moved {
                rule: "moved-side",
                side: "source",
                old: old.place.to_string(),
            });
        }
        let applied = self.source.as_ref().is_some_and(|s| s.applied);
        self.source = Some(Source { applied, ..source });
        Ok(())
    }

    /// Sets the destination, refusing to move one whose objects exist.
    pub fn set_destination(&mut self, destination: Destination) -> Result<(), Error> {
        if let Some(old) = &self.destination
            && old.applied
            && old.place != destination.place
        {
            return Err(Error::Moved {
                rule: "moved-side",
                side: "destination",
                old: old.place.to_string(),
            });
        }
        let applied = self.destination.as_ref().is_some_and(|d| d.applied);
        self.destination = Some(Destination {
            applied,
            ..destination
        });
        Ok(())
    }

    /// Both sides, or an error naming the command that sets the missing one.
    pub fn sides(&self) -> Result<(&Source, &Destination), Error> {
        let source = self.source.as_ref().ok_or_else(|| Error::Incomplete {
            name: self.name.clone(),
            missing: "source",
            command: "set-source",
        })?;
        Ok((source, self.destination()?))
    }

    /// The destination, or an error naming the command that sets it.
    pub fn destination(&self) -> Result<&Destination, Error> {
        self.destination.as_ref().ok_or_else(|| Error::Incomplete {
            name: self.name.clone(),
            missing: "destination",
            command: match self.kind {
                Kind::Replication => "set-destination",
                Kind::Migration => "create",
            },
        })
    }

    /// Refuses a relationship of another kind than the command's.
    pub fn expect_kind(&self, kind: Kind) -> Result<(), Error> {
        if self.kind == kind {
            return Ok(());
        }
        Err(Error::WrongKind {
            name: self.name.clone(),
            is: self.kind.as_str(),
            wanted: kind.as_str(),
        })
    }
}

/// Where relationship files are kept.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir`, or by default in
    /// `$XDG_CONFIG_HOME/wasmover/relationships` (`~/.config/...`).
    pub fn new(dir: Option<PathBuf>) -> Result<Self, Error> {
        let dir = match dir {
            Some(dir) => dir,
            None => crate::dirs::config_home()
                .ok_or(Error::NoConfigDir)?
                .join("relationships"),
        };
        Ok(Self { dir })
    }

    /// The file of relationship `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.yaml"))
    }

    /// Writes a new relationship, refusing to replace an existing one.
    pub fn create(&self, relationship: &Relationship) -> Result<(), Error> {
        let path = self.path(&relationship.name);
        if path.exists() {
            return Err(Error::Exists { path });
        }
        self.save(relationship)
    }

    /// Reads relationship `name` of `kind`.
    pub fn load(&self, name: &str, kind: Kind) -> Result<Relationship, Error> {
        check_name("relationship", name)?;
        let path = self.path(name);
        let text = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoRelationship {
                    name: name.to_owned(),
                    kind: kind.as_str(),
                    path,
                });
            }
            read => read.map_err(|cause| Error::File {
                path: path.clone(),
                cause,
            })?,
        };
        let relationship = parse(&path, &text)?;
        relationship.expect_kind(kind)?;
        Ok(relationship)
    }

    /// Writes `relationship` in place of its file, atomically.
    pub fn save(&self, relationship: &Relationship) -> Result<(), Error> {
        let path = self.path(&relationship.name);
        let io = |cause| Error::File {
            path: path.clone(),
            cause,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let text = serde_yaml::to_string(relationship).expect("a relationship serializes");
        let temp = self.dir.join(format!(".{}.yaml.tmp", relationship.name));
        std::fs::write(&temp, text).map_err(io)?;
        std::fs::rename(&temp, &path).map_err(io)
    }

    /// Removes relationship `name`'s file.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let path = self.path(name);
        std::fs::remove_file(&path).map_err(|cause| Error::File { path, cause })
    }
}

/// Reads a relationship file's text, refusing another layout version.
fn parse(path: &Path, text: &str) -> Result<Relationship, Error> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| Error::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let version = value.get("version").and_then(serde_yaml::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        return Err(Error::Parse {
            path: path.to_owned(),
            reason: format!(
                "layout version {} is not {VERSION}, the one this build reads",
                version.map_or("(none)".to_owned(), |v| v.to_string())
            ),
        });
    }
    serde_yaml::from_value(value).map_err(|e| Error::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Refuses a name that cannot name Kubernetes objects (rule `name`): a
/// DNS-1123 label, at most 63 characters.
pub fn check_name(what: &'static str, name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        return Ok(());
    }
    Err(Error::InvalidName {
        what,
        name: name.to_owned(),
    })
}

/// Fills `bytes` from the operating system's random source.
fn getrandom(bytes: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(bytes))
        .expect("/dev/urandom is readable");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(context: &str) -> Place {
        Place {
            context: context.into(),
            namespace: "backup".into(),
            name: "db".into(),
        }
    }

    fn destination(context: &str) -> Destination {
        Destination {
            place: place(context),
            pvc: None,
            capacity: Some("1Gi".into()),
            volume: VolumeOptions::default(),
            service_type: None,
            applied: false,
        }
    }

    #[test]
    fn a_relationship_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Some(dir.path().join("nested"))).unwrap();
        let mut r = Relationship::new(Kind::Replication, "db").unwrap();
        assert_eq!(r.id.len(), 16);
        r.set_destination(destination("east")).unwrap();
        r.set_source(Source {
            place: place("west"),
            pvc: "data".into(),
            volume: VolumeOptions {
                copy_method: CopyMethod::Snapshot,
                ..VolumeOptions::default()
            },
            applied: false,
        })
        .unwrap();
        store.create(&r).unwrap();
        assert_eq!(store.load("db", Kind::Replication).unwrap(), r);
        let text = std::fs::read_to_string(store.path("db")).unwrap();
        assert!(text.contains("context: west"), "{text}");
        assert!(text.contains("copyMethod: Snapshot"), "{text}");
        assert!(matches!(store.create(&r), Err(Error::Exists { .. })));
        store.remove("db").unwrap();
        let missing = store.load("db", Kind::Replication).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("kubectl wasmover replication create db"),
            "{missing}"
        );
    }

    #[test]
    fn a_file_of_another_kind_or_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Some(dir.path().to_owned())).unwrap();
        store
            .create(&Relationship::new(Kind::Migration, "m").unwrap())
            .unwrap();
        let wrong = store.load("m", Kind::Replication).unwrap_err();
        assert_eq!(
            wrong.to_string(),
            "m is a migration relationship, not a replication one (rule kind)"
        );
        std::fs::write(store.path("v"), "version: 9\nkind: replication\n").unwrap();
        let newer = store.load("v", Kind::Replication).unwrap_err();
        assert!(
            newer.to_string().contains("layout version 9 is not 1"),
            "{newer}"
        );
        std::fs::write(store.path("junk"), "version: 1\nkind: [").unwrap();
        assert!(matches!(
            store.load("junk", Kind::Replication),
            Err(Error::Parse { .. })
        ));
    }

    #[test]
    fn names_must_name_objects() {
        for good in ["db", "a-1", &"x".repeat(63)] {
            check_name("relationship", good).unwrap();
        }
        for bad in ["", "Db", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            let e = check_name("relationship", bad).unwrap_err();
            assert!(e.to_string().ends_with("(rule name)"), "{e}");
        }
        assert!(Relationship::new(Kind::Replication, "../etc").is_err());
    }

    #[test]
    fn an_applied_side_cannot_move_but_can_change() {
        let mut r = Relationship::new(Kind::Replication, "db").unwrap();
        r.set_destination(destination("east")).unwrap();
        // Not applied yet: it may move freely.
        r.set_destination(destination("west")).unwrap();
        r.destination.as_mut().unwrap().applied = true;
        let moved = r.set_destination(destination("east")).unwrap_err();
        assert_eq!(
            moved.to_string(),
            "the destination exists at backup/db in context west: \
             run `replication delete` before moving it (rule moved-side)"
        );
        // Same place, other options: kept applied, applied at the next sync.
        let mut bigger = destination("west");
        bigger.capacity = Some("2Gi".into());
        r.set_destination(bigger).unwrap();
        let d = r.destination.as_ref().unwrap();
        assert!(d.applied && d.capacity.as_deref() == Some("2Gi"));
    }

    #[test]
    fn missing_sides_name_the_command_that_sets_them() {
        let r = Relationship::new(Kind::Replication, "db").unwrap();
        assert_eq!(
            r.sides().unwrap_err().to_string(),
            "relationship db has no source yet: set it with `set-source` (rule incomplete)"
        );
        let mut r = r;
        r.set_source(Source {
            place: place("west"),
            pvc: "data".into(),
            volume: VolumeOptions::default(),
            applied: false,
        })
        .unwrap();
        assert!(
            r.sides()
                .unwrap_err()
                .to_string()
                .contains("set-destination")
        );
        let migration = Relationship::new(Kind::Migration, "m").unwrap();
        assert!(matches!(
            migration.clone().set_source(r.source.clone().unwrap()),
            Err(Error::WrongKind { .. })
        ));
    }
}
