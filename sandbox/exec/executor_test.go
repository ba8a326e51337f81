package exec

import (
	"errors"
	"syscall"
	"testing"
)

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		ws   syscall.WaitStatus
		want int32
	}{
		{syscall.WaitStatus(0), 0},
		{syscall.WaitStatus(3 << 8), 3},
		{syscall.WaitStatus(syscall.SIGKILL), 137},
		{syscall.WaitStatus(syscall.SIGTERM), 143},
	} {
		if got := exitCode(tc.ws); got != tc.want {
			t.Errorf("exitCode(%#x) = %d, want %d", uint32(tc.ws), got, tc.want)
		}
	}
}

// TestStartFailureCode: the runtimes' words for a command that cannot be
// executed map to a shell's codes; crun's differ from libcontainer's and
// runc's (seen in the cgroup v2 guest: ExecSync of a missing command was
// an Unknown error on crun instead of exit 127).
func TestStartFailureCode(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want int32
	}{
		{`exec: "nope": executable file not found in $PATH`, 127},                                               // libcontainer, runc
		{`exec failed: unable to start container process: exec: "/x": stat /x: no such file or directory`, 127}, // runc
		{"executable file `/no/such/command` not found in $PATH: No such file or directory", 127},               // crun 1.8
		{`exec: "/etc/passwd": permission denied`, 126},
		{"container is not running", 0},
	} {
		if got := startFailureCode(errors.New(tc.msg)); got != tc.want {
			t.Errorf("startFailureCode(%q) = %d, want %d", tc.msg, got, tc.want)
		}
	}
}
