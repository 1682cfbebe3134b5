package hostdir

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

func TestGroupSnapshot(t *testing.T) {
	c := serve(t, "")
	caps, err := c.group.GroupControllerGetCapabilities(ctx(t), &csi.GroupControllerGetCapabilitiesRequest{})
	if err != nil || len(caps.GetCapabilities()) != 1 || caps.GetCapabilities()[0].GetRpc().GetType() !=
		csi.GroupControllerServiceCapability_RPC_CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT {
		t.Fatalf("capabilities %v %v", caps, err)
	}
	c.createVolume(t, "pvc-db", 1<<20, nil)
	c.createVolume(t, "pvc-log", 2<<20, nil)
	writeFile(t, filepath.Join(c.data(kindVolume, "pvc-db"), "db"), "db-1")
	writeFile(t, filepath.Join(c.data(kindVolume, "pvc-log"), "log"), "log-1")

	req := &csi.CreateVolumeGroupSnapshotRequest{
		Name:            "groupsnapshot-1",
		SourceVolumeIds: []string{"pvc-log", "pvc-db"},
		Parameters:      map[string]string{"k": "v"},
	}
	resp, err := c.group.CreateVolumeGroupSnapshot(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	g := resp.GetGroupSnapshot()
	if g.GetGroupSnapshotId() != "groupsnapshot-1" || !g.GetReadyToUse() || g.GetCreationTime() == nil || len(g.GetSnapshots()) != 2 {
		t.Fatalf("group %v", g)
	}
	members := map[string]*csi.Snapshot{}
	var ids []string
	for _, s := range g.GetSnapshots() {
		if s.GetGroupSnapshotId() != g.GetGroupSnapshotId() || !s.GetReadyToUse() || s.GetCreationTime() == nil {
			t.Fatalf("member %v", s)
		}
		members[s.GetSourceVolumeId()] = s
		ids = append(ids, s.GetSnapshotId())
	}
	if members["pvc-db"].GetSizeBytes() != 1<<20 || members["pvc-log"].GetSizeBytes() != 2<<20 {
		t.Fatalf("members %v", members)
	}
	writeFile(t, filepath.Join(c.data(kindVolume, "pvc-db"), "db"), "db-2")

	again, err := c.group.CreateVolumeGroupSnapshot(ctx(t), req)
	if err != nil || again.GetGroupSnapshot().GetCreationTime().AsTime() != g.GetCreationTime().AsTime() ||
		len(again.GetGroupSnapshot().GetSnapshots()) != 2 {
		t.Fatalf("retried create: %v %v", again, err)
	}
	_, err = c.group.CreateVolumeGroupSnapshot(ctx(t), &csi.CreateVolumeGroupSnapshotRequest{
		Name: "groupsnapshot-1", SourceVolumeIds: []string{"pvc-db"},
	})
	wantCode(t, err, codes.AlreadyExists)
	_, err = c.group.CreateVolumeGroupSnapshot(ctx(t), &csi.CreateVolumeGroupSnapshotRequest{
		Name: "groupsnapshot-2", SourceVolumeIds: []string{"pvc-db", "missing"},
	})
	wantCode(t, err, codes.NotFound)
	_, err = c.group.CreateVolumeGroupSnapshot(ctx(t), &csi.CreateVolumeGroupSnapshotRequest{
		Name: "groupsnapshot-3", SourceVolumeIds: []string{"pvc-db", "pvc-db"},
	})
	wantCode(t, err, codes.InvalidArgument)

	// Members are ordinary snapshots: listed, and restorable.
	list, err := c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{SnapshotId: members["pvc-db"].GetSnapshotId()})
	if err != nil || len(list.GetEntries()) != 1 || list.GetEntries()[0].GetSnapshot().GetGroupSnapshotId() != "groupsnapshot-1" {
		t.Fatalf("member listed: %v %v", list, err)
	}
	c.createVolume(t, "pvc-db-restored", 1<<20, fromSnapshot(members["pvc-db"].GetSnapshotId()))
	if got := readFile(t, filepath.Join(c.data(kindVolume, "pvc-db-restored"), "db")); got != "db-1" {
		t.Fatalf("restored member reads %q", got)
	}

	get, err := c.group.GetVolumeGroupSnapshot(ctx(t), &csi.GetVolumeGroupSnapshotRequest{
		GroupSnapshotId: "groupsnapshot-1", SnapshotIds: ids,
	})
	if err != nil || len(get.GetGroupSnapshot().GetSnapshots()) != 2 || !get.GetGroupSnapshot().GetReadyToUse() {
		t.Fatalf("get: %v %v", get, err)
	}
	_, err = c.group.GetVolumeGroupSnapshot(ctx(t), &csi.GetVolumeGroupSnapshotRequest{
		GroupSnapshotId: "groupsnapshot-1", SnapshotIds: ids[:1],
	})
	wantCode(t, err, codes.InvalidArgument)
	if _, err := c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: "loner", SourceVolumeId: "pvc-db"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.group.DeleteVolumeGroupSnapshot(ctx(t), &csi.DeleteVolumeGroupSnapshotRequest{
		GroupSnapshotId: "groupsnapshot-1", SnapshotIds: append(slices.Clone(ids), "loner"),
	})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.group.GetVolumeGroupSnapshot(ctx(t), &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: "nope"})
	wantCode(t, err, codes.NotFound)

	for range 2 {
		_, err = c.group.DeleteVolumeGroupSnapshot(ctx(t), &csi.DeleteVolumeGroupSnapshotRequest{
			GroupSnapshotId: "groupsnapshot-1", SnapshotIds: ids,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	list, err = c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{})
	if err != nil || len(list.GetEntries()) != 1 || list.GetEntries()[0].GetSnapshot().GetSnapshotId() != "loner" {
		t.Fatalf("after delete: %v %v", list, err)
	}
	_, err = c.group.GetVolumeGroupSnapshot(ctx(t), &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: "groupsnapshot-1"})
	wantCode(t, err, codes.NotFound)
}

