package hostdir

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

// needRoot skips a test that mounts: bind mounts need root (CAP_SYS_ADMIN).
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
}

func TestPublishBindMounts(t *testing.T) {
	needRoot(t)
	c := serve(t, "")
	c.createVolume(t, "pvc-n", 1, nil)
	writeFile(t, filepath.Join(c.data(kindVolume, "pvc-n"), "f"), "hello")
	target := filepath.Join(t.TempDir(), "pods", "uid", "volumes", "mount")
	t.Cleanup(func() { _ = unmountAll(target) })

	pub := &csi.NodePublishVolumeRequest{VolumeId: "pvc-n", TargetPath: target, VolumeCapability: mountCap()}
	for range 2 {
		if _, err := c.node.NodePublishVolume(ctx(t), pub); err != nil {
			t.Fatal(err)
		}
	}
	if got := readFile(t, filepath.Join(target, "f")); got != "hello" {
		t.Fatalf("target reads %q", got)
	}
	writeFile(t, filepath.Join(target, "g"), "from pod")
	if got := readFile(t, filepath.Join(c.data(kindVolume, "pvc-n"), "g")); got != "from pod" {
		t.Fatalf("volume reads %q", got)
	}
	if n, err := mountCount(target); err != nil || n != 1 {
		t.Fatalf("%d mounts at the target after two publishes, want 1 (%v)", n, err)
	}

	unpub := &csi.NodeUnpublishVolumeRequest{VolumeId: "pvc-n", TargetPath: target}
	for range 2 {
		if _, err := c.node.NodeUnpublishVolume(ctx(t), unpub); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("target left behind: %v", err)
	}
	if got := readFile(t, filepath.Join(c.data(kindVolume, "pvc-n"), "g")); got != "from pod" {
		t.Fatalf("unpublish lost data: %q", got)
	}
}

func TestPublishReadOnly(t *testing.T) {
	needRoot(t)
	c := serve(t, "")
	c.createVolume(t, "pvc-ro", 1, nil)
	target := filepath.Join(t.TempDir(), "ro")
	t.Cleanup(func() { _ = unmountAll(target) })
	_, err := c.node.NodePublishVolume(ctx(t), &csi.NodePublishVolumeRequest{
		VolumeId: "pvc-ro", TargetPath: target, VolumeCapability: mountCap(), Readonly: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = os.WriteFile(filepath.Join(target, "f"), nil, 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write to a read-only publish: %v", err)
	}
	if _, err := c.node.NodeUnpublishVolume(ctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "pvc-ro", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
}

// TestPublishChecks needs no root: every refusal comes before mounting.
func TestPublishChecks(t *testing.T) {
	c := serve(t, "")
	target := filepath.Join(t.TempDir(), "t")
	_, err := c.node.NodePublishVolume(ctx(t), &csi.NodePublishVolumeRequest{
		VolumeId: "missing", TargetPath: target, VolumeCapability: mountCap(),
	})
	wantCode(t, err, codes.NotFound)
	_, err = c.node.NodePublishVolume(ctx(t), &csi.NodePublishVolumeRequest{
		VolumeId: "missing", TargetPath: target,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
	})
	wantCode(t, err, codes.InvalidArgument)
	// Unpublishing what was never published is fine.
	if _, err := c.node.NodeUnpublishVolume(ctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "x", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	caps, err := c.node.NodeGetCapabilities(ctx(t), &csi.NodeGetCapabilitiesRequest{})
	if err != nil || len(caps.GetCapabilities()) != 0 {
		t.Fatalf("node capabilities: %v %v", caps, err)
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:   "/a b",
		`/tab\011`:  "/tab\t",
		`/back\134`: `/back\`,
		`/plain`:    "/plain",
		`/end\04`:   `/end\04`,
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}
