package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// socketPath turns an endpoint ("unix:///path", "unix:/path" or "/path")
// into a socket path.
func socketPath(endpoint string) (string, error) {
	p := strings.TrimPrefix(strings.TrimPrefix(endpoint, "unix://"), "unix:")
	if p == "" {
		return "", errors.New("empty endpoint")
	}
	if strings.Contains(p, "://") {
		return "", fmt.Errorf("endpoint %q: only unix sockets are served", endpoint)
	}
	return filepath.Abs(p)
}

// listen serves a unix socket at path, replacing a stale socket left by an
// earlier run (but never another kind of file).
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is no socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	return net.Listen("unix", path)
}