// TestGroupMemberDeletedAlone checks that a member can go before its group,
// which then lists the rest and still deletes.
func TestGroupMemberDeletedAlone(t *testing.T) {
	c := serve(t, "")
	c.createVolume(t, "pvc-1", 1, nil)
	c.createVolume(t, "pvc-2", 1, nil)
	resp, err := c.group.CreateVolumeGroupSnapshot(ctx(t), &csi.CreateVolumeGroupSnapshotRequest{
		Name: "g", SourceVolumeIds: []string{"pvc-1", "pvc-2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range resp.GetGroupSnapshot().GetSnapshots() {
		ids = append(ids, s.GetSnapshotId())
	}
	if _, err := c.ctl.DeleteSnapshot(ctx(t), &csi.DeleteSnapshotRequest{SnapshotId: ids[0]}); err != nil {
		t.Fatal(err)
	}
	get, err := c.group.GetVolumeGroupSnapshot(ctx(t), &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: "g", SnapshotIds: ids})
	if err != nil || len(get.GetGroupSnapshot().GetSnapshots()) != 1 {
		t.Fatalf("get: %v %v", get, err)
	}
	if _, err := c.group.DeleteVolumeGroupSnapshot(ctx(t), &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: "g", SnapshotIds: ids}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{})
	if err != nil || len(list.GetEntries()) != 0 {
		t.Fatalf("left: %v %v", list, err)
	}
}

// TestGroupRequestErrors: the status codes of malformed and unknown requests.
func TestGroupRequestErrors(t *testing.T) {
	c := serve(t, "")
	c.createVolume(t, "pvc-1", 1, nil)
	for _, req := range []*csi.CreateVolumeGroupSnapshotRequest{
		{SourceVolumeIds: []string{"pvc-1"}}, // no name
		{Name: "g"},                          // no sources
		{Name: "g", SourceVolumeIds: []string{"pvc-1", ""}}, // an empty source
	} {
		_, err := c.group.CreateVolumeGroupSnapshot(ctx(t), req)
		wantCode(t, err, codes.InvalidArgument)
	}
	_, err := c.group.GetVolumeGroupSnapshot(ctx(t), &csi.GetVolumeGroupSnapshotRequest{})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.group.DeleteVolumeGroupSnapshot(ctx(t), &csi.DeleteVolumeGroupSnapshotRequest{})
	wantCode(t, err, codes.InvalidArgument)
	// deleting what never was is done already
	if _, err := c.group.DeleteVolumeGroupSnapshot(ctx(t), &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: "never"}); err != nil {
		t.Fatal(err)
	}
	// a failed create leaves no member behind
	_, err = c.group.CreateVolumeGroupSnapshot(ctx(t), &csi.CreateVolumeGroupSnapshotRequest{
		Name: "g", SourceVolumeIds: []string{"pvc-1", "pvc-missing"},
	})
	wantCode(t, err, codes.NotFound)
	list, err := c.ctl.ListSnapshots(ctx(t), &csi.ListSnapshotsRequest{})
	if err != nil || len(list.GetEntries()) != 0 {
		t.Fatalf("left: %v %v", list, err)
	}
}

// TestNoGroupSnapshots: a driver without group snapshots says so and
// serves no GroupController.
func TestNoGroupSnapshots(t *testing.T) {
	c := serveWith(t, Options{NoGroupSnapshots: true})
	caps, err := c.id.GetPluginCapabilities(ctx(t), &csi.GetPluginCapabilitiesRequest{})
	if err != nil || len(caps.GetCapabilities()) != 1 ||
		caps.GetCapabilities()[0].GetService().GetType() != csi.PluginCapability_Service_CONTROLLER_SERVICE {
		t.Fatalf("capabilities %v %v", caps, err)
	}
	_, err = c.group.GroupControllerGetCapabilities(ctx(t), &csi.GroupControllerGetCapabilitiesRequest{})
	wantCode(t, err, codes.Unimplemented)
	c.createVolume(t, "pvc-1", 1, nil)
	if _, err := c.ctl.CreateSnapshot(ctx(t), &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "pvc-1"}); err != nil {
		t.Fatal(err)
	}
}
