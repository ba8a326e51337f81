package nri

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox/store"
)

// emptyRuntime has no pods: what a node just started synchronizes.
type emptyRuntime struct{}

func (emptyRuntime) Pods() []store.Pod             { return nil }
func (emptyRuntime) Containers() []store.Container { return nil }
func (emptyRuntime) PluginUpdate(context.Context, string, *runtimeapi.LinuxContainerResources) error {
	return nil
}

// TestSocketNeverReachableWithUmaskMode: the library makes the socket
// with the process's umask and peapod tightened it to 0600 just after:
// in between, with a permissive umask, any local user could connect and
// act as a plugin (host mounts, hooks run as root). The socket must only
// ever appear at its path whole and 0600: inotify on its directory sees
// it arrive by a rename (IN_MOVED_TO) already 0600, never made there
// (IN_CREATE).
func TestSocketNeverReachableWithUmaskMode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the socket's directory and modes are root's")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // a searchable directory, as /run
	sock := filepath.Join(dir, "nri.sock")
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0)
	s, err := New(Options{Socket: sock, RuntimeName: "peapod-test", RuntimeVersion: "0"})
	if err == nil {
		err = s.Start(emptyRuntime{})
	}
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %v, %v; want a 0600 socket", fi, err)
	}
	buf := make([]byte, 4096)
	n, _ := unix.Read(in, buf)
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		name := string(buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)])
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		if name == "nri.sock" && ev.Mask&unix.IN_CREATE != 0 {
			t.Errorf("the socket was made at its path (IN_CREATE), with the umask's mode until the chmod")
		}
		off += unix.SizeofInotifyEvent + int(ev.Len)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".peapod-nri-*")); len(left) > 0 {
		t.Errorf("left beside the socket: %v", left)
	}
}
