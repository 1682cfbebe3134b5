package hostdir

import (
	"context"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// controller is the CSI Controller service.
type controller struct {
	csi.UnimplementedControllerServer
	d *Driver
}

func (c *controller) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t},
		}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// CreateVolume makes a directory: empty, or a copy of a snapshot or of
// another volume. The reported capacity is the requested one; nothing
// enforces it.
func (c *controller) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	capacity, err := capacityFor(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	want := volume{ID: idFor(req.GetName()), Name: req.GetName(), CapacityBytes: capacity}
	src := req.GetVolumeContentSource()
	switch {
	case src == nil:
	case src.GetSnapshot() != nil:
		want.SourceSnapshot = src.GetSnapshot().GetSnapshotId()
	case src.GetVolume() != nil:
		want.SourceVolume = src.GetVolume().GetVolumeId()
	default:
		return nil, status.Error(codes.InvalidArgument, "unknown volume content source")
	}

	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	var have volume
	found, err := d.store.load(kindVolume, want.ID, &have)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if found {
		if have.Name != want.Name || have.SourceSnapshot != want.SourceSnapshot ||
			have.SourceVolume != want.SourceVolume || !fits(have.CapacityBytes, req.GetCapacityRange()) {
			return nil, status.Errorf(codes.AlreadyExists,
				"volume %q exists with another size or source", want.Name)
		}
		return &csi.CreateVolumeResponse{Volume: have.csi()}, nil
	}

	from := ""
	switch {
	case want.SourceSnapshot != "":
		var snap snapshot
		if ok, err := d.store.load(kindSnapshot, want.SourceSnapshot, &snap); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		} else if !ok {
			return nil, status.Errorf(codes.NotFound, "source snapshot %q not found", want.SourceSnapshot)
		}
		if capacity != 0 && capacity < snap.SizeBytes {
			return nil, status.Errorf(codes.OutOfRange,
				"requested %d bytes, less than the snapshot's %d", capacity, snap.SizeBytes)
		}
		if want.CapacityBytes == 0 {
			want.CapacityBytes = snap.SizeBytes
		}
		from = d.store.dataDir(kindSnapshot, snap.ID)
	case want.SourceVolume != "":
		var vol volume
		if ok, err := d.store.load(kindVolume, want.SourceVolume, &vol); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		} else if !ok {
			return nil, status.Errorf(codes.NotFound, "source volume %q not found", want.SourceVolume)
		}
		if want.CapacityBytes == 0 {
			want.CapacityBytes = vol.CapacityBytes
		}
		from = d.store.dataDir(kindVolume, vol.ID)
	}
	// A clone, like a snapshot, is of one instant of its source.
	var users []string
	if want.SourceVolume != "" {
		users = []string{want.SourceVolume}
	}
	err = d.whileFrozen(users, func(time.Time) error {
		if err := d.store.fill(d.store.dataDir(kindVolume, want.ID), from); err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	want.Created = time.Now().UTC()
	if err := d.store.save(kindVolume, want.ID, want); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.CreateVolumeResponse{Volume: want.csi()}, nil
}

// capacityFor is the size to report for a range: required, else the limit.
func capacityFor(r *csi.CapacityRange) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 || (lim > 0 && req > lim) {
		return 0, status.Errorf(codes.OutOfRange, "bad capacity range: required %d, limit %d", req, lim)
	}
	if req > 0 {
		return req, nil
	}
	return lim, nil
}

// fits reports whether an existing size satisfies a range.
func fits(size int64, r *csi.CapacityRange) bool {
	return size >= r.GetRequiredBytes() && (r.GetLimitBytes() == 0 || size <= r.GetLimitBytes())
}

// csi is the volume as CSI reports it.
func (v volume) csi() *csi.Volume {
	out := &csi.Volume{VolumeId: v.ID, CapacityBytes: v.CapacityBytes}
	switch {
	case v.SourceSnapshot != "":
		out.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: v.SourceSnapshot},
		}}
	case v.SourceVolume != "":
		out.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: v.SourceVolume},
		}}
	}
	return out
}

// DeleteVolume removes a volume's directory; a missing volume is fine.
func (c *controller) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID missing")
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if err := c.d.store.remove(kindVolume, req.GetVolumeId()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms filesystem access to an existing volume.
func (c *controller) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID missing")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities missing")
	}
	c.d.mu.Lock()
	found, err := c.d.store.load(kindVolume, req.GetVolumeId(), &volume{})
	c.d.mu.Unlock()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", req.GetVolumeId())
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}
