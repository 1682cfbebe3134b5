// Package hostdir is a CSI driver whose volumes are directories on the
// node: snapshots and clones are copies, and Pods get bind mounts. It
// serves one single-node test cluster and keeps its state in a directory.
package hostdir

import (
	"errors"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultName is the driver's CSI name.
const DefaultName = "hostdir.csi.wasmover.dev"

// Version is the driver's vendor version.
const Version = "0.1.0"

// Options configure a Driver.
type Options struct {
	Name     string // CSI driver name; DefaultName when empty
	NodeID   string // node ID reported by NodeGetInfo
	StateDir string // where volumes, snapshots and their metadata live
	// NoGroupSnapshots leaves out the GroupController service: a driver
	// without group snapshots, for tests of what a CO does with one.
	NoGroupSnapshots bool
}

// Driver implements the CSI Identity, Controller, GroupController and Node
// services over a state directory.
type Driver struct {
	name     string
	nodeID   string
	store    *store
	noGroups bool

	// mu serializes every controller call, so that a group snapshot sees
	// no volume or snapshot change between its members.
	mu sync.Mutex
	// nodeMu serializes mounts and unmounts.
	nodeMu sync.Mutex
}

// New opens (or creates) the state directory and returns a Driver.
func New(o Options) (*Driver, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.NodeID == "" {
		return nil, errors.New("node ID is empty")
	}
	s, err := openStore(o.StateDir)
	if err != nil {
		return nil, err
	}
	return &Driver{name: o.Name, nodeID: o.NodeID, store: s, noGroups: o.NoGroupSnapshots}, nil
}

// Name is the driver's CSI name.
func (d *Driver) Name() string { return d.name }

// Register adds the driver's four CSI services to srv (three with
// NoGroupSnapshots).
func (d *Driver) Register(srv *grpc.Server) {
	csi.RegisterIdentityServer(srv, &identity{d: d})
	csi.RegisterControllerServer(srv, &controller{d: d})
	if !d.noGroups {
		csi.RegisterGroupControllerServer(srv, &groupController{d: d})
	}
	csi.RegisterNodeServer(srv, &node{d: d})
}

// whileFrozen runs fn with the processes that use the volumes volIDs
// frozen, passing it the instant they stopped; d.mu must be held. A
// failure to freeze is UNAVAILABLE (the CO retries), to thaw INTERNAL.
func (d *Driver) whileFrozen(volIDs []string, fn func(at time.Time) error) error {
	dirs := make([]string, 0, len(volIDs))
	for _, id := range volIDs {
		if found, err := d.store.load(kindVolume, id, &volume{}); err != nil {
			return status.Error(codes.Internal, err.Error())
		} else if found {
			dirs = append(dirs, d.store.dataDir(kindVolume, id))
		}
	}
	fz, err := freezeUsers(dirs)
	if err != nil {
		return status.Errorf(codes.Unavailable, "freezing the processes that use the volumes: %v", err)
	}
	err = fn(time.Now().UTC())
	if terr := fz.thaw(); terr != nil && err == nil {
		err = status.Errorf(codes.Internal, "thawing the processes that use the volumes: %v", terr)
	}
	return err
}
