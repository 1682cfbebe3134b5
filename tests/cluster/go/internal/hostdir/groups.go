package hostdir

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// groupController is the CSI GroupController service.
type groupController struct {
	csi.UnimplementedGroupControllerServer
	d *Driver
}

func (g *groupController) GroupControllerGetCapabilities(context.Context, *csi.GroupControllerGetCapabilitiesRequest) (*csi.GroupControllerGetCapabilitiesResponse, error) {
	return &csi.GroupControllerGetCapabilitiesResponse{Capabilities: []*csi.GroupControllerServiceCapability{{
		Type: &csi.GroupControllerServiceCapability_Rpc{Rpc: &csi.GroupControllerServiceCapability_RPC{
			Type: csi.GroupControllerServiceCapability_RPC_CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT,
		}},
	}}}, nil
}

// CreateVolumeGroupSnapshot copies every source volume while holding the
// driver's lock, so no CSI call changes a volume between the copies, and
// while the processes using any of them are frozen (see freezeUsers), so
// the members hold one instant of all volumes: what a crash of their Pods
// at that instant would leave.
func (g *groupController) CreateVolumeGroupSnapshot(_ context.Context, req *csi.CreateVolumeGroupSnapshotRequest) (*csi.CreateVolumeGroupSnapshotResponse, error) {
	name, sources := req.GetName(), req.GetSourceVolumeIds()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	if len(sources) == 0 {
		return nil, status.Error(codes.InvalidArgument, "source volume IDs missing")
	}
	sorted := slices.Sorted(slices.Values(sources))
	if slices.Contains(sorted, "") || len(slices.Compact(slices.Clone(sorted))) != len(sorted) {
		return nil, status.Error(codes.InvalidArgument, "source volume IDs are empty or repeated")
	}

	d := g.d
	d.mu.Lock()
	defer d.mu.Unlock()
	id := idFor(name)
	var have group
	if found, err := d.store.load(kindGroup, id, &have); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if found {
		if have.Name != name || !slices.Equal(have.SourceVolumes, sorted) || !maps.Equal(have.Parameters, req.GetParameters()) {
			return nil, status.Errorf(codes.AlreadyExists,
				"group snapshot %q exists with other source volumes or parameters", name)
		}
		resp, err := d.groupView(have)
		return &csi.CreateVolumeGroupSnapshotResponse{GroupSnapshot: resp}, err
	}
	for _, v := range sorted {
		if found, err := d.store.load(kindVolume, v, &volume{}); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		} else if !found {
			return nil, status.Errorf(codes.NotFound, "source volume %q not found", v)
		}
	}

	grp := group{ID: id, Name: name, SourceVolumes: sorted, Parameters: req.GetParameters()}
	cleanup := func() {
		for _, s := range grp.Snapshots {
			_ = d.store.remove(kindSnapshot, s)
		}
	}
	// All members are copied while every process using any of them is
	// frozen: they are of one instant, the group's creation time.
	err := d.whileFrozen(sorted, func(at time.Time) error {
		for _, v := range sorted {
			member := idFor(id + "-" + v)
			if _, err := d.snapshot(member, member, v, id, at); err != nil {
				return err
			}
			grp.Snapshots = append(grp.Snapshots, member)
		}
		grp.Created = at
		return nil
	})
	if err != nil {
		cleanup()
		return nil, err
	}
	if err := d.store.save(kindGroup, id, grp); err != nil {
		cleanup()
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp, err := d.groupView(grp)
	return &csi.CreateVolumeGroupSnapshotResponse{GroupSnapshot: resp}, err
}

// groupView is a group as CSI reports it, with the members that still
// exist; d.mu must be held.
func (d *Driver) groupView(g group) (*csi.VolumeGroupSnapshot, error) {
	out := &csi.VolumeGroupSnapshot{
		GroupSnapshotId: g.ID,
		CreationTime:    timestamppb.New(g.Created),
		ReadyToUse:      true,
	}
	for _, id := range g.Snapshots {
		var s snapshot
		found, err := d.store.load(kindSnapshot, id, &s)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if found {
			out.Snapshots = append(out.Snapshots, s.csi())
		}
	}
	return out, nil
}

// checkMembers fails with INVALID_ARGUMENT when the CO's list of snapshot
// IDs does not match the group: a listed snapshot of another group, or a
// living member left out. Listed snapshots that are gone are fine, and an
// empty list is not checked. d.mu must be held.
func (d *Driver) checkMembers(groupID string, members, listed []string) error {
	if len(listed) == 0 {
		return nil
	}
	for _, id := range listed {
		var s snapshot
		found, err := d.store.load(kindSnapshot, id, &s)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if found && s.Group != groupID {
			return status.Errorf(codes.InvalidArgument, "snapshot %q is not in group snapshot %q", id, groupID)
		}
	}
	for _, id := range members {
		found, err := d.store.load(kindSnapshot, id, &snapshot{})
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if found && !slices.Contains(listed, id) {
			return status.Errorf(codes.InvalidArgument, "snapshot IDs leave out member %q of group snapshot %q", id, groupID)
		}
	}
	return nil
}

// DeleteVolumeGroupSnapshot removes a group and its snapshots; a missing
// group is fine.
func (g *groupController) DeleteVolumeGroupSnapshot(_ context.Context, req *csi.DeleteVolumeGroupSnapshotRequest) (*csi.DeleteVolumeGroupSnapshotResponse, error) {
	id := req.GetGroupSnapshotId()
	d := g.d
	d.mu.Lock()
	defer d.mu.Unlock()
	grp, found, err := d.loadGroup(id)
	if err != nil {
		return nil, err
	}
	if err := d.checkMembers(id, grp.Snapshots, req.GetSnapshotIds()); err != nil {
		return nil, err
	}
	// Without the group, the listed snapshots are the only trace left of
	// an interrupted delete.
	members := grp.Snapshots
	if !found {
		members = req.GetSnapshotIds()
	}
	for _, s := range members {
		if err := d.store.remove(kindSnapshot, s); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	if err := d.store.remove(kindGroup, id); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.DeleteVolumeGroupSnapshotResponse{}, nil
}

// GetVolumeGroupSnapshot reports a group and its members.
func (g *groupController) GetVolumeGroupSnapshot(_ context.Context, req *csi.GetVolumeGroupSnapshotRequest) (*csi.GetVolumeGroupSnapshotResponse, error) {
	id := req.GetGroupSnapshotId()
	d := g.d
	d.mu.Lock()
	defer d.mu.Unlock()
	grp, found, err := d.loadGroup(id)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "group snapshot %q not found", id)
	}
	if err := d.checkMembers(id, grp.Snapshots, req.GetSnapshotIds()); err != nil {
		return nil, err
	}
	resp, err := d.groupView(grp)
	return &csi.GetVolumeGroupSnapshotResponse{GroupSnapshot: resp}, err
}

// loadGroup reads group id's metadata, with the gRPC status of a missing
// ID or an unreadable store; d.mu must be held.
func (d *Driver) loadGroup(id string) (group, bool, error) {
	var grp group
	if id == "" {
		return grp, false, status.Error(codes.InvalidArgument, "group snapshot ID missing")
	}
	found, err := d.store.load(kindGroup, id, &grp)
	if err != nil {
		return grp, false, status.Error(codes.Internal, err.Error())
	}
	return grp, found, nil
}
