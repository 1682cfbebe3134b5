package hostdir

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// emptyMode is the mode of a new, empty volume's root: writable by every
// uid, so that Pods running as any user can use it without fsGroup.
const emptyMode = 0o777

// fill makes dst a new directory: a copy of src, or empty when src is "".
// The copy is built under the store's tmp dir and renamed into place only
// when whole, so dst is never seen half-filled. Any earlier dst is replaced.
func (s *store) fill(dst, src string) error {
	tmp, err := os.MkdirTemp(s.tmpDir(), "fill-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	next := filepath.Join(tmp, "data")
	if src == "" {
		if err := os.Mkdir(next, emptyMode); err != nil {
			return err
		}
		// Mkdir's mode is masked by the umask; the volume must not be.
		if err := os.Chmod(next, emptyMode); err != nil {
			return err
		}
	} else if err := copyTree(src, next); err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return os.Rename(next, dst)
}

// copyTree copies the directory src to dst, which must not exist, keeping
// modes, owners (where allowed), timestamps, symlinks, hard links and
// extended attributes: `cp -a` does all of it.
func copyTree(src, dst string) error {
	cmd := exec.Command("cp", "-a", "--reflink=auto", "--no-target-directory", "--", src, dst)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", src, dst, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}
