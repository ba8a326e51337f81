package testenv

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// RunSuite runs a conformance suite's command (critest, the ginkgo CLI;
// made with exec.CommandContext) in a process group of its own and
// returns its exit status. When the context ends, the group gets SIGINT
// first, so that the specs remove their pods, then SIGKILL after grace;
// whatever of the group is still alive when the command returns is
// killed, so no parallel worker outlives the run. An error is returned
// only when the command could not run or be waited for.
func RunSuite(cmd *exec.Cmd, grace time.Duration) (int, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = grace
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	default:
		return -1, fmt.Errorf("%s: %w", cmd.Path, err)
	}
}
