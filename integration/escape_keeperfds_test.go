package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fdSweep prints, for every process the container sees, each descriptor
// and what it names ("FD pid comm fd -> target"). Its own shell's
// directory reads are in other processes, so they do not show.
const fdSweep = `for p in /proc/[0-9]*; do
	n=${p#/proc/}
	c=$(cat $p/comm 2>/dev/null)
	for f in $p/fd/*; do
		[ -e "$f" ] || [ -L "$f" ] || continue
		echo "FD $n $c ${f##*/} -> $(readlink $f 2>/dev/null || echo UNREADABLE)"
	done
done
echo "SELF $$"
while read -r num ref proto flags type st inode path; do
	echo "UNIX $type $st $inode $path"
	case "$path" in @*) echo "ABSTRACT $path";; esac
done < /proc/net/unix
echo SWEEP-DONE`

// TestEscapeKeeperDescriptors: the pod's keeper holds every container's
// stdio, logs, terminal masters, attach and exec sessions' descriptors,
// its control socket, signalfd, epoll and pidfds, and forks each runner
// from itself. A container started last, and an exec into it, while its
// siblings have a TTY, an open stdin, an attach session, a log just
// reopened and a running exec, must see none of them: every process of
// the shared PID namespace holds only its own stdio (pipes, its terminal,
// /dev/null), and no abstract unix socket is in the pod's network
// namespace.
func TestEscapeKeeperDescriptors(t *testing.T) {
	d, image := readyDaemon(t)
	logDir := t.TempDir()
	podCfg := podConfig("keeperfds", logDir)
	ns := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns}
	pod := runPod(t, d, podCfg).PodSandboxId
	withNS := func(cfg *runtimeapi.ContainerConfig) *runtimeapi.ContainerConfig {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ns}}
		return cfg
	}

	tty := withNS(containerConfig("tty", image, "sh", "-c", "while :; do echo tty; sleep 0.2; done"))
	tty.Tty, tty.Stdin = true, true
	startContainer(t, d, pod, podCfg, tty)
	stdin := withNS(containerConfig("stdin", image, "cat"))
	stdin.Stdin = true
	stdinID := startContainer(t, d, pod, podCfg, stdin)
	logger := startContainer(t, d, pod, podCfg, withNS(containerConfig("logger", image, "sh", "-c", "while :; do echo log; sleep 0.05; done")))

	// An attach session on the stdin container, kept open.
	actx, cancelAttach := context.WithCancel(context.Background())
	defer cancelAttach()
	att, err := d.RT.Attach(ctx(t), &runtimeapi.AttachRequest{ContainerId: stdinID, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	attached := make(chan struct{})
	go func() {
		defer close(attached)
		executor(t, att.Url).StreamWithContext(actx, remotecommand.StreamOptions{Stdin: pr, Stdout: io.Discard, Stderr: io.Discard})
	}()
	fmt.Fprintln(pw, "ATTACHED-LINE")
	waitFor(t, 20*time.Second, "the attach session's line in the log", func() bool {
		return logHas(filepath.Join(logDir, "stdin.log"), "ATTACHED-LINE")
	})
	// A log rotated and reopened.
	os.Rename(filepath.Join(logDir, "logger.log"), filepath.Join(logDir, "logger.log.1"))
	if _, err := d.RT.ReopenContainerLog(ctx(t), &runtimeapi.ReopenContainerLogRequest{ContainerId: logger}); err != nil {
		t.Fatal(err)
	}
	// An exec that runs while the last container starts.
	execDone := make(chan struct{})
	go func() {
		defer close(execDone)
		d.RT.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: logger, Cmd: []string{"sleep", "20"}, Timeout: 25})
	}()
	waitFor(t, 20*time.Second, "the exec's sleep to run", func() bool {
		out, _ := execAll(t, d, logger, "sh", "-c", "grep -l '^sleep' /proc/[0-9]*/comm")
		return strings.Contains(out, "/comm")
	})

	probe := startContainer(t, d, pod, podCfg, withNS(containerConfig("probe", image, "sh", "-c", fdSweep+"; sleep 1000")))
	waitFor(t, 30*time.Second, "the probe's sweep", func() bool { return logHas(filepath.Join(logDir, "probe.log"), "SWEEP-DONE") })
	fromInit, _ := os.ReadFile(filepath.Join(logDir, "probe.log"))
	fromExec, code := execAll(t, d, probe, "sh", "-c", fdSweep)
	if code != 0 {
		t.Fatalf("the sweep in an exec failed (%d): %s", code, fromExec)
	}
	for what, out := range map[string]string{"the last container's init": string(fromInit), "an exec": fromExec} {
		fds, procs := 0, map[string]bool{}
		for _, line := range strings.Split(out, "\n") {
			if i := strings.Index(line, "FD "); i >= 0 {
				line = line[i:]
			} else if i := strings.Index(line, "ABSTRACT "); i >= 0 {
				t.Errorf("%s sees an abstract unix socket in the pod's network namespace: %s", what, line[i:])
				continue
			} else {
				continue
			}
			f := strings.Fields(line)
			if len(f) < 6 {
				continue
			}
			fds++
			procs[f[1]] = true
			if bad := foreignDescriptor(f[2], f[3], strings.Join(f[5:], " ")); bad != "" {
				t.Errorf("%s sees %s: %s", what, bad, line)
			}
		}
		t.Logf("%s: %d descriptors of %d processes listed", what, fds, len(procs))
		if os.Getenv("SHOWFDS") != "" {
			t.Log(out)
		}
		if fds < 6 || len(procs) < 4 {
			t.Errorf("%s listed too little to tell (%d descriptors, %d processes): %q", what, fds, len(procs), out)
		}
	}
	cancelAttach()
	pw.Close()
	<-attached
	d.RT.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: logger})
	<-execDone
}

// foreignDescriptor says why a descriptor of a container's process is not
// the container's own (empty if it is): its stdio is a pipe, its terminal
// or /dev/null, and busybox's processes open nothing else that stays.
func foreignDescriptor(comm, fd, target string) string {
	switch {
	case target == "UNREADABLE":
		return "" // the holder (non-dumpable) and races with exits
	case strings.HasPrefix(target, "pipe:["), target == "/dev/null", strings.HasPrefix(target, "/dev/pts/") && target != "/dev/pts/ptmx":
		if n, _ := strconv.Atoi(fd); n > 2 && comm != "sh" {
			return "a descriptor above stderr" // a shell may keep a copy of its input for redirections
		}
		return ""
	case strings.HasPrefix(target, "/proc/"):
		return "" // the sweep's own directory reads
	}
	return "a descriptor that is not the container's stdio"
}
