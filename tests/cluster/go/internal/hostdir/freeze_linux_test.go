package hostdir

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

func TestParseMountinfoLine(t *testing.T) {
	m, ok := parseMountinfoLine(`2353 2316 254:1 /tmp/c/csi/volumes/pvc-1/data /data\040x rw,relatime master:1 - ext4 /dev/vda rw,errors=remount-ro`)
	if !ok || m != (mountEntry{dev: "254:1", root: "/tmp/c/csi/volumes/pvc-1/data", point: "/data x", fstype: "ext4", super: "rw,errors=remount-ro"}) {
		t.Fatalf("%+v %v", m, ok)
	}
	m, ok = parseMountinfoLine(`35 24 0:30 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer`)
	if !ok || m.fstype != "cgroup" || m.super != "rw,freezer" {
		t.Fatalf("%+v %v", m, ok)
	}
	if _, ok := parseMountinfoLine("35 24 0:30 / /x rw"); ok {
		t.Fatal("a line without its separator parsed")
	}
}

func TestParseCgroup(t *testing.T) {
	text := "12:pids:/a\n7:freezer:/wasmover-1/kubepods/pod1/c1\n3:cpu,cpuacct:/b\n0::/unified/c1\n"
	if p, err := parseCgroup(text, true); err != nil || p != "/wasmover-1/kubepods/pod1/c1" {
		t.Fatal(p, err)
	}
	if p, err := parseCgroup(text, false); err != nil || p != "/unified/c1" {
		t.Fatal(p, err)
	}
	if _, err := parseCgroup("12:pids:/a\n", true); err == nil {
		t.Fatal("no freezer line, no error")
	}
}

func TestFsPathAndWithin(t *testing.T) {
	dir := t.TempDir()
	self, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := fsPath(self, dir)
	if err != nil || ref.dev == "" || !strings.HasSuffix(ref.root, filepath.Base(dir)) {
		t.Fatalf("%+v %v", ref, err)
	}
	// what a container's bind mount of the directory, or of a subPath in it, shows
	for _, root := range []string{ref.root, ref.root + "/sub"} {
		if !ref.within(mountEntry{dev: ref.dev, root: root, point: "/data"}) {
			t.Errorf("%s not within %+v", root, ref)
		}
	}
	for _, m := range []mountEntry{{dev: ref.dev, root: ref.root + "x"}, {dev: "0:1", root: ref.root}} {
		if ref.within(m) {
			t.Errorf("%+v within %+v", m, ref)
		}
	}
}

// writer is a process in a mount namespace of its own with volume
// directories bind-mounted, like a container's, that appends the next
// number to a file "seq" of each in turn, as fast as a shell can (one
// write(2) a line: no instant shows half of one).
type writer struct {
	cmd    *exec.Cmd
	cgroup string // its freezer cgroup's directory ("" when none)
}

// startWriter starts a writer of dirs, in a cgroup of its own if ownCgroup.
func startWriter(t *testing.T, ownCgroup bool, dirs ...string) *writer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mount namespaces, bind mounts, cgroups")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	w := &writer{}
	script := ""
	if ownCgroup {
		self, err := readMountinfo("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		fz, err := freezer(self)
		if err != nil {
			t.Skip(err)
		}
		w.cgroup = filepath.Join(fz.mount, fmt.Sprintf("hostdir-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
		if err := os.Mkdir(w.cgroup, 0o755); err != nil {
			t.Skip("cannot make a cgroup: ", err)
		}
		script = "echo $$ >" + filepath.Join(w.cgroup, "cgroup.procs") + " && "
	}
	mnt := t.TempDir()
	loop := "i=0; while :; do i=$((i+1))"
	for i, d := range dirs {
		m := filepath.Join(mnt, strconv.Itoa(i))
		if err := os.Mkdir(m, 0o755); err != nil {
			t.Fatal(err)
		}
		script += fmt.Sprintf("mount --bind %s %s && ", d, m)
		loop += fmt.Sprintf("; echo $i >>%s/seq", m)
	}
	script += "exec sh -c '" + loop + "; done'"
	w.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	w.cmd.Stderr = os.Stderr
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if w.cgroup != "" { // a frozen writer would not die
			_ = os.WriteFile(filepath.Join(w.cgroup, "freezer.state"), []byte("THAWED"), 0)
			_ = os.WriteFile(filepath.Join(w.cgroup, "cgroup.freeze"), []byte("0"), 0)
		}
		_ = w.cmd.Process.Kill()
		_ = w.cmd.Wait()
		if w.cgroup != "" {
			if err := os.Remove(w.cgroup); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		}
	})
	for _, d := range dirs {
		waitFor(t, func() bool { return readSeq(t, d) > 0 })
	}
	return w
}

// frozen reports whether the writer's cgroup is frozen (v1 or v2).
func (w *writer) frozen(t *testing.T) bool {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(w.cgroup, "freezer.state")); err == nil {
		return strings.TrimSpace(string(b)) != "THAWED"
	}
	b, err := os.ReadFile(filepath.Join(w.cgroup, "cgroup.events"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), "frozen 1")
}

