package hostdir

import (
	"context"
	"sort"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// CreateSnapshot copies a volume's directory while the processes using it
// are frozen (see freezeUsers). The snapshot's size is the volume's
// capacity, the smallest a volume restored from it may ask for.
func (c *controller) CreateSnapshot(_ context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	if req.GetSourceVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "source volume ID missing")
	}
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	id := idFor(req.GetName())
	var have snapshot
	if found, err := d.store.load(kindSnapshot, id, &have); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if found {
		if have.Name != req.GetName() || have.SourceVolume != req.GetSourceVolumeId() {
			return nil, status.Errorf(codes.AlreadyExists,
				"snapshot %q exists with source volume %q", req.GetName(), have.SourceVolume)
		}
		return &csi.CreateSnapshotResponse{Snapshot: have.csi()}, nil
	}
	var snap snapshot
	err := d.whileFrozen([]string{req.GetSourceVolumeId()}, func(at time.Time) (err error) {
		snap, err = d.snapshot(id, req.GetName(), req.GetSourceVolumeId(), "", at)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &csi.CreateSnapshotResponse{Snapshot: snap.csi()}, nil
}

// snapshot copies the volume volID into a new snapshot taken at the
// instant at; d.mu must be held, and the volume's users frozen.
func (d *Driver) snapshot(id, name, volID, groupID string, at time.Time) (snapshot, error) {
	var vol volume
	if found, err := d.store.load(kindVolume, volID, &vol); err != nil {
		return snapshot{}, status.Error(codes.Internal, err.Error())
	} else if !found {
		return snapshot{}, status.Errorf(codes.NotFound, "source volume %q not found", volID)
	}
	if err := d.store.fill(d.store.dataDir(kindSnapshot, id), d.store.dataDir(kindVolume, vol.ID)); err != nil {
		return snapshot{}, status.Error(codes.Internal, err.Error())
	}
	snap := snapshot{
		ID: id, Name: name, SourceVolume: vol.ID, Group: groupID,
		SizeBytes: vol.CapacityBytes, Created: at,
	}
	if err := d.store.save(kindSnapshot, id, snap); err != nil {
		return snapshot{}, status.Error(codes.Internal, err.Error())
	}
	return snap, nil
}

// csi is the snapshot as CSI reports it: always ready, being a whole copy.
func (s snapshot) csi() *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:      s.ID,
		SourceVolumeId:  s.SourceVolume,
		SizeBytes:       s.SizeBytes,
		CreationTime:    timestamppb.New(s.Created),
		ReadyToUse:      true,
		GroupSnapshotId: s.Group,
	}
}

// DeleteSnapshot removes a snapshot, a group member too (the group then
// lists one snapshot fewer); a missing snapshot is fine.
func (c *controller) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot ID missing")
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if err := c.d.store.remove(kindSnapshot, req.GetSnapshotId()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// GetSnapshot reports one snapshot (not advertised: GET_SNAPSHOT is alpha).
func (c *controller) GetSnapshot(_ context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot ID missing")
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	var snap snapshot
	if found, err := c.d.store.load(kindSnapshot, req.GetSnapshotId(), &snap); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if !found {
		return nil, status.Errorf(codes.NotFound, "snapshot %q not found", req.GetSnapshotId())
	}
	return &csi.GetSnapshotResponse{Snapshot: snap.csi()}, nil
}

// ListSnapshots lists snapshots by ID, optionally only one ID or those of
// one source volume. The paging token is the index of the next entry.
func (c *controller) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, status.Error(codes.InvalidArgument, "max_entries is negative")
	}
	c.d.mu.Lock()
	snaps, err := c.d.snapshots(req.GetSnapshotId(), req.GetSourceVolumeId())
	c.d.mu.Unlock()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	start := 0
	if t := req.GetStartingToken(); t != "" {
		start, err = strconv.Atoi(t)
		if err != nil || start < 0 || start > len(snaps) {
			return nil, status.Errorf(codes.Aborted, "invalid starting token %q", t)
		}
	}
	end := len(snaps)
	if n := int(req.GetMaxEntries()); n > 0 && start+n < end {
		end = start + n
	}
	resp := &csi.ListSnapshotsResponse{}
	for _, s := range snaps[start:end] {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: s.csi()})
	}
	if end < len(snaps) {
		resp.NextToken = strconv.Itoa(end)
	}
	return resp, nil
}

// snapshots loads the snapshots matching the filters (empty: any), sorted
// by ID; d.mu must be held.
func (d *Driver) snapshots(id, volID string) ([]snapshot, error) {
	ids := []string{id}
	if id == "" {
		var err error
		if ids, err = d.store.ids(kindSnapshot); err != nil {
			return nil, err
		}
	}
	var out []snapshot
	for _, id := range ids {
		var s snapshot
		found, err := d.store.load(kindSnapshot, id, &s)
		if err != nil {
			return nil, err
		}
		if found && (volID == "" || s.SourceVolume == volID) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
