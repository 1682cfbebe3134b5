package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReap checks that reap collects an exited child, as pause must for
// the processes reparented to it as PID 1.
func TestReap(t *testing.T) {
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 3"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	stat := "/proc/" + strconv.Itoa(pid) + "/stat"
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), ") Z ") {
			break // a zombie, waiting for its reaper
		}
		if time.Now().After(deadline) {
			t.Fatalf("child never exited: %s", b)
		}
	}
	reap()
	if _, err := os.Stat(stat); !os.IsNotExist(err) {
		t.Fatalf("child not reaped: %v", err)
	}
}

// TestExitsOnSignal runs the built command and stops it as the kubelet does.
func TestExitsOnSignal(t *testing.T) {
	if os.Getenv("PAUSE_TEST_CHILD") == "1" {
		main()
		return
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExitsOnSignal$")
		cmd.Env = append(os.Environ(), "PAUSE_TEST_CHILD=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitCaught(t, cmd.Process.Pid, sig)
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("after %v: %v", sig, err)
		}
	}
}

// waitCaught waits until process pid has a handler for sig, which the Go
// runtime installs when main calls signal.Notify.
func waitCaught(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if hex, ok := strings.CutPrefix(line, "SigCgt:"); ok {
				mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
				if err == nil && mask&(1<<(sig-1)) != 0 {
					return
				}
			}
		}
	}
	t.Fatalf("process %d never caught %v", pid, sig)
}
