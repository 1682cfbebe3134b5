// Command csi-hostdir is the test cluster's CSI driver: volumes are
// directories under --state-dir, snapshots and clones are copies, Pods get
// bind mounts. With --registration-dir it also registers itself with the
// kubelet, in place of node-driver-registrar.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"wasmover.test/cluster/internal/calllog"
	"wasmover.test/cluster/internal/hostdir"
	"wasmover.test/cluster/internal/pluginreg"
)

func main() {
	endpoint := flag.String("endpoint", "unix:///run/csi-hostdir/csi.sock", "CSI socket (unix://PATH or PATH)")
	regDir := flag.String("registration-dir", "", "the kubelet's plugins_registry directory; empty: do not register")
	stateDir := flag.String("state-dir", "/var/lib/csi-hostdir", "directory of volumes, snapshots and their metadata")
	nodeID := flag.String("node-id", "", "node ID for NodeGetInfo (default: the host name)")
	name := flag.String("driver-name", hostdir.DefaultName, "CSI driver name")
	verbosity := flag.Int("v", 0, "log verbosity: 0 each call's method and status, 1 also requests, 2 also responses")
	flag.Parse()

	logger := log.New(os.Stderr, "csi-hostdir: ", log.LstdFlags|log.Lmicroseconds)
	if err := run(logger, *endpoint, *regDir, *stateDir, *nodeID, *name, *verbosity); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}

func run(logger *log.Logger, endpoint, regDir, stateDir, nodeID, name string, verbosity int) error {
	if nodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		nodeID = h
	}
	driver, err := hostdir.New(hostdir.Options{Name: name, NodeID: nodeID, StateDir: stateDir})
	if err != nil {
		return err
	}
	sock, err := socketPath(endpoint)
	if err != nil {
		return err
	}

	opts := grpc.UnaryInterceptor(calllog.Interceptor(logger, verbosity))
	csiSrv := grpc.NewServer(opts)
	driver.Register(csiSrv)
	csiLis, err := listen(sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	served := make(chan error, 2)
	go func() { served <- csiSrv.Serve(csiLis) }()
	defer stop(csiSrv)
	logger.Printf("%s %s serving CSI on %s (node %s, state %s)", name, hostdir.Version, sock, nodeID, stateDir)

	// The registration socket comes second: the kubelet calls the CSI
	// socket as soon as it sees this one.
	var failed <-chan error
	if regDir != "" {
		reg := pluginreg.New(name, sock, logger)
		regSrv := grpc.NewServer(opts)
		reg.Register(regSrv)
		regSock := filepath.Join(regDir, pluginreg.SocketName(name))
		regLis, err := listen(regSock)
		if err != nil {
			return err
		}
		defer os.Remove(regSock)
		go func() { served <- regSrv.Serve(regLis) }()
		defer stop(regSrv)
		failed = reg.Failed()
		logger.Printf("registration socket %s", regSock)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sigs:
		logger.Printf("%v: stopping", s)
		return nil
	case err := <-failed:
		return err
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	}
}

// stop lets calls under way finish, for a few seconds at most.
func stop(srv *grpc.Server) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
}
