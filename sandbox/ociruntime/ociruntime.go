// Package ociruntime drives an external OCI runtime binary (crun, runc)
// through its command line, for the containers of a runtime handler
// configured with runtime = "oci". The runner uses it to create and start
// a container (so that the pod's keeper stays the parent of the init and
// the holder of its stdio); the daemon uses it to signal, update, exec
// into and delete containers, and to read the binary's features.
//
// It imports nothing of the daemon: the runner links it.
package ociruntime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// Runtime is one OCI runtime binary with its state directory.
type Runtime struct {
	Path string // the binary
	Root string // its --root: the containers' state, on a tmpfs (gone at reboot, as the containers)
	// SystemdCgroup passes --systemd-cgroup: cgroupsPath is slice:prefix:name.
	SystemdCgroup bool
}

// GlobalArgs are the options every command of r's binary takes first.
// Errors are logged as JSON lines to logFile when it is not empty, not
// to stderr, which may be the container's.
func (r Runtime) GlobalArgs(logFile string) []string {
	args := []string{"--root", r.Root}
	if logFile != "" {
		args = append(args, "--log", logFile, "--log-format", "json")
	}
	if r.SystemdCgroup {
		args = append(args, "--systemd-cgroup")
	}
	return args
}

// commandTimeout bounds one short command (kill, delete, state, update):
// a hung binary must not hang the RPC that called it.
const commandTimeout = 30 * time.Second

// run runs a short command of the binary and returns its stdout; a
// failure carries the binary's error message.
func (r Runtime) run(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.Path, append(r.GlobalArgs(""), args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("%s %s: %s", filepath.Base(r.Path), args[0], msg)
	}
	return stdout.Bytes(), nil
}

// Kill sends sig (a number) to container id's init; all also signals every
// other process of the container.
func (r Runtime) Kill(ctx context.Context, id string, sig int, all bool) error {
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	_, err := r.run(ctx, nil, append(args, id, fmt.Sprint(sig))...)
	return err
}

// Delete removes container id's state and cgroup, killing what still
// runs in it. An unknown container is not an error.
func (r Runtime) Delete(ctx context.Context, id string) error {
	_, err := r.run(ctx, nil, "delete", "--force", id)
	if err != nil && NotFound(err) {
		return nil
	}
	return err
}

// NotFound reports whether err says the binary knows no such container
// (runc: "container does not exist"; crun: "does not exist" too, or
// "No such file or directory" for its state file).
func NotFound(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "does not exist") || strings.Contains(msg, "No such file or directory") || strings.Contains(msg, "not found")
}

// State is what `state` reports of a container.
type State struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
	Bundle string `json:"bundle"`
}

// State reads container id's state.
func (r Runtime) State(ctx context.Context, id string) (State, error) {
	out, err := r.run(ctx, nil, "state", id)
	if err != nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal(out, &st); err != nil {
		return State{}, fmt.Errorf("%s state %s: decode: %w", filepath.Base(r.Path), id, err)
	}
	return st, nil
}

// Update writes new cgroup limits to running container id.
func (r Runtime) Update(ctx context.Context, id string, res *specs.LinuxResources) error {
	data, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode resources: %w", err)
	}
	_, err = r.run(ctx, data, "update", "--resources", "-", id)
	return err
}

// Features is what a handler of this runtime reports to the kubelet.
type Features struct {
	RecursiveReadOnlyMounts bool
	UserNamespaces          bool
}

// Probe reads the binary's `features` (OCI runtime-spec features.json).
// A binary without the command (crun before 1.9?) supports neither
// feature as far as peapod can tell: they are not claimed.
func Probe(ctx context.Context, path string) (Features, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "features").Output()
	if err != nil {
		return Features{}, fmt.Errorf("%s features: %w", path, err)
	}
	var f features.Features
	if err := json.Unmarshal(out, &f); err != nil {
		return Features{}, fmt.Errorf("%s features: decode: %w", path, err)
	}
	return featuresOf(f), nil
}

// featuresOf reads the kubelet's features from the runtime's own list:
// recursive read-only mounts need the "rro" mount option; user
// namespaces need the user namespace and idmapped mounts (the pods'
// volumes are idmapped), as containerd reads them.
func featuresOf(f features.Features) Features {
	var out Features
	out.RecursiveReadOnlyMounts = slices.Contains(f.MountOptions, "rro")
	if l := f.Linux; l != nil {
		idmap := l.MountExtensions != nil && l.MountExtensions.IDMap != nil && l.MountExtensions.IDMap.Enabled != nil && *l.MountExtensions.IDMap.Enabled
		out.UserNamespaces = idmap && slices.Contains(l.Namespaces, string(specs.UserNamespace))
	}
	return out
}

// LogError is the last error the binary logged to logFile (JSON lines
// with "level" and "msg", as --log-format json writes them), or "".
func LogError(logFile string) string {
	f, err := os.Open(logFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && (line.Level == "error" || line.Level == "fatal") {
			last = line.Msg
		}
	}
	return last
}

// ErrNoPID: the binary said it started the container but wrote no PID.
var ErrNoPID = errors.New("no PID in the runtime's pid file")
