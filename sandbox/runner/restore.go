package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/runc/libcontainer"
)

// RestoreImagesDir is the bundle's directory of CRIU images when the
// container is created from a checkpoint archive: its presence makes the
// runner restore the dumped processes instead of starting the spec's.
const RestoreImagesDir = "checkpoint"

// restoreWorkDir holds CRIU's restore.log, kept for a failed restore.
const restoreWorkDir = "restore-work"

// HasRestoreImages tells whether the container of bundle restores from
// CRIU images.
func HasRestoreImages(bundle string) (bool, error) {
	fi, err := os.Lstat(filepath.Join(bundle, RestoreImagesDir))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("restore images: %w", err)
	}
	return fi.IsDir(), nil
}

// restore brings the checkpointed processes back with CRIU, through
// libcontainer as runc restore does, into the container lc just created.
// CRIU restores the init as a sibling of itself (libcontainer asks for
// RstSibling), so it is this runner's child, exactly as lc.Run's init is:
// when the runner exits it is re-parented to the keeper, the pod's child
// subreaper, which holds its stdio (the pipes CRIU re-attaches in place of
// the dumped ones, named in descriptors.json) and records its exit.
// The images are removed once restored: they hold the processes' memory.
// The daemon checks them against the spec right before it asks the keeper
// for this start (sandbox.checkRestorePrivileges): CRIU restores
// credentials, seccomp mode and limits from them, not from the spec. Not
// here: the checker links CRIU's image decoders and protobuf, whose package
// initialisation would cost every container start ~2 ms twice (this binary
// is also the container's init); the bundle is written by the daemon alone.
func restore(lc *libcontainer.Container, bundle string, proc *libcontainer.Process) error {
	images := filepath.Join(bundle, RestoreImagesDir)
	work := filepath.Join(bundle, restoreWorkDir)
	err := lc.Restore(proc, &libcontainer.CriuOpts{
		ImagesDirectory: images,
		WorkDirectory:   work,
		TcpEstablished:  true, // as it was dumped (sandbox.CheckpointContainer)
		FileLocks:       true,
	})
	if err != nil {
		log := filepath.Join(work, "restore.log")
		return fmt.Errorf("restore with criu (log: %s%s): %w", log, criuErrors(log), err)
	}
	os.RemoveAll(images)
	return nil
}

// criuErrors is ", errors: ..." with the last of CRIU's "Error" lines in
// log, for the caller who cannot read the node's files; "" without any.
func criuErrors(log string) string {
	b, err := os.ReadFile(log)
	if err != nil {
		return ""
	}
	var errs []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Error") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) == 0 {
		return ""
	}
	if len(errs) > 3 {
		errs = errs[len(errs)-3:]
	}
	return ", errors: " + strings.Join(errs, "; ")
}
