package runner

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// SeccompCommand is the argv[1] that makes the binary load a container's
// seccomp filter with runc's own code (seccomp.InitSeccomp) into one of its
// threads and hold it there, so that the daemon can read the program the
// kernel got (PTRACE_SECCOMP_GET_FILTER) for its fast exec path
// (sandbox/exec/fastexec.go): the exec then gets exactly the filter that
// libcontainer would have given it.
const SeccompCommand = "seccomp-export"

// SeccompMain reads the libcontainer seccomp config (JSON) on stdin, loads
// it into the calling thread, writes "tid <tid>\n" on stdout from that
// thread and waits there until fd 3 reaches EOF. It returns the exit status.
func SeccompMain() int {
	logrus.SetOutput(io.Discard)
	var cfg configs.Seccomp
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		fmt.Printf("error decode seccomp config: %v\n", err)
		return 1
	}
	runtime.LockOSThread() // the filter is this thread's only: no TSYNC
	if _, err := seccomp.InitSeccomp(&cfg); err != nil {
		fmt.Printf("error %v\n", err)
		return 1
	}
	if _, err := fmt.Printf("tid %d\n", unix.Gettid()); err != nil {
		return 1
	}
	var b [1]byte
	for {
		if _, err := unix.Read(3, b[:]); err != unix.EINTR {
			return 0
		}
	}
}
