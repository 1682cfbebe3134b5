package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"wasmover.test/cluster/internal/calllog"
	"wasmover.test/cluster/internal/hostdir"
	"wasmover.test/cluster/internal/pluginreg"
)

// config is what the flags set.
type config struct {
	endpoint, regDir, stateDir, nodeID, name string
	verbosity                                int
	noGroups                                 bool
}

// run serves the driver until a signal arrives on stop (nil error), the
// kubelet refuses the registration, or a server fails.
func run(c config, logger *log.Logger, stop <-chan os.Signal) error {
	if c.nodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		c.nodeID = h
	}
	driver, err := hostdir.New(hostdir.Options{
		Name: c.name, NodeID: c.nodeID, StateDir: c.stateDir, NoGroupSnapshots: c.noGroups,
	})
	if err != nil {
		return err
	}
	sock, err := socketPath(c.endpoint)
	if err != nil {
		return err
	}

	opts := grpc.UnaryInterceptor(calllog.Interceptor(logger, c.verbosity))
	csiSrv := grpc.NewServer(opts)
	driver.Register(csiSrv)
	csiLis, err := listen(sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	served := make(chan error, 2)
	go func() { served <- csiSrv.Serve(csiLis) }()
	defer graceful(csiSrv)
	logger.Printf("%s %s serving CSI on %s (node %s, state %s)", driver.Name(), hostdir.Version, sock, c.nodeID, c.stateDir)

	// The registration socket comes second: the kubelet calls the CSI
	// socket as soon as it sees this one.
	var refused <-chan error
	if c.regDir != "" {
		reg := pluginreg.New(driver.Name(), sock, logger)
		regSrv := grpc.NewServer(opts)
		reg.Register(regSrv)
		regSock := filepath.Join(c.regDir, pluginreg.SocketName(driver.Name()))
		regLis, err := listen(regSock)
		if err != nil {
			return err
		}
		defer os.Remove(regSock)
		go func() { served <- regSrv.Serve(regLis) }()
		defer graceful(regSrv)
		refused = reg.Failed()
		logger.Printf("registration socket %s", regSock)
	}

	select {
	case s := <-stop:
		logger.Printf("%v: stopping", s)
		return nil
	case err := <-refused:
		return err
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	}
}

// graceful lets calls under way finish, for a few seconds at most.
func graceful(srv *grpc.Server) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
}
