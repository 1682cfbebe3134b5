package hostdir

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// The state directory holds one directory per object:
//
//	volumes/<id>/meta.json    volumes/<id>/data/    (data is what Pods mount)
//	snapshots/<id>/meta.json  snapshots/<id>/data/
//	groups/<id>/meta.json
//	tmp/                      copies in progress, renamed into place when whole
//
// An object exists exactly when its meta.json does: it is written last on
// create and removed first on delete, so a crash leaves at most a leftover
// directory that the next create of the same name replaces.
const (
	kindVolume   = "volumes"
	kindSnapshot = "snapshots"
	kindGroup    = "groups"
)

// volume is the metadata of one volume.
type volume struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	CapacityBytes  int64     `json:"capacityBytes"`
	SourceSnapshot string    `json:"sourceSnapshot,omitempty"`
	SourceVolume   string    `json:"sourceVolume,omitempty"`
	Created        time.Time `json:"created"`
}

// snapshot is the metadata of one snapshot, standalone or a group member.
type snapshot struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	SourceVolume string    `json:"sourceVolume"`
	Group        string    `json:"group,omitempty"`
	SizeBytes    int64     `json:"sizeBytes"`
	Created      time.Time `json:"created"`
}

// group is the metadata of one volume group snapshot.
type group struct {
	ID            string            `json:"id"`
	Name          string            `json:"name"`
	SourceVolumes []string          `json:"sourceVolumes"`
	Parameters    map[string]string `json:"parameters,omitempty"`
	Snapshots     []string          `json:"snapshots"`
	Created       time.Time         `json:"created"`
}

// store keeps objects as directories with a JSON file each under root.
type store struct {
	root string
}

// openStore creates the layout under root and clears unfinished copies.
func openStore(root string) (*store, error) {
	if root == "" {
		return nil, errors.New("state dir is empty")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	s := &store{root: abs}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, err
	}
	for _, d := range []string{kindVolume, kindSnapshot, kindGroup, "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, err
		}
	}
	return s, nil
}

var safeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

// idFor derives an object's ID from its CSI name, so that a retried create
// finds the object of an earlier attempt: the name itself when it is a safe
// file name, else a hash of it.
func idFor(name string) string {
	if safeID.MatchString(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "h-" + hex.EncodeToString(sum[:20])
}

// validID reports whether id can name a directory of the store.
func validID(id string) bool {
	return safeID.MatchString(id)
}

func (s *store) tmpDir() string { return filepath.Join(s.root, "tmp") }

func (s *store) dir(kind, id string) string { return filepath.Join(s.root, kind, id) }

// dataDir is the directory holding a volume's or snapshot's files.
func (s *store) dataDir(kind, id string) string { return filepath.Join(s.dir(kind, id), "data") }

func (s *store) metaPath(kind, id string) string { return filepath.Join(s.dir(kind, id), "meta.json") }

// load reads an object's metadata into v; found is false when there is none.
func (s *store) load(kind, id string, v any) (found bool, err error) {
	if !validID(id) {
		return false, nil
	}
	b, err := os.ReadFile(s.metaPath(kind, id))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", s.metaPath(kind, id), err)
	}
	return true, nil
}

// save writes an object's metadata atomically.
func (s *store) save(kind, id string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir(kind, id), 0o700); err != nil {
		return err
	}
	tmp := s.metaPath(kind, id) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.metaPath(kind, id))
}

// remove deletes an object: its metadata first, then its files.
func (s *store) remove(kind, id string) error {
	if !validID(id) {
		return nil
	}
	if err := os.Remove(s.metaPath(kind, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.RemoveAll(s.dir(kind, id))
}

// ids lists the IDs of the objects of a kind that have metadata.
func (s *store) ids(kind string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, kind))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if _, err := os.Stat(s.metaPath(kind, e.Name())); err == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}
