package hostdir

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// A copy of a directory is not taken at one instant: cp reads file after
// file, and a group's members one after another. So that a snapshot (or a
// clone) holds one instant of its volumes, like a block device's snapshot,
// the processes that use them are frozen while they are copied: a process
// uses a volume when its mount namespace has the volume's directory (or a
// directory in it) mounted, which is how Pods get it (NodePublishVolume's
// bind mount, then the container runtime's). Their cgroups are frozen with
// the cgroup freezer (v1 freezer.state, else v2 cgroup.freeze), which stops
// every task at a syscall boundary without it noticing: writes that
// returned are in the copy, later ones are not: what a crash would leave.
//
// Processes in the driver's own mount namespace (the host: kubelet, the
// driver) are never frozen, nor a root cgroup or one holding the driver.

// freezeTimeout bounds the wait for a cgroup's tasks to stop.
const freezeTimeout = 10 * time.Second

// frozenSet is what freezeUsers froze; thaw undoes it.
type frozenSet struct {
	files  []string // freezer.state or cgroup.freeze files written
	thawed []string // what to write to each to thaw it
}

// freezeUsers freezes the cgroups of the processes, outside the driver's
// mount namespace, that have any of dirs mounted. A cgroup that is frozen
// already (by someone else) is left as it is, and left frozen by thaw.
func freezeUsers(dirs []string) (*frozenSet, error) {
	fz := &frozenSet{}
	if len(dirs) == 0 {
		return fz, nil
	}
	self, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var targets []mountRef
	for _, d := range dirs {
		ref, err := fsPath(self, d)
		if err != nil {
			return nil, err
		}
		targets = append(targets, ref)
	}
	pids, err := userPids(targets)
	if err != nil {
		return nil, err
	}
	if len(pids) == 0 {
		return fz, nil
	}
	fs, err := freezer(self)
	if err != nil {
		return nil, err
	}
	own, err := fs.cgroupOf("self")
	if err != nil {
		return nil, err
	}
	for _, pid := range pids {
		cg, err := fs.cgroupOf(pid)
		if errors.Is(err, os.ErrNotExist) {
			continue // gone meanwhile
		}
		if err != nil {
			fz.thaw()
			return nil, err
		}
		if cg == "/" || cg == own || strings.HasPrefix(own, cg+"/") {
			fz.thaw()
			return nil, fmt.Errorf("process %s uses a volume being copied but cannot be frozen: it is in cgroup %q, the root or the driver's own", pid, cg)
		}
		if err := fz.freeze(fs, cg); err != nil {
			fz.thaw()
			return nil, fmt.Errorf("freeze cgroup %s of process %s: %w", cg, pid, err)
		}
	}
	return fz, nil
}

// thaw thaws what was frozen (a cgroup gone meanwhile is fine), trying
// each three times; it returns the first error.
func (fz *frozenSet) thaw() error {
	if fz == nil {
		return nil
	}
	var first error
	for i, f := range fz.files {
		var err error
		for try := 0; try < 3; try++ {
			if err = os.WriteFile(f, []byte(fz.thawed[i]), 0); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil && first == nil {
			first = fmt.Errorf("thaw %s: %w", f, err)
		}
	}
	fz.files, fz.thawed = nil, nil
	return first
}

// freeze freezes one cgroup (once) and waits until all its tasks stopped.
func (fz *frozenSet) freeze(fs freezerFS, cg string) error {
	file, state, frozen, thawed, done := fs.files(cg)
	if slices.Contains(fz.files, file) {
		return nil
	}
	if already, err := isFrozen(state, done); err != nil {
		return err
	} else if already {
		return nil
	}
	if err := os.WriteFile(file, []byte(frozen), 0); err != nil {
		return err
	}
	fz.files, fz.thawed = append(fz.files, file), append(fz.thawed, thawed)
	deadline := time.Now().Add(freezeTimeout)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		if ok, err := isFrozen(state, done); err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("its tasks did not stop within %v", freezeTimeout)
		}
		time.Sleep(delay)
	}
}

// isFrozen reports whether the state file holds the line done.
func isFrozen(state, done string) (bool, error) {
	b, err := os.ReadFile(state)
	if err != nil {
		return false, err
	}
	return slices.Contains(strings.Split(string(b), "\n"), done), nil
}

// freezerFS is where the freezer is: a cgroup v1 freezer hierarchy, or the
// cgroup v2 one.
type freezerFS struct {
	mount string // its mount point
	v1    bool
}

// files are the file to write, the file to read, what to write to freeze
// and to thaw, and the state file's line once frozen.
func (f freezerFS) files(cg string) (file, state, freeze, thaw, done string) {
	dir := filepath.Join(f.mount, cg)
	if f.v1 {
		// Reading freezer.state also moves a FREEZING cgroup on.
		return filepath.Join(dir, "freezer.state"), filepath.Join(dir, "freezer.state"), "FROZEN", "THAWED", "FROZEN"
	}
	return filepath.Join(dir, "cgroup.freeze"), filepath.Join(dir, "cgroup.events"), "1", "0", "frozen 1"
}

