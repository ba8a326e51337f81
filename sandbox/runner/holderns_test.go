package runner

import (
	"os"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The holder's namespaces are taken only as nsfs handles of the named
// type, and a spec path naming the holder is joined through them or not
// at all.
func TestHolderNamespaces(t *testing.T) {
	pidns, err := os.Open("/proc/self/ns/pid")
	if err != nil {
		t.Skip(err)
	}
	defer pidns.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	pfd, nfd := int(pidns.Fd()), int(null.Fd())

	for _, bad := range []string{"", "x", "0 pid", "4242 pid net", "4242 user"} {
		if _, err := parseHolderNamespaces(bad, pfd, nfd); err == nil {
			t.Errorf("%q with a non-namespace user fd accepted", bad)
		}
	}
	if _, err := parseHolderNamespaces("4242 user", nfd, pfd); err == nil || !strings.Contains(err.Error(), "type") {
		t.Errorf("a PID namespace passed as the user namespace: %v", err)
	}
	h, err := parseHolderNamespaces("4242 pid", pfd, nfd)
	if err != nil {
		t.Fatal(err)
	}
	spec := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
		{Type: specs.PIDNamespace, Path: "/proc/4242/ns/pid"},
		{Type: specs.NetworkNamespace, Path: "/proc/77/ns/net"},
		{Type: specs.MountNamespace},
	}}}
	if err := h.rewrite(spec); err != nil {
		t.Fatal(err)
	}
	want := "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(pfd)
	if got := spec.Linux.Namespaces[0].Path; got != want {
		t.Errorf("holder PID namespace path = %q, want %q", got, want)
	}
	if got := spec.Linux.Namespaces[1].Path; got != "/proc/77/ns/net" {
		t.Errorf("other path rewritten to %q", got)
	}
	// A TARGET PID namespace (another container's init) stays a path.
	target := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace, Path: "/proc/99/ns/pid"}}}}
	if err := h.rewrite(target); err != nil || target.Linux.Namespaces[0].Path != "/proc/99/ns/pid" {
		t.Errorf("TARGET path: %v %q", err, target.Linux.Namespaces[0].Path)
	}
	// The holder's user namespace, which the keeper did not pass: refused.
	userSpec := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.UserNamespace, Path: "/proc/4242/ns/user"}}}}
	if err := h.rewrite(userSpec); err == nil {
		t.Errorf("a holder path without a handle was kept: %q", userSpec.Linux.Namespaces[0].Path)
	}
}
