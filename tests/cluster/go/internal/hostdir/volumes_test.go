package hostdir

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

func TestIdentity(t *testing.T) {
	c := serve(t, "")
	info, err := c.id.GetPluginInfo(ctx(t), &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != DefaultName || info.GetVendorVersion() == "" {
		t.Fatalf("GetPluginInfo: %v %v", info, err)
	}
	caps, err := c.id.GetPluginCapabilities(ctx(t), &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var services []csi.PluginCapability_Service_Type
	for _, c := range caps.GetCapabilities() {
		services = append(services, c.GetService().GetType())
	}
	if len(services) != 2 || services[0] != csi.PluginCapability_Service_CONTROLLER_SERVICE ||
		services[1] != csi.PluginCapability_Service_GROUP_CONTROLLER_SERVICE {
		t.Fatalf("services %v", services)
	}
	probe, err := c.id.Probe(ctx(t), &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Fatalf("Probe: %v %v", probe, err)
	}
	ctl, err := c.ctl.ControllerGetCapabilities(ctx(t), &csi.ControllerGetCapabilitiesRequest{})
	if err != nil || len(ctl.GetCapabilities()) != 4 {
		t.Fatalf("ControllerGetCapabilities: %v %v", ctl, err)
	}
	info2, err := c.node.NodeGetInfo(ctx(t), &csi.NodeGetInfoRequest{})
	if err != nil || info2.GetNodeId() != "node-1" {
		t.Fatalf("NodeGetInfo: %v %v", info2, err)
	}
}

func TestCreateVolumeIsIdempotent(t *testing.T) {
	c := serve(t, "")
	v := c.createVolume(t, "pvc-1", 1<<20, nil)
	if v.GetVolumeId() != "pvc-1" || v.GetCapacityBytes() != 1<<20 || v.GetContentSource() != nil {
		t.Fatalf("volume %v", v)
	}
	fi, err := os.Stat(c.data(kindVolume, "pvc-1"))
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o777 {
		t.Fatalf("volume dir: %v %v", fi, err)
	}
	writeFile(t, filepath.Join(c.data(kindVolume, "pvc-1"), "f"), "kept")
	if again := c.createVolume(t, "pvc-1", 1<<20, nil); again.GetVolumeId() != "pvc-1" {
		t.Fatalf("again %v", again)
	}
	if got := readFile(t, filepath.Join(c.data(kindVolume, "pvc-1"), "f")); got != "kept" {
		t.Fatalf("a retried create touched the volume: %q", got)
	}
	_, err = c.ctl.CreateVolume(ctx(t), &csi.CreateVolumeRequest{
		Name:               "pvc-1",
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 2 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
	})
	wantCode(t, err, codes.AlreadyExists)

	for range 2 {
		if _, err := c.ctl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-1"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.state, kindVolume, "pvc-1")); !os.IsNotExist(err) {
		t.Fatalf("volume left behind: %v", err)
	}
}

func TestCreateVolumeRefusesBlock(t *testing.T) {
	c := serve(t, "")
	block := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	_, err := c.ctl.CreateVolume(ctx(t), &csi.CreateVolumeRequest{
		Name: "pvc-b", VolumeCapabilities: []*csi.VolumeCapability{block},
	})
	wantCode(t, err, codes.InvalidArgument)

	c.createVolume(t, "pvc-m", 1, nil)
	resp, err := c.ctl.ValidateVolumeCapabilities(ctx(t), &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: "pvc-m", VolumeCapabilities: []*csi.VolumeCapability{block},
	})
	if err != nil || resp.GetConfirmed() != nil || resp.GetMessage() == "" {
		t.Fatalf("block validated: %v %v", resp, err)
	}
	resp, err = c.ctl.ValidateVolumeCapabilities(ctx(t), &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: "pvc-m", VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
	})
	if err != nil || resp.GetConfirmed() == nil {
		t.Fatalf("mount not confirmed: %v %v", resp, err)
	}
	_, err = c.ctl.ValidateVolumeCapabilities(ctx(t), &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: "nope", VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
	})
	wantCode(t, err, codes.NotFound)
}

func TestCloneCopiesTheSource(t *testing.T) {
	c := serve(t, "")
	c.createVolume(t, "pvc-src", 5<<20, nil)
	writeFile(t, filepath.Join(c.data(kindVolume, "pvc-src"), "a"), "one")
	v := c.createVolume(t, "pvc-clone", 5<<20, fromVolume("pvc-src"))
	if v.GetContentSource().GetVolume().GetVolumeId() != "pvc-src" {
		t.Fatalf("content source %v", v.GetContentSource())
	}
	writeFile(t, filepath.Join(c.data(kindVolume, "pvc-src"), "a"), "changed")
	if got := readFile(t, filepath.Join(c.data(kindVolume, "pvc-clone"), "a")); got != "one" {
		t.Fatalf("clone reads %q", got)
	}
	_, err := c.ctl.CreateVolume(ctx(t), &csi.CreateVolumeRequest{
		Name: "pvc-x", VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
		VolumeContentSource: fromVolume("missing"),
	})
	wantCode(t, err, codes.NotFound)
	// Same name, other source: not the same volume.
	_, err = c.ctl.CreateVolume(ctx(t), &csi.CreateVolumeRequest{
		Name: "pvc-clone", CapacityRange: &csi.CapacityRange{RequiredBytes: 5 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
	})
	wantCode(t, err, codes.AlreadyExists)
}

func TestStateSurvivesRestart(t *testing.T) {
	state := t.TempDir()
	c := serve(t, state)
	c.createVolume(t, "pvc-r", 7, nil)
	if _, err := c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: "snap-r", SourceVolumeId: "pvc-r"}); err != nil {
		t.Fatal(err)
	}
	c2 := serve(t, state)
	if v := c2.createVolume(t, "pvc-r", 7, nil); v.GetCapacityBytes() != 7 {
		t.Fatalf("after restart: %v", v)
	}
	list, err := c2.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{})
	if err != nil || len(list.GetEntries()) != 1 || list.GetEntries()[0].GetSnapshot().GetSnapshotId() != "snap-r" {
		t.Fatalf("after restart: %v %v", list, err)
	}
}

func TestIDForOddNames(t *testing.T) {
	for _, name := range []string{"../etc", "a/b", "", ".hidden", string(make([]byte, 200))} {
		id := idFor(name)
		if !validID(id) || id == name {
			t.Errorf("idFor(%q) = %q", name, id)
		}
	}
	if idFor("pvc-0a1b") != "pvc-0a1b" {
		t.Error("a safe name should be its own ID")
	}
}
