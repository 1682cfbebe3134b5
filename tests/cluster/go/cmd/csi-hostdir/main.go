// Command csi-hostdir is the test cluster's CSI driver: volumes are
// directories under --state-dir, snapshots and clones are copies, Pods get
// bind mounts. With --registration-dir it also registers itself with the
// kubelet, in place of node-driver-registrar.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"wasmover.test/cluster/internal/hostdir"
)

func main() {
	var c config
	flag.StringVar(&c.endpoint, "endpoint", "unix:///run/csi-hostdir/csi.sock", "CSI socket (unix://PATH or PATH)")
	flag.StringVar(&c.regDir, "registration-dir", "", "the kubelet's plugins_registry directory; empty: do not register")
	flag.StringVar(&c.stateDir, "state-dir", "/var/lib/csi-hostdir", "directory of volumes, snapshots and their metadata")
	flag.StringVar(&c.nodeID, "node-id", "", "node ID for NodeGetInfo (default: the host name)")
	flag.StringVar(&c.name, "name", hostdir.DefaultName, "CSI driver name")
	flag.BoolVar(&c.noGroups, "no-group-snapshots", false, "leave out the GroupController service (a driver without group snapshots)")
	flag.IntVar(&c.verbosity, "v", 0, "log verbosity: 0 each call's method and status, 1 also requests, 2 also responses")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	logger := log.New(os.Stderr, "csi-hostdir: ", log.LstdFlags|log.Lmicroseconds)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := run(c, logger, sigs); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}