// cgroupOf is the freezer cgroup of a process ("self" or a pid).
func (f freezerFS) cgroupOf(pid string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "cgroup"))
	if err != nil {
		return "", err
	}
	return parseCgroup(string(b), f.v1)
}

// parseCgroup picks the freezer's (v1) or the unified (v2) path out of a
// /proc/PID/cgroup file.
func parseCgroup(text string, v1 bool) (string, error) {
	for _, line := range strings.Split(text, "\n") {
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrls, p, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if v1 && slices.Contains(strings.Split(ctrls, ","), "freezer") || !v1 && id == "0" && ctrls == "" {
			return p, nil
		}
	}
	return "", fmt.Errorf("no %s cgroup in %q", map[bool]string{true: "freezer", false: "unified"}[v1], text)
}

// freezer finds the freezer to use (a variable for the tests of cgroup v2
// on a host that has both).
var freezer = findFreezer

// findFreezer finds the cgroup v1 freezer hierarchy, else the cgroup v2 one.
func findFreezer(self []mountEntry) (freezerFS, error) {
	var v2 string
	for _, m := range self {
		switch {
		case m.fstype == "cgroup" && slices.Contains(strings.Split(m.super, ","), "freezer"):
			return freezerFS{mount: m.point, v1: true}, nil
		case m.fstype == "cgroup2" && v2 == "":
			v2 = m.point
		}
	}
	if v2 == "" {
		return freezerFS{}, errors.New("neither a cgroup v1 freezer nor cgroup v2 is mounted")
	}
	return freezerFS{mount: v2}, nil
}

// mountRef names a directory as mountinfo does: a device and a path from
// the root of the filesystem on it.
type mountRef struct{ dev, root string }

// within reports whether mount m shows the directory r or one inside it.
func (r mountRef) within(m mountEntry) bool {
	return m.dev == r.dev && (m.root == r.root || strings.HasPrefix(m.root, r.root+"/") || r.root == "/")
}

// fsPath finds the device and filesystem path of dir from the mount that
// holds it (the last, topmost of those with the longest mount point).
func fsPath(self []mountEntry, dir string) (mountRef, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return mountRef{}, err
	}
	if real, err = filepath.Abs(real); err != nil {
		return mountRef{}, err
	}
	best := -1
	for i, m := range self {
		if (real == m.point || m.point == "/" || strings.HasPrefix(real, m.point+"/")) &&
			(best < 0 || len(m.point) >= len(self[best].point)) {
			best = i
		}
	}
	if best < 0 {
		return mountRef{}, fmt.Errorf("no mount holds %s", real)
	}
	m := self[best]
	return mountRef{dev: m.dev, root: path.Join(m.root, strings.TrimPrefix(real, m.point))}, nil
}

// userPids lists the processes of the mount namespaces, other than the
// driver's, that have one of targets mounted.
func userPids(targets []mountRef) ([]string, error) {
	ownNS, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	uses := map[string]bool{ownNS: false}
	var pids []string
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '1' || pid[0] > '9' {
			continue
		}
		// A process that is gone, or one this driver may not inspect
		// (not root), is none of its concern.
		ns, err := os.Readlink(filepath.Join("/proc", pid, "ns/mnt"))
		if err != nil {
			continue
		}
		use, seen := uses[ns]
		if !seen {
			mounts, err := readMountinfo(filepath.Join("/proc", pid, "mountinfo"))
			if err != nil {
				continue
			}
			use = slices.ContainsFunc(mounts, func(m mountEntry) bool {
				return slices.ContainsFunc(targets, func(t mountRef) bool { return t.within(m) })
			})
			uses[ns] = use
		}
		if use {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// mountEntry is one line of a mountinfo file.
type mountEntry struct {
	dev, root, point, fstype, super string
}

// readMountinfo parses a /proc/PID/mountinfo file.
func readMountinfo(file string) ([]mountEntry, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m, ok := parseMountinfoLine(sc.Text()); ok {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// parseMountinfoLine reads "ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS...] -
// FSTYPE SOURCE SUPER".
func parseMountinfoLine(line string) (mountEntry, bool) {
	fields := strings.Fields(line)
	sep := slices.Index(fields, "-")
	if len(fields) < 5 || sep < 6 || len(fields) < sep+4 {
		return mountEntry{}, false
	}
	return mountEntry{
		dev:    fields[2],
		root:   unescapeOctal(fields[3]),
		point:  unescapeOctal(fields[4]),
		fstype: fields[sep+1],
		super:  fields[sep+3],
	}, true
}
