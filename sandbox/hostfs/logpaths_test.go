package hostfs

import (
	"errors"
	"github.com/peapod-cri/peapod/oci"
	"os"
	"path/filepath"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestContainerLogLocation: the keeper gets the log path as resolved at
// create, relative to the pod's log directory, and never one outside it.
func TestContainerLogLocation(t *testing.T) {
	pod := &runtimeapi.PodSandboxConfig{LogDirectory: "/var/log/pods/p/"}
	for _, tc := range []struct {
		logPath, dir, rel string
		bad               bool
	}{
		{"/var/log/pods/p/c/0.log", "/var/log/pods/p", "c/0.log", false},
		{"/var/log/pods/p/tmp/canary", "/var/log/pods/p", "tmp/canary", false},
		{"", "", "", false},
		{"/var/log/pods/other/0.log", "", "", true},
		{"/var/log/pods/p", "", "", true},
	} {
		dir, rel, err := ContainerLogLocation(pod, tc.logPath)
		if (err != nil) != tc.bad || dir != tc.dir || rel != tc.rel {
			t.Errorf("%q: %q %q %v", tc.logPath, dir, rel, err)
		}
	}
}

// TestContainerLogPath: the log path stays in the log directory whatever
// symlinks the directory holds.
func TestContainerLogPath(t *testing.T) {
	dir := t.TempDir()
	os.Symlink("/etc/shadow", filepath.Join(dir, "shadow.log"))
	os.Symlink("/etc", filepath.Join(dir, "etcdir"))
	os.Symlink("../../../../..", filepath.Join(dir, "up"))
	for rel, want := range map[string]string{
		"c/0.log":         dir + "/c/0.log",
		"shadow.log":      dir + "/etc/shadow",
		"etcdir/passwd":   dir + "/etc/passwd",
		"up/etc/shadow":   dir + "/etc/shadow",
		"./a//b/../x.log": "", // ".." refused
		"/etc/shadow":     "", // absolute refused
		"../x.log":        "",
	} {
		got, err := ContainerLogPath(dir, rel)
		if want == "" {
			if !errors.Is(err, oci.ErrInvalidArgument) {
				t.Errorf("%q: %q, %v; want InvalidArgument", rel, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", rel, got, err, want)
		}
	}
}
