package hostdir

import (
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// checkCapability accepts filesystem access with any access mode: the node
// is the only one, and a directory can be shared by any number of Pods.
func checkCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return status.Error(codes.InvalidArgument, "volume capability missing")
	}
	if c.GetBlock() != nil {
		return status.Error(codes.InvalidArgument,
			"block access is not supported: hostdir volumes are directories (use volumeMode: Filesystem)")
	}
	if c.GetMount() == nil {
		return status.Error(codes.InvalidArgument, "access type missing: only mount (filesystem) access is supported")
	}
	if c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_UNKNOWN {
		return status.Error(codes.InvalidArgument, "access mode missing")
	}
	return nil
}

// checkCapabilities checks a request's list of capabilities.
func checkCapabilities(cs []*csi.VolumeCapability) error {
	if len(cs) == 0 {
		return status.Error(codes.InvalidArgument, "volume capabilities missing")
	}
	for _, c := range cs {
		if err := checkCapability(c); err != nil {
			return err
		}
	}
	return nil
}

// readOnlyMode reports whether an access mode only reads.
func readOnlyMode(c *csi.VolumeCapability) bool {
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}
