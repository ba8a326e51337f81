package oci

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOpenRootfsFile: only regular files inside the root are read; FIFOs,
// devices and escaping symlinks neither block nor reach the host.
func TestOpenRootfsFile(t *testing.T) {
	root := t.TempDir()
	host := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(root, "etc/ok"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	must(os.WriteFile(filepath.Join(host, "secret"), []byte("host"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc/big"), make([]byte, 2048), 0o644))
	must(unix.Mkfifo(filepath.Join(root, "etc/fifo"), 0o644))
	must(os.Symlink("/dev/zero", filepath.Join(root, "etc/zero")))
	must(os.Symlink(filepath.Join(host, "secret"), filepath.Join(root, "etc/escape")))
	must(os.Symlink("../../../../../../../"+host+"/secret", filepath.Join(root, "etc/dotdot")))
	must(os.Symlink("ok", filepath.Join(root, "etc/link")))
	must(os.Mkdir(filepath.Join(root, "etc/dir"), 0o755))
	if os.Geteuid() == 0 {
		must(os.MkdirAll(filepath.Join(root, "dev"), 0o755))
		must(unix.Mknod(filepath.Join(root, "dev/zero"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))))
	}
	for _, tc := range []struct {
		name, want string
		err        error
	}{
		{"/etc/ok", "root:x:0:0::/root:/bin/sh\n", nil},
		{"/etc/link", "root:x:0:0::/root:/bin/sh\n", nil},
		{"/etc/missing", "", os.ErrNotExist},
		{"/etc/fifo", "", errNotRegular},
		{"/etc/dir", "", errNotRegular},
		{"/etc/escape", "", os.ErrNotExist}, // resolved inside root
		{"/etc/dotdot", "", os.ErrNotExist},
		{"/etc/big", "", nil},
	} {
		start := time.Now()
		f, err := openRootfsFile(root, tc.name, 1024)
		if time.Since(start) > time.Second {
			t.Errorf("%s: took %v", tc.name, time.Since(start))
		}
		if tc.name == "/etc/big" {
			if err == nil || !strings.Contains(err.Error(), "more than") {
				t.Errorf("%s: want a size error, got %v", tc.name, err)
			}
			continue
		}
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: want %v, got %v", tc.name, tc.err, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil || string(data) != tc.want {
			t.Errorf("%s: read %q, %v", tc.name, data, err)
		}
	}
	if os.Geteuid() == 0 {
		// The symlink to /dev/zero resolves to the root's own device node,
		// which is refused without being opened.
		if _, err := openRootfsFile(root, "/etc/zero", 1024); !errors.Is(err, errNotRegular) || !strings.Contains(err.Error(), "character device") {
			t.Errorf("/etc/zero: want a character device refused, got %v", err)
		}
	}
}

// TestBoundedFileGrows: a file that grows past the bound after the size
// check fails to read instead of being read to its end.
func TestBoundedFileGrows(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("abcd"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	b := &boundedFile{f: f, name: p, left: 2}
	defer b.Close()
	if _, err := io.ReadAll(b); err == nil || !strings.Contains(err.Error(), "size limit") {
		t.Errorf("want a size limit error, got %v", err)
	}
}
