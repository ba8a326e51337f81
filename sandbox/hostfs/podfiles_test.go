package hostfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodFilesBounded: the pod's directory is a tmpfs that holds the
// largest resolv.conf the validation lets through, refuses a container's
// write past its room, and goes with UnmountPodFiles.
func TestPodFilesBounded(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	opts := make([]string, 1024) // cri/validate's most: 1,024 options of 256 bytes
	for i := range opts {
		opts[i] = strings.Repeat("o", 256)
	}
	cfg := &runtimeapi.PodSandboxConfig{Hostname: "bounded",
		DnsConfig: &runtimeapi.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"svc"}, Options: opts}}
	dir := filepath.Join(t.TempDir(), "pod")
	undo, err := MakePodFiles(dir, cfg)
	if err != nil {
		t.Fatalf("MakePodFiles with the largest valid DNS config: %v", err)
	}
	t.Cleanup(undo)
	resolv, err := os.ReadFile(filepath.Join(dir, "resolv.conf"))
	if err != nil || !bytes.Contains(resolv, []byte(opts[0])) || len(resolv) < 256<<10 {
		t.Fatalf("resolv.conf: %d bytes, %v", len(resolv), err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "hostname"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	written := 0
	chunk := make([]byte, 64<<10)
	for written < 64<<20 {
		n, err := f.Write(chunk)
		written += n
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("write past the room: %v, want ENOSPC", err)
			}
			break
		}
	}
	if written > podFilesRoom+8<<10 {
		t.Errorf("%d bytes written into the pod's hostname; the room is %d", written, podFilesRoom)
	}
	UnmountPodFiles(dir)
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			t.Errorf("still mounted after UnmountPodFiles: %s", l)
		}
	}
}
