package hostdir

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

func TestSnapshotAndRestore(t *testing.T) {
	c := serve(t, "")
	c.createVolume(t, "pvc-a", 3<<20, nil)
	writeFile(t, filepath.Join(c.data(kindVolume, "pvc-a"), "f"), "before")

	before := time.Now().Add(-time.Second)
	resp, err := c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: "pvc-a"})
	if err != nil {
		t.Fatal(err)
	}
	s := resp.GetSnapshot()
	if s.GetSnapshotId() != "snapshot-1" || s.GetSourceVolumeId() != "pvc-a" || !s.GetReadyToUse() ||
		s.GetSizeBytes() != 3<<20 || s.GetCreationTime().AsTime().Before(before) || s.GetGroupSnapshotId() != "" {
		t.Fatalf("snapshot %v", s)
	}
	writeFile(t, filepath.Join(c.data(kindVolume, "pvc-a"), "f"), "after")

	again, err := c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: "pvc-a"})
	if err != nil || !again.GetSnapshot().GetCreationTime().AsTime().Equal(s.GetCreationTime().AsTime()) {
		t.Fatalf("a retried snapshot is not the first one: %v %v", again, err)
	}
	if got := readFile(t, filepath.Join(c.data(kindSnapshot, "snapshot-1"), "f")); got != "before" {
		t.Fatalf("a retried snapshot was taken again: %q", got)
	}
	c.createVolume(t, "pvc-b", 1, nil)
	_, err = c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: "pvc-b"})
	wantCode(t, err, codes.AlreadyExists)
	_, err = c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: "snapshot-2", SourceVolumeId: "missing"})
	wantCode(t, err, codes.NotFound)

	v := c.createVolume(t, "pvc-restored", 3<<20, fromSnapshot("snapshot-1"))
	if v.GetContentSource().GetSnapshot().GetSnapshotId() != "snapshot-1" || v.GetCapacityBytes() != 3<<20 {
		t.Fatalf("restored %v", v)
	}
	if got := readFile(t, filepath.Join(c.data(kindVolume, "pvc-restored"), "f")); got != "before" {
		t.Fatalf("restored volume reads %q", got)
	}
	_, err = c.ctl.CreateVolume(ctx(t), &csi.CreateVolumeRequest{
		Name: "pvc-small", CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()}, VolumeContentSource: fromSnapshot("snapshot-1"),
	})
	wantCode(t, err, codes.OutOfRange)
	_, err = c.ctl.CreateVolume(ctx(t), &csi.CreateVolumeRequest{
		Name: "pvc-none", VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
		VolumeContentSource: fromSnapshot("missing"),
	})
	wantCode(t, err, codes.NotFound)

	// The snapshot outlives its volume, and deleting it twice is fine.
	if _, err := c.ctl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-a"}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(c.data(kindSnapshot, "snapshot-1"), "f")); got != "before" {
		t.Fatalf("snapshot reads %q", got)
	}
	for range 2 {
		if _, err := c.ctl.DeleteSnapshot(ctx(t), &csi.DeleteSnapshotRequest{SnapshotId: "snapshot-1"}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{})
	if err != nil || len(list.GetEntries()) != 0 {
		t.Fatalf("left: %v %v", list, err)
	}
}

