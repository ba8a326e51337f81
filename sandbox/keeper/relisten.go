package keeper

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrCannotRelisten: the keeper was started by an older peapod, which dies
// of SIGUSR1 instead of binding its socket again; its pod must be recreated.
var ErrCannotRelisten = errors.New("this keeper cannot bind its socket again (started by an older peapod)")

// SocketLive reports whether a unix socket stands at sock.
func SocketLive(sock string) bool {
	fi, err := os.Lstat(sock)
	return err == nil && fi.Mode()&fs.ModeSocket != 0
}

// Relisten asks the keeper pid to bind its socket at sock again (SIGUSR1:
// keeper.c relisten) after it was removed or replaced, and waits up to
// timeout for it. What stood at sock is removed first: it is in the
// daemon's private state directory.
func Relisten(pid int, sock string, timeout time.Duration) error {
	if !relistens(pid) {
		return ErrCannotRelisten
	}
	if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove what replaced the keeper's socket %s: %w", sock, err)
	}
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		return fmt.Errorf("ask keeper %d to bind its socket again: %w", pid, err)
	}
	for deadline := time.Now().Add(timeout); !SocketLive(sock); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("keeper %d did not bind %s again within %v", pid, sock, timeout)
		}
	}
	return nil
}

// relistens reports whether the keeper pid takes SIGUSR1 from its signalfd
// (blocked: keepers of this version) rather than dying of it (older ones).
func relistens(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(unix.SIGUSR1)-1)) != 0
		}
	}
	return false
}
