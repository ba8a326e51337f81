package keeper

import (
	"slices"
	"testing"

	"github.com/peapod-cri/peapod/sandbox/pause"
	"golang.org/x/sys/unix"
)

// TestNamespacesArgs: the pause's command line and clone flags follow the
// namespace setup; with a user namespace the keeper makes every namespace
// itself, so no clone flag is left.
func TestNamespacesArgs(t *testing.T) {
	args, flags := Namespaces{Net: true, IPC: true, Hostname: "h", PID: true, Sysctls: map[string]string{"a": "1"}}.args("/s")
	want := []string{"peapod", pause.Command, "-h", "h", "-P", "-s", "a=1", "-S", "/s"}
	if !slices.Equal(args, want) || flags != unix.CLONE_NEWNET|unix.CLONE_NEWIPC|unix.CLONE_NEWUTS {
		t.Errorf("pod namespaces: %q %#x, want %q", args, flags, want)
	}
	args, flags = Namespaces{}.args("/s")
	if !slices.Equal(args, []string{"peapod", pause.Command, "-S", "/s"}) || flags != 0 {
		t.Errorf("host namespaces: %q %#x", args, flags)
	}
	args, flags = Namespaces{Net: true, UIDMap: "0 1000 65536", GIDMap: "0 1000 65536"}.args("/s")
	if !slices.Contains(args, "-U") || !slices.Contains(args, "-G") || flags != 0 {
		t.Errorf("user namespace: %q %#x, want -U/-G and no clone flag", args, flags)
	}
}