func TestListSnapshotsFiltersAndPages(t *testing.T) {
	c := serve(t, "")
	c.createVolume(t, "pvc-1", 1, nil)
	c.createVolume(t, "pvc-2", 2, nil)
	for _, s := range [][2]string{{"s-a", "pvc-1"}, {"s-b", "pvc-2"}, {"s-c", "pvc-1"}} {
		if _, err := c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: s[0], SourceVolumeId: s[1]}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(r *csi.ListSnapshotsResponse) (out []string) {
		for _, e := range r.GetEntries() {
			out = append(out, e.GetSnapshot().GetSnapshotId())
		}
		return out
	}
	byVol, err := c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{SourceVolumeId: "pvc-1"})
	if got := ids(byVol); err != nil || len(got) != 2 || got[0] != "s-a" || got[1] != "s-c" {
		t.Fatalf("by volume: %v %v", got, err)
	}
	byID, err := c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{SnapshotId: "s-b"})
	if got := ids(byID); err != nil || len(got) != 1 || byID.GetEntries()[0].GetSnapshot().GetSizeBytes() != 2 {
		t.Fatalf("by ID: %v %v", got, err)
	}
	none, err := c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{SnapshotId: "nope"})
	if err != nil || len(none.GetEntries()) != 0 {
		t.Fatalf("unknown ID: %v %v", none, err)
	}

	var all []string
	token := ""
	for range 5 {
		page, err := c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ids(page)...)
		if token = page.GetNextToken(); token == "" {
			break
		}
	}
	if len(all) != 3 || all[0] != "s-a" || all[2] != "s-c" {
		t.Fatalf("paged: %v", all)
	}
	_, err = c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{StartingToken: "x"})
	wantCode(t, err, codes.Aborted)
}

// TestCopyKeepsMetadata checks what a snapshot keeps of the tree: modes,
// mtimes, symlinks, hard links, and owners when run as root.
func TestCopyKeepsMetadata(t *testing.T) {
	c := serve(t, "")
	c.createVolume(t, "pvc-meta", 1, nil)
	root := c.data(kindVolume, "pvc-meta")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "d", "e"), 0o750))
	writeFile(t, filepath.Join(root, "d", "x"), "exec")
	must(os.Symlink("d/x", filepath.Join(root, "link")))
	must(os.Symlink("/nowhere", filepath.Join(root, "dangling")))
	must(os.Link(filepath.Join(root, "d", "x"), filepath.Join(root, "hard")))
	asRoot := os.Geteuid() == 0
	if asRoot {
		must(os.Lchown(filepath.Join(root, "d", "x"), 1234, 5678))
		must(os.Lchown(filepath.Join(root, "link"), 4321, 8765))
	}
	// After the chown, which clears set-user-ID.
	must(os.Chmod(filepath.Join(root, "d", "x"), 0o4711))
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	must(os.Chtimes(filepath.Join(root, "d", "x"), old, old))
	must(os.Chtimes(filepath.Join(root, "d"), old, old))

	if _, err := c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: "snap-meta", SourceVolumeId: "pvc-meta"}); err != nil {
		t.Fatal(err)
	}
	c.createVolume(t, "pvc-meta-2", 1, fromSnapshot("snap-meta"))
	copied := c.data(kindVolume, "pvc-meta-2")

	for _, rel := range []string{".", "d", "d/e", "d/x", "link", "dangling", "hard"} {
		a, err := os.Lstat(filepath.Join(root, rel))
		must(err)
		b, err := os.Lstat(filepath.Join(copied, rel))
		must(err)
		if a.Mode() != b.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, b.Mode(), a.Mode())
		}
		if a.Mode().IsRegular() || rel == "d" {
			if !a.ModTime().Equal(b.ModTime()) {
				t.Errorf("%s: mtime %v, want %v", rel, b.ModTime(), a.ModTime())
			}
		}
		sa, sb := a.Sys().(*syscall.Stat_t), b.Sys().(*syscall.Stat_t)
		if asRoot && (sa.Uid != sb.Uid || sa.Gid != sb.Gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, sb.Uid, sb.Gid, sa.Uid, sa.Gid)
		}
	}
	if target, err := os.Readlink(filepath.Join(copied, "link")); err != nil || target != "d/x" {
		t.Errorf("symlink: %q %v", target, err)
	}
	x, err := os.Stat(filepath.Join(copied, "d", "x"))
	must(err)
	h, err := os.Stat(filepath.Join(copied, "hard"))
	must(err)
	if !os.SameFile(x, h) {
		t.Error("hard link became two files")
	}
	if !asRoot {
		t.Log("owners not checked: not root")
	}
}
