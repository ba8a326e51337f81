package hostfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// A TARGET container (kubectl debug --target) joins the PID namespace of
// another container's init. Joining "/proc/<pid>/ns/pid" when the container
// starts would join whatever process has that PID then: if the target has
// exited, possibly a process of the host or of another pod. So at create
// the namespace is taken by handle from the verified target and pinned by
// a bind mount of that handle into the bundle (as `ip netns` pins a
// network namespace); the spec names the pin. A pinned namespace whose init
// has exited cannot be entered (fork fails), so a dead target fails the
// start, never redirects it.

// targetPIDNSFile is the pin's name in the bundle.
const targetPIDNSFile = "target-pidns"

// PinTargetPIDNS pins the PID namespace of process pid into bundle and
// returns the pin's path. alive(pid) must tell whether pid is still the
// target's init (its start time checked): it is asked after the
// namespace is opened, through a pidfd taken before, so the handle is known
// to be the target's and not a reused PID's.
func PinTargetPIDNS(bundle string, pid int, alive func(int) bool) (string, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return "", fmt.Errorf("open the target process %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	if !alive(pid) {
		return "", fmt.Errorf("the target process %d exited: %w", pid, os.ErrNotExist)
	}
	ns, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open the target's PID namespace: %w", err)
	}
	defer unix.Close(ns)
	// The pidfd refers to the process verified above; if it has not exited
	// now, /proc/<pid> above was that process.
	if exited, err := pidfdExited(pidfd); err != nil || exited {
		return "", fmt.Errorf("the target process %d exited: %w", pid, os.ErrNotExist)
	}
	pin := filepath.Join(bundle, targetPIDNSFile)
	f, err := os.OpenFile(pin, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o400)
	if err != nil {
		return "", fmt.Errorf("create the PID namespace pin: %w", err)
	}
	f.Close()
	if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(ns), pin, "", unix.MS_BIND, ""); err != nil {
		os.Remove(pin)
		return "", fmt.Errorf("pin the target's PID namespace: %w", err)
	}
	return pin, nil
}

// pidfdExited tells whether the process of pidfd has exited (a pidfd
// polls readable then).
func pidfdExited(pidfd int) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n > 0, err
	}
}

// UnpinTargetPIDNS releases a pin PinTargetPIDNS made in bundle, if any:
// before the bundle is removed (a mount point cannot be).
func UnpinTargetPIDNS(bundle string) error {
	pin := filepath.Join(bundle, targetPIDNSFile)
	if err := unix.Unmount(pin, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("release the target PID namespace pin: %w", err)
	}
	return nil
}
