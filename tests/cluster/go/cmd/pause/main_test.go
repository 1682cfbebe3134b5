package main

import (
	"bufio"
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

// TestExitsOnSignal runs the command in a child process and stops it as
// the kubelet does, once the child says its handlers are in place (the Go
// runtime catches every signal from the start, so /proc cannot tell).
func TestExitsOnSignal(t *testing.T) {
	if os.Getenv("PAUSE_TEST_CHILD") == "1" {
		run(func() { os.Stdout.WriteString("ready\n") })
		return
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExitsOnSignal$")
		cmd.Env = append(os.Environ(), "PAUSE_TEST_CHILD=1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			t.Fatalf("child did not get ready: %q, %v", line, err)
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("after %v: %v", sig, err)
		}
	}
}
