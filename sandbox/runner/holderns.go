package runner

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The pod's PID and user namespaces are held by the keeper's holder
// process. The daemon names them in the spec as /proc/<holder>/ns/pid and
// /proc/<holder>/ns/user, but that PID may be a new process once the holder
// is gone. The keeper opened both namespaces while the holder was its
// unreaped child and hands them to every runner at fixed descriptors, with
// the holder's PID in the environment; the runner rewrites the holder's
// paths to its own descriptors, which libcontainer's init opens while the
// runner (its parent) lives. If the holder died, the PID namespace accepts
// no process and the start fails: a container never joins another process's
// namespace.
const (
	holderPIDNSFD  = 5 // keeper.h RUNNER_PIDNS_FD
	holderUserNSFD = 6 // keeper.h RUNNER_USERNS_FD
	holderEnv      = "PEAPOD_HOLDER_PID"
)

// nsGetNSType is NS_GET_NSTYPE, _IO(0xb7, 0x3): the CLONE_NEW* type of an
// nsfs descriptor.
const nsGetNSType = 0xb703

// holderNamespaces is what the keeper handed to the runner.
type holderNamespaces struct {
	pid   int // the holder's PID, 0: the pod has no holder
	fds   map[specs.LinuxNamespaceType]int
	paths map[specs.LinuxNamespaceType]string // the daemon's /proc/<holder>/ns/* names
}

// takeHolderNamespaces reads the holder's PID and the namespaces the keeper
// passed from the environment ("PID[ pid][ user]"; removed, so nothing the
// runner starts inherits it) and marks their descriptors close-on-exec. A
// descriptor is used only if it is an nsfs handle of the expected type.
func takeHolderNamespaces() (holderNamespaces, error) {
	v, ok := os.LookupEnv(holderEnv)
	os.Unsetenv(holderEnv)
	if !ok {
		return holderNamespaces{}, nil
	}
	return parseHolderNamespaces(v, holderPIDNSFD, holderUserNSFD)
}

// parseHolderNamespaces reads the keeper's "PID[ pid][ user]" with the
// namespaces at descriptors pidFD and userFD.
func parseHolderNamespaces(v string, pidFD, userFD int) (holderNamespaces, error) {
	h := holderNamespaces{fds: map[specs.LinuxNamespaceType]int{}, paths: map[specs.LinuxNamespaceType]string{}}
	f := strings.Fields(v)
	pid := 0
	if len(f) > 0 {
		pid, _ = strconv.Atoi(f[0])
	}
	if pid <= 0 {
		return h, fmt.Errorf("bad %s %q from the keeper", holderEnv, v)
	}
	h.pid = pid
	kinds := map[string]struct {
		typ    specs.LinuxNamespaceType
		fd     int
		nstype int
	}{
		"pid":  {specs.PIDNamespace, pidFD, unix.CLONE_NEWPID},
		"user": {specs.UserNamespace, userFD, unix.CLONE_NEWUSER},
	}
	for name, n := range kinds {
		h.paths[n.typ] = "/proc/" + strconv.Itoa(pid) + "/ns/" + name
	}
	for _, name := range f[1:] {
		n, ok := kinds[name]
		if !ok {
			return h, fmt.Errorf("bad %s %q from the keeper", holderEnv, v)
		}
		unix.CloseOnExec(n.fd)
		t, err := unix.IoctlRetInt(n.fd, nsGetNSType)
		if err != nil {
			return h, fmt.Errorf("holder %s namespace at fd %d: %w", name, n.fd, err)
		}
		if t != n.nstype {
			return h, fmt.Errorf("holder %s namespace at fd %d is of type %#x", name, n.fd, t)
		}
		h.fds[n.typ] = n.fd
	}
	return h, nil
}

// rewrite points the spec's namespaces that name the holder at the
// runner's descriptors. A holder path without a descriptor is refused
// rather than joined by its reusable PID. Other paths (another container's
// init for a TARGET PID namespace) are left alone, as is everything when
// the keeper names no holder (a pod without one, or a keeper started by a
// peapod from before; the daemon checks the holder's start time then).
func (h holderNamespaces) rewrite(spec *specs.Spec) error {
	if spec.Linux == nil || h.pid == 0 {
		return nil
	}
	self := strconv.Itoa(os.Getpid())
	for i, ns := range spec.Linux.Namespaces {
		if ns.Path == "" || ns.Path != h.paths[ns.Type] {
			continue
		}
		fd, ok := h.fds[ns.Type]
		if !ok {
			return fmt.Errorf("the spec joins %s namespace %s, which the pod's keeper does not hold", ns.Type, ns.Path)
		}
		spec.Linux.Namespaces[i].Path = "/proc/" + self + "/fd/" + strconv.Itoa(fd)
	}
	return nil
}
