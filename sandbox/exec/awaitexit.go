package exec

import (
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit parks the calling goroutine in Go's poller until the daemon's
// child pid has exited, without reaping it, so that the os.Process.Wait
// that follows returns at once. That Wait blocks an OS thread in waitid for
// as long as the process lives, and an exec's process lives as long as its
// user wants (an idle `kubectl exec -it` shell): the daemon's threads,
// which Go caps at 10,000 before it kills the process, would follow the
// number of live execs on the node. On any error it returns at once and
// the Wait blocks as before.
func awaitExit(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd") // non-blocking: in the poller
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Read(func(fd uintptr) bool {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		return err != nil || info.Signo != 0 // Signo is 0 while it runs
	})
}
