package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/sandbox/ociruntime"
)

// LoadOCI makes the Target of running container id of the external OCI
// runtime rt: its execs go through `rt exec`, which confines the process
// as the container (namespaces, cgroup, capabilities, seccomp, AppArmor,
// no_new_privs, user), as the runtime itself set them up.
func (e *Executor) LoadOCI(id string, spec *specs.Spec, rt *ociruntime.Runtime) *Target {
	return &Target{spec: spec, oci: rt, ociID: id}
}

// ErrTTYUnsupported: a terminal exec into an external runtime's container.
var ErrTTYUnsupported = errors.New("an exec with a terminal is not supported for containers of an external OCI runtime")

// ociExec runs cmd in t's container through the runtime's `exec`. The
// daemon is the runtime's parent and the runtime the process's, which it
// reaps and whose exit status it returns (128+signal for a signal).
func (e *Executor) ociExec(ctx context.Context, t *Target, cmd []string, s Streams) (int32, error) {
	if s.TTY {
		return 0, ErrTTYUnsupported
	}
	if t.spec.Process == nil {
		return 0, fmt.Errorf("OCI spec has no process")
	}
	for _, a := range cmd {
		if strings.ContainsRune(a, 0) {
			return 0, fmt.Errorf("exec %q: an argument holds a NUL byte: %w", cmd, ErrBadCommand)
		}
	}
	dir, err := os.MkdirTemp("", "peapod-exec-")
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", t.ociID, err)
	}
	defer os.RemoveAll(dir)
	p := *t.spec.Process
	p.Args = cmd
	p.Env = slices.Clone(p.Env)
	p.Terminal = false
	p.ConsoleSize = nil
	data, err := json.Marshal(&p)
	if err != nil {
		return 0, fmt.Errorf("exec in %s: encode process: %w", t.ociID, err)
	}
	procFile, pidFile, logFile := filepath.Join(dir, "process.json"), filepath.Join(dir, "pid"), filepath.Join(dir, "log")
	if err := os.WriteFile(procFile, data, 0o600); err != nil {
		return 0, fmt.Errorf("exec in %s: %w", t.ociID, err)
	}
	rc := osexec.Command(t.oci.Path, append(t.oci.GlobalArgs(logFile), "exec", "--process", procFile, "--pid-file", pidFile, t.ociID)...)
	// The same pipes as libcontainer's path: *os.File ends, so that the
	// runtime hands them on and nothing waits for a client's stdin.
	var pipes libcontainer.Process
	stdio, err := execStdio(&pipes, s)
	if err != nil {
		return 0, err
	}
	defer stdio.close()
	rc.Stdin, rc.Stdout, rc.Stderr = pipes.Stdin, pipes.Stdout, pipes.Stderr
	if err := rc.Start(); err != nil {
		return 0, fmt.Errorf("exec in %s: run %s: %w", t.ociID, t.oci.Path, err)
	}
	copied, err := stdio.started(s)
	if err != nil {
		killReap(rc.Process.Pid)
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- rc.Wait() }()
	select {
	case err := <-done:
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		return ociExitCode(t.ociID, cmd, err, logFile, s)
	case <-ctx.Done():
		// The process is the runtime's child: kill it, and the runtime
		// reaps it and exits; kill the runtime too if it lingers.
		if pid := readPIDFile(pidFile); pid > 0 {
			unix.Kill(pid, unix.SIGKILL)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			rc.Process.Kill()
			<-done
		}
		return 0, ctx.Err()
	}
}

// ociExitCode is the exec's exit code, or the runtime's failure to start
// it: a command that cannot be executed gets a shell's 127/126, as on
// libcontainer's path.
func ociExitCode(id string, cmd []string, waitErr error, logFile string, s Streams) (int32, error) {
	if msg := ociruntime.LogError(logFile); msg != "" {
		if code := startFailureCode(errors.New(msg)); code != 0 {
			return code, nil // the runtime wrote the reason on stderr
		}
		return 0, fmt.Errorf("exec %q in container %s: %s", cmd, id, msg)
	}
	if waitErr == nil {
		return 0, nil
	}
	var ee *osexec.ExitError
	if errors.As(waitErr, &ee) {
		if code := ee.ExitCode(); code >= 0 {
			return int32(code), nil
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			return exitCode(ws), nil
		}
	}
	return 0, fmt.Errorf("exec %q in container %s: %w", cmd, id, waitErr)
}

func readPIDFile(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}
