package main

import (
	"context"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// start runs the driver as main does, with a registration dir, and returns
// the registration socket, the stop channel and run's result.
func start(t *testing.T) (string, chan os.Signal, chan error) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hdrun") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := config{
		endpoint:  "unix://" + filepath.Join(dir, "csi", "csi.sock"),
		regDir:    filepath.Join(dir, "plugins_registry"),
		stateDir:  filepath.Join(dir, "state"),
		nodeID:    "node-7",
		name:      "hostdir.csi.wasmover.dev",
		verbosity: 2,
	}
	stop := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- run(c, log.New(io.Discard, "", 0), stop) }()
	reg := filepath.Join(c.regDir, "hostdir.csi.wasmover.dev-reg.sock")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(reg); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no registration socket")
		}
	}
	return reg, stop, done
}

func dial(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func wait(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
		return nil
	}
}

// TestRegistration plays the kubelet: GetInfo, the CSI socket it names,
// then a refusal, which ends the driver.
func TestRegistration(t *testing.T) {
	reg, _, done := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kubelet := registerapi.NewRegistrationClient(dial(t, reg))
	info, err := kubelet.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetType() != registerapi.CSIPlugin || info.GetName() != "hostdir.csi.wasmover.dev" ||
		!filepath.IsAbs(info.GetEndpoint()) || len(info.GetSupportedVersions()) != 1 || info.GetSupportedVersions()[0] != "1.0.0" {
		t.Fatalf("GetInfo: %v", info)
	}
	nodeInfo, err := csi.NewNodeClient(dial(t, info.GetEndpoint())).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || nodeInfo.GetNodeId() != "node-7" {
		t.Fatalf("NodeGetInfo over the registered endpoint: %v %v", nodeInfo, err)
	}
	if _, err := kubelet.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := kubelet.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{Error: "no such version"}); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err == nil || !strings.Contains(err.Error(), "no such version") {
		t.Fatalf("run after a refusal: %v", err)
	}
	if _, err := os.Stat(info.GetEndpoint()); !os.IsNotExist(err) {
		t.Fatalf("CSI socket left behind: %v", err)
	}
}

// TestStopRemovesSockets checks a signal's clean exit, and that a restart
// replaces the sockets the previous run left.
func TestStopRemovesSockets(t *testing.T) {
	reg, stop, done := start(t)
	stop <- syscall.SIGTERM
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(reg); !os.IsNotExist(err) {
		t.Fatalf("registration socket left behind: %v", err)
	}
}

func TestListenReplacesOnlySockets(t *testing.T) {
	dir, err := os.MkdirTemp("", "hdl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listen(file); err == nil {
		t.Fatal("listen replaced a regular file")
	}
	sock := filepath.Join(dir, "s.sock")
	// A socket file whose server is gone, as a killed driver leaves it.
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	l, err := listen(sock)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	l.Close()
}

func TestSocketPath(t *testing.T) {
	for in, want := range map[string]string{
		"unix:///run/x.sock": "/run/x.sock",
		"unix:/run/x.sock":   "/run/x.sock",
		"/run/x.sock":        "/run/x.sock",
	} {
		if got, err := socketPath(in); err != nil || got != want {
			t.Errorf("socketPath(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "tcp://127.0.0.1:1"} {
		if _, err := socketPath(bad); err == nil {
			t.Errorf("socketPath(%q) accepted", bad)
		}
	}
}
