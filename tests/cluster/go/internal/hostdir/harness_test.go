package hostdir

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// clients talk to a driver served on a temporary unix socket.
type clients struct {
	id    csi.IdentityClient
	ctl   csi.ControllerClient
	group csi.GroupControllerClient
	node  csi.NodeClient
	state string
}

// serve starts a driver over stateDir (a new one when "") and returns
// clients connected through a real socket.
func serve(t *testing.T, stateDir string) *clients {
	t.Helper()
	return serveWith(t, Options{StateDir: stateDir})
}

// serveWith is serve with more options (node ID node-1 unless set).
func serveWith(t *testing.T, o Options) *clients {
	t.Helper()
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	if o.NodeID == "" {
		o.NodeID = "node-1"
	}
	stateDir := o.StateDir
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	// Socket paths are limited to 108 bytes: keep it short, not under t.TempDir.
	sockDir, err := os.MkdirTemp("", "hd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "csi.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	d.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &clients{
		id:    csi.NewIdentityClient(conn),
		ctl:   csi.NewControllerClient(conn),
		group: csi.NewGroupControllerClient(conn),
		node:  csi.NewNodeClient(conn),
		state: stateDir,
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// mountCap is filesystem access for one node writer.
func mountCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// createVolume makes a volume of size bytes, from src when not nil.
func (c *clients) createVolume(t *testing.T, name string, size int64, src *csi.VolumeContentSource) *csi.Volume {
	t.Helper()
	resp, err := c.ctl.CreateVolume(ctx(t), &csi.CreateVolumeRequest{
		Name:                name,
		CapacityRange:       &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities:  []*csi.VolumeCapability{mountCap()},
		VolumeContentSource: src,
	})
	if err != nil {
		t.Fatalf("CreateVolume %s: %v", name, err)
	}
	return resp.GetVolume()
}

// data is the directory of a volume's files.
func (c *clients) data(kind, id string) string {
	return filepath.Join(c.state, kind, id, "data")
}

// wantCode fails unless err carries code.
func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
}

func fromSnapshot(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id},
	}}
}

func fromVolume(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
		Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id},
	}}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
