package exec

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strings"
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

// TestFailedStartPrivateProcfs: an exec process that could not mount its
// private procfs (fastexec.go, enter.c's open_private_proc) is killed and
// its exec sent through libcontainer; a refusal by the kernel or a policy
// sends every later exec with an AppArmor profile there too, with one
// warning, any other failure (ENOMEM) only that exec.
func TestFailedStartPrivateProcfs(t *testing.T) {
	for _, tc := range []struct {
		err    string
		sticky bool
	}{
		{"private procfs unavailable: fsopen proc: function not implemented", true},
		{"private procfs unavailable: fsmount: operation not permitted", true},
		{"private procfs: create: cannot allocate memory", false},
	} {
		var logs bytes.Buffer
		e := New(t.TempDir(), t.TempDir(), slog.New(slog.NewTextHandler(&logs, nil)))
		for i := 0; i < 2; i++ {
			// The exec process the helper reported: a child of ours,
			// which failedStart kills and reaps.
			p, err := os.StartProcess("/bin/sleep", []string{"sleep", "60"}, &os.ProcAttr{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.failedStart(helperReport{pid: p.Pid, err: tc.err}, &helperRun{}, Streams{}, []string{"true"}, "c1")
			if !errors.Is(err, errFallBack) {
				t.Errorf("%s: %v, want a fall back to libcontainer", tc.err, err)
			}
			if err := syscall.Kill(p.Pid, 0); err == nil {
				t.Errorf("%s: the exec process %d is alive", tc.err, p.Pid)
			}
		}
		if got := e.noPrivateProcfs(); got != tc.sticky {
			t.Errorf("%s: AppArmor execs through libcontainer from now on: %v, want %v", tc.err, got, tc.sticky)
		}
		want := 0
		if tc.sticky {
			want = 1
		}
		if n := strings.Count(logs.String(), "execs with an AppArmor profile go through libcontainer"); n != want {
			t.Errorf("%s: %d warnings, want %d:\n%s", tc.err, n, want, logs.String())
		}
	}
}
