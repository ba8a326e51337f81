package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/peapod-cri/peapod/durable"
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
	return clean, durable.SyncDir(root)
}

// writeCleanStopMarker records a clean stop, durably (the file is empty:
// its directory entry is all it says).
func writeCleanStopMarker(root string) error {
	f, err := os.OpenFile(filepath.Join(root, cleanStopMarker), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write the clean-stop marker: %w", err)
	}
	f.Close()
	return durable.SyncDir(root)
}

// collectStorage removes from containers/storage what no record points to
// after an unclean stop, or after Open moved an unusable record file of
// containers/storage aside: the runtime has recovered its records (and
// removed what its own reconcile found half done), nothing is served yet.
// A running container whose root filesystem a lost record file took (its
// storage container, its layer or one beneath no longer recorded) is
// stopped first: the collection removes the layer directories it runs on,
// and its root filesystem could not be mounted again anyway. Its pod stays;
// the kubelet makes the container again (pulling the image again if it
// went too).
func collectStorage(images *image.Store, rt *sandbox.Runtime, log *slog.Logger) {
	containers := rt.Containers()
	known := map[string]bool{}
	ids := make([]string, 0, len(containers))
	for _, c := range containers {
		known[c.ID] = true
		ids = append(ids, c.ID)
	}
	recorded, err := images.RootfsRecorded(ids)
	if err != nil {
		log.Error("containers/storage repair skipped: its records cannot be listed", "err", err)
		return
	}
	for _, c := range containers {
		if recorded[c.ID] || c.State != sandbox.ContainerRunning {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := rt.StopContainer(ctx, c.ID, 0)
		cancel()
		if err != nil {
			// Its layers would be removed under it: keep them this time.
			log.Error("container's root filesystem is no longer recorded in containers/storage; it could not be stopped, storage repair skipped", "container", c.ID, "pod", c.PodID, "err", err)
			return
		}
		log.Warn("container's root filesystem is no longer recorded in containers/storage; stopped", "container", c.ID, "pod", c.PodID)
	}
	got, err := images.CollectGarbage(func(id string) bool { return known[id] })
	for _, id := range got.Images {
		log.Warn("storage repair: forgot an image whose layers are no longer all recorded; pull it again", "image", id)
	}
	for _, id := range got.Containers {
		log.Warn("storage repair: removed a writable layer no container record points to, or whose layers are no longer all recorded", "container", id)
	}
	for _, id := range got.Layers {
		log.Warn("storage repair: removed a layer no image or container uses", "layer", id)
	}
	for _, id := range got.DriverDirs {
		log.Warn("storage repair: removed a layer directory no record names (a create or pull cut short, or a record a power cut emptied)", "layer", id)
	}
	if err != nil {
		log.Error("storage repair: containers/storage repair incomplete", "err", err)
		return
	}
	log.Info("storage repair: containers/storage checked", "images_forgotten", len(got.Images), "containers_removed", len(got.Containers), "layers_removed", len(got.Layers), "layer_dirs_removed", len(got.DriverDirs))
}
