package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/sandbox/ociruntime"
)

// ExternalCommand is the argv[1] that makes the runner start a container
// with an external OCI runtime binary instead of libcontainer.
const ExternalCommand = "oci-start"

// OCIBundle is the directory below a container's bundle that the external
// runtime is given: the runner writes the spec there with the holder's
// namespaces rewritten to its own fds, and the runtime's pid file and log.
// The bundle's own config.json stays the daemon's.
func OCIBundle(bundle string) string { return filepath.Join(bundle, "oci") }

// OCILog is where the external runtime logs the errors of a start.
func OCILog(bundle string) string { return filepath.Join(OCIBundle(bundle), "runtime.log") }

// ExternalArgs are the runner's arguments for a container of rt: the
// keeper runs exe ExternalCommand with them.
func ExternalArgs(rt ociruntime.Runtime, bundle, id, joins string) []string {
	systemd := "0"
	if rt.SystemdCgroup {
		systemd = "1"
	}
	return []string{ExternalCommand, rt.Path, rt.Root, systemd, bundle, id, joins}
}

// ociVersionForRuntimes is the ociVersion external runtimes are given.
const ociVersionForRuntimes = "1.0.2"

// externalStartTimeout bounds create+start: the keeper kills the runner
// at 60 s anyway, and a runtime left running would outlive it.
const externalStartTimeout = 50 * time.Second

// ExternalMain is the runner's main for ExternalCommand: it runs the
// runtime's `create` with the runner's stdio (the container's pipes from
// the keeper) passed through, then `start`, and reports the init's PID.
// The runtime exits after create, so the init is re-parented to the
// keeper, the subreaper above us, as with libcontainer.
func ExternalMain(args []string) int {
	result := os.NewFile(resultFD, "result")
	if result == nil || len(args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: "+ExternalCommand+" RUNTIME ROOT SYSTEMD BUNDLE ID DAEMON_PID (started by the pod's keeper)")
		return 2
	}
	rt := ociruntime.Runtime{Path: args[0], Root: args[1], SystemdCgroup: args[2] == "1"}
	bundle, id := args[3], args[4]
	fail := func(format string, a ...any) int {
		fmt.Fprintf(result, "error %s\n", strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", " "))
		return 1
	}
	holder, err := takeHolderNamespaces()
	if err != nil {
		return fail("%s", err)
	}
	if daemon, err := strconv.Atoi(args[5]); err == nil && daemon != 0 {
		// The runtime, our child, resolves relative cgroup paths from here.
		if err := joinCgroupsOf(daemon); err != nil {
			return fail("join the daemon's cgroups: %s", err)
		}
	}
	pid, err := startExternal(rt, bundle, id, holder)
	if err != nil {
		return fail("%s", err)
	}
	fmt.Fprintf(result, "ok %d\n", pid)
	return 0
}

func startExternal(rt ociruntime.Runtime, bundle, id string, holder holderNamespaces) (int, error) {
	spec, err := ReadSpec(bundle)
	if err != nil {
		return 0, err
	}
	holdStart(spec)
	// The runtime opens /proc/<runner>/fd/N while we live: the holder's
	// namespaces by handle, never by a PID that could be reused.
	if err := holder.rewrite(spec); err != nil {
		return 0, err
	}
	// crun 1.8 refuses any ociVersion but 1.0.x ("unknown version
	// specified"); no runtime gates a feature on the version, and older
	// ones ignore the fields they do not know, so the oldest 1.x that
	// every runtime takes is claimed.
	spec.Version = ociVersionForRuntimes
	dir := OCIBundle(bundle)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("create runtime bundle: %w", err)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return 0, fmt.Errorf("encode OCI spec: %w", err)
	}
	// Read once, by the runtime's create below: no fsync needed, and a
	// crash before it leaves a half-started container that the startup
	// sweep deletes.
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		return 0, fmt.Errorf("write runtime bundle: %w", err)
	}
	logFile, pidFile := OCILog(bundle), filepath.Join(dir, "pid")
	os.Remove(logFile)
	os.Remove(pidFile)
	ctx, cancel := context.WithTimeout(context.Background(), externalStartTimeout)
	defer cancel()
	// A container left by a start that failed half-way (runc and crun
	// both keep a directory per container under their root).
	if _, err := os.Stat(filepath.Join(rt.Root, id)); err == nil {
		exec.CommandContext(ctx, rt.Path, append(rt.GlobalArgs(""), "delete", "--force", id)...).Run()
	}

	createArgs := append(rt.GlobalArgs(logFile), "create", "--bundle", dir, "--pid-file", pidFile)
	var console *consoleSocket
	if spec.Process != nil && spec.Process.Terminal {
		if console, err = listenConsole(); err != nil {
			return 0, err
		}
		defer console.close()
		createArgs = append(createArgs, "--console-socket", console.path)
	}
	create := exec.CommandContext(ctx, rt.Path, append(createArgs, id)...)
	if console == nil {
		// Passed through: the runtime gives the container our stdio,
		// the keeper's pipes.
		create.Stdin, create.Stdout, create.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	if err := create.Run(); err != nil {
		return 0, runtimeError("create", logFile, err)
	}
	undo := func() { exec.Command(rt.Path, append(rt.GlobalArgs(""), "delete", "--force", id)...).Run() }
	if console != nil {
		master, err := console.receive(ctx)
		if err == nil {
			err = sendFD(ttyFD, master)
			master.Close()
		}
		if err != nil {
			undo()
			return 0, fmt.Errorf("hand the terminal to the keeper: %w", err)
		}
	}
	pid, err := readPID(pidFile)
	if err != nil {
		undo()
		return 0, err
	}
	start := exec.CommandContext(ctx, rt.Path, append(rt.GlobalArgs(logFile), "start", id)...)
	if err := start.Run(); err != nil {
		undo()
		return 0, runtimeError("start", logFile, err)
	}
	return pid, nil
}

// runtimeError names the runtime's own message when it logged one.
func runtimeError(step, logFile string, err error) error {
	if msg := ociruntime.LogError(logFile); msg != "" {
		return fmt.Errorf("OCI runtime %s: %s", step, msg)
	}
	return fmt.Errorf("OCI runtime %s: %w", step, err)
}

func readPID(pidFile string) (int, error) {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("read the runtime's pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, ociruntime.ErrNoPID
	}
	return pid, nil
}

// consoleSocket is the --console-socket the runtime sends the terminal's
// master on. It lives in a short private directory: socket paths are
// limited to 108 bytes, more than a bundle path may leave.
type consoleSocket struct {
	dir, path string
	l         *net.UnixListener
}

func listenConsole() (*consoleSocket, error) {
	dir, err := os.MkdirTemp("", "peapod-console-")
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	path := filepath.Join(dir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &consoleSocket{dir: dir, path: path, l: l}, nil
}

// receive takes the master the runtime sent during create (queued in the
// listen backlog until now).
func (c *consoleSocket) receive(ctx context.Context) (*os.File, error) {
	if dl, ok := ctx.Deadline(); ok {
		c.l.SetDeadline(dl)
	}
	conn, err := c.l.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("accept the runtime's console: %w", err)
	}
	defer conn.Close()
	buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("receive the terminal: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("receive the terminal: no descriptor")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("receive the terminal: no descriptor")
	}
	return os.NewFile(uintptr(fds[0]), "pty-master"), nil
}

func (c *consoleSocket) close() {
	c.l.Close()
	os.RemoveAll(c.dir)
}
