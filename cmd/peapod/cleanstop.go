package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/peapod-cri/peapod/image"
	"github.com/peapod-cri/peapod/sandbox"
)

// cleanStopMarker, in the root, says the last daemon stopped cleanly:
// SIGTERM, every call finished, the runtime and the image store closed.
// A start that does not find it follows a crash or a power cut, and
// repairs containers/storage (collectStorage).
const cleanStopMarker = "clean-stop"

// takeCleanStopMarker reports whether the last stop was clean, and removes
// the marker durably so that a crash of this daemon is seen as unclean.
func takeCleanStopMarker(root string) (clean bool, err error) {
	p := filepath.Join(root, cleanStopMarker)
	switch err := os.Remove(p); {
	case err == nil:
		clean = true
	case errors.Is(err, os.ErrNotExist):
	default:
		return false, fmt.Errorf("remove the clean-stop marker: %w", err)
	}
	return clean, syncDir(root)
}

// writeCleanStopMarker records a clean stop, durably (the file is empty:
// its directory entry is all it says).
func writeCleanStopMarker(root string) error {
	f, err := os.OpenFile(filepath.Join(root, cleanStopMarker), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write the clean-stop marker: %w", err)
	}
	f.Close()
	return syncDir(root)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// collectStorage removes from containers/storage what no record points to
// after an unclean stop: the runtime has recovered its records (and
// removed what its own reconcile found half done), nothing is served yet.
func collectStorage(images *image.Store, rt *sandbox.Runtime, log *slog.Logger) {
	known := map[string]bool{}
	for _, c := range rt.Containers() {
		known[c.ID] = true
	}
	got, err := images.CollectGarbage(func(id string) bool { return known[id] })
	for _, id := range got.Containers {
		log.Warn("unclean stop: removed a storage container no container record points to", "storage_container", id)
	}
	for _, id := range got.Layers {
		log.Warn("unclean stop: removed a layer no image or container uses", "layer", id)
	}
	if err != nil {
		log.Error("unclean stop: containers/storage repair incomplete", "err", err)
		return
	}
	log.Info("unclean stop: containers/storage checked", "containers_removed", len(got.Containers), "layers_removed", len(got.Layers))
}