// readSeq reads the last line of dir/seq: 0 when there is none.
func readSeq(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "seq"))
	if os.IsNotExist(err) || err == nil && len(b) == 0 {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	n, err := strconv.Atoi(lines[len(lines)-1])
	if err != nil {
		t.Fatalf("%s/seq: %v", dir, err)
	}
	return n
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

// TestGroupSnapshotIsOfOneInstant takes group snapshots of two volumes a
// writer writes in turn (first, then second): each must show a state the
// writer passed through, first = second or first = second + 1. Copied one
// after the other without freezing, the second is ahead of the first in
// nearly every round.
func TestGroupSnapshotIsOfOneInstant(t *testing.T) {
	groupSnapshotsOfOneInstant(t)
}

// TestGroupSnapshotIsOfOneInstantCgroupV2: the same with the cgroup v2
// freezer (cgroup.freeze), where the host has one.
func TestGroupSnapshotIsOfOneInstantCgroupV2(t *testing.T) {
	self, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	v2 := ""
	for _, m := range self {
		if m.fstype == "cgroup2" {
			v2 = m.point
		}
	}
	if v2 == "" {
		t.Skip("no cgroup v2 hierarchy")
	}
	was := freezer
	freezer = func([]mountEntry) (freezerFS, error) { return freezerFS{mount: v2}, nil }
	t.Cleanup(func() { freezer = was })
	groupSnapshotsOfOneInstant(t)
}

func groupSnapshotsOfOneInstant(t *testing.T) {
	c := serve(t, "")
	c.createVolume(t, "pvc-1", 1, nil)
	c.createVolume(t, "pvc-2", 1, nil)
	w := startWriter(t, true, c.data(kindVolume, "pvc-1"), c.data(kindVolume, "pvc-2"))
	for round := range 20 {
		resp, err := c.group.CreateVolumeGroupSnapshot(ctx(t), &csi.CreateVolumeGroupSnapshotRequest{
			Name: fmt.Sprintf("g-%d", round), SourceVolumeIds: []string{"pvc-1", "pvc-2"},
		})
		if err != nil {
			t.Fatal(err)
		}
		seq := map[string]int{}
		for _, s := range resp.GetGroupSnapshot().GetSnapshots() {
			if !s.GetCreationTime().AsTime().Equal(resp.GetGroupSnapshot().GetCreationTime().AsTime()) {
				t.Errorf("member %s taken at %v, the group at %v", s.GetSnapshotId(),
					s.GetCreationTime().AsTime(), resp.GetGroupSnapshot().GetCreationTime().AsTime())
			}
			seq[s.GetSourceVolumeId()] = readSeq(t, c.data(kindSnapshot, s.GetSnapshotId()))
		}
		first, second := seq["pvc-1"], seq["pvc-2"]
		if second == 0 || first != second && first != second+1 {
			t.Fatalf("round %d: torn group snapshot: first %d, second %d", round, first, second)
		}
		if w.frozen(t) {
			t.Fatalf("round %d: the writer's cgroup is frozen after the snapshot", round)
		}
	}
	// thawed: it writes on
	n := readSeq(t, c.data(kindVolume, "pvc-2"))
	waitFor(t, func() bool { return readSeq(t, c.data(kindVolume, "pvc-2")) > n })
}

// TestSnapshotIsOfOneInstant: the same for one volume with two files
// written in turn, where cp copies one after the other.
func TestSnapshotIsOfOneInstant(t *testing.T) {
	c := serve(t, "")
	c.createVolume(t, "pvc-1", 1, nil)
	vol := c.data(kindVolume, "pvc-1")
	for _, d := range []string{"1", "2"} {
		if err := os.Mkdir(filepath.Join(vol, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	startWriter(t, true, filepath.Join(vol, "1"), filepath.Join(vol, "2"))
	for round := range 20 {
		resp, err := c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: fmt.Sprintf("s-%d", round), SourceVolumeId: "pvc-1"})
		if err != nil {
			t.Fatal(err)
		}
		data := c.data(kindSnapshot, resp.GetSnapshot().GetSnapshotId())
		first, second := readSeq(t, filepath.Join(data, "1")), readSeq(t, filepath.Join(data, "2"))
		if second == 0 || first != second && first != second+1 {
			t.Fatalf("round %d: torn snapshot: first %d, second %d", round, first, second)
		}
	}
}

// TestUnfreezableUserRefused: a process using the volume in the driver's
// own (or the root) cgroup cannot be frozen without freezing the driver:
// the snapshot is refused as UNAVAILABLE, not taken torn.
func TestUnfreezableUserRefused(t *testing.T) {
	c := serve(t, "")
	c.createVolume(t, "pvc-1", 1, nil)
	startWriter(t, false, c.data(kindVolume, "pvc-1"))
	_, err := c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "pvc-1"})
	wantCode(t, err, codes.Unavailable)
	list, err := c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{})
	if err != nil || len(list.GetEntries()) != 0 {
		t.Fatalf("snapshots: %v %v", list, err)
	}
}
