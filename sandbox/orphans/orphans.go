// Package orphans removes, at startup, what a crash left behind that no
// record names any more: keepers (with their pod's cgroup), container
// bundles with their libcontainer state and root filesystems, pod
// directories, keeper sockets; and it moves aside OCI specs that cannot be
// read. The caller (sandbox's reconcile) says what is known and where
// things are; this package knows neither records nor the state layout. It
// imports cgroups, sandbox/keeper, sandbox/hostfs, sandbox/proc and
// sandbox/runner; never sandbox or sandbox/store.
package orphans

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"github.com/peapod-cri/peapod/sandbox/keeper"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/runner"
)

// Dirs are where the things to sweep are.
type Dirs struct {
	Keepers      string // keeper sockets
	Pods         string // one directory per pod
	Bundles      string // one bundle directory per container
	Libcontainer string // libcontainer's state root
}

// KillKeepers kills the running keepers (and their PID holders) whose
// socket is not in live, and removes their pod's cgroup, which nothing
// else leads to once the pod's record is gone.
func KillKeepers(d Dirs, live map[string]bool, log *slog.Logger) {
	for _, k := range keeper.Running(d.Keepers) {
		if live[k.Socket] {
			continue
		}
		log.Info("kill the keeper of a pod that has no record (never finished, or moved aside)", "pid", k.PID, "socket", k.Socket)
		cgroupDirs := cgroups.PodDirsOf(k.PID)
		unix.Kill(k.PID, unix.SIGKILL)
		deadline := time.Now().Add(10 * time.Second)
		for proc.Alive(k.PID, k.Start) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := cgroups.RemoveTrees(cgroupDirs); err != nil {
			log.Warn("remove the cgroup of a pod that has no record", "socket", k.Socket, "err", err)
		}
	}
}

// RemoveBundles removes the bundle, root filesystem (removeRootfs, if not
// nil) and libcontainer state of every container that known does not name:
// those whose CreateContainer a crash interrupted (the bundle is made
// first, the record last). A bundle whose root filesystem stays is kept,
// so that the next start retries.
func RemoveBundles(ctx context.Context, d Dirs, known func(id string) bool, removeRootfs func(ctx context.Context, id string) error, log *slog.Logger) {
	entries, _ := os.ReadDir(d.Bundles)
	for _, e := range entries {
		id := e.Name()
		if known(id) {
			continue
		}
		log.Info("remove a container whose creation a crash interrupted", "container", id)
		if lc, err := libcontainer.Load(d.Libcontainer, id); err == nil {
			lc.Signal(unix.SIGKILL)
			lc.Destroy()
		}
		if removeRootfs != nil {
			if err := removeRootfs(ctx, id); err != nil {
				log.Warn("remove the root filesystem of a half-created container", "container", id, "err", err)
				continue
			}
		}
		hostfs.UnpinTargetPIDNS(filepath.Join(d.Bundles, id))
		os.RemoveAll(filepath.Join(d.Bundles, id))
	}
}

// RemovePodFiles removes the directories of pods that known does not name
// (with their mounts: the directory's tmpfs and /dev/shm) and the keeper
// sockets not in liveSockets (base names).
func RemovePodFiles(d Dirs, known func(id string) bool, liveSockets map[string]bool) {
	entries, _ := os.ReadDir(d.Pods)
	for _, e := range entries {
		if !known(e.Name()) {
			hostfs.UnmountPodFiles(filepath.Join(d.Pods, e.Name()))
			os.RemoveAll(filepath.Join(d.Pods, e.Name()))
		}
	}
	entries, _ = os.ReadDir(d.Keepers)
	for _, e := range entries {
		if !liveSockets[e.Name()] {
			os.Remove(filepath.Join(d.Keepers, e.Name()))
		}
	}
}

// MoveAsideBadSpecs looks at the OCI spec in each bundle (container ID →
// bundle): one that cannot be decoded (a power cut in the middle of an
// older, non-atomic write; a bad disk) is renamed to
// "config.json.unreadable-<unix>" and logged, so that the operator learns
// it at start rather than at the next exec, which then fails with "no
// such file" instead of a decode error.
func MoveAsideBadSpecs(bundles map[string]string, log *slog.Logger) {
	for id, bundle := range bundles {
		_, err := runner.ReadSpec(bundle)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			continue
		}
		path := filepath.Join(bundle, "config.json")
		aside := fmt.Sprintf("%s.unreadable-%d", path, time.Now().Unix())
		if rerr := os.Rename(path, aside); rerr != nil {
			log.Error("OCI spec cannot be used, and moving it aside failed", "container", id, "reason", err, "err", rerr)
			continue
		}
		log.Warn("OCI spec cannot be used; moved aside (execs into the container fail)", "container", id, "reason", err, "moved_to", aside)
	}
}

// KillHalfStarted kills the process of container id, whose StartContainer
// a crash interrupted before it was recorded, and removes its libcontainer
// state and exit file, so that it can be started again. k is the keeper of
// its pod, nil when the pod's keeper is gone; it is waited for to see the
// exit and then forgets the container. It reports whether there was
// anything to undo.
func KillHalfStarted(ctx context.Context, d Dirs, id string, k *keeper.Client, exitFile string, log *slog.Logger) bool {
	lc, err := libcontainer.Load(d.Libcontainer, id)
	if err != nil {
		return false // never started: nothing to undo
	}
	lc.Signal(unix.SIGKILL)
	if k != nil {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		k.Wait(wctx, id, nil)
		cancel()
		k.Forget(ctx, id)
	}
	if err := lc.Destroy(); err != nil {
		log.Warn("destroy the state of a half-started container", "container", id, "err", err)
	}
	os.Remove(exitFile)
	return true
}
