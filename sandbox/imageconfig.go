package sandbox

import (
	"github.com/peapod-cri/peapod/oci"

	"golang.org/x/sys/unix"
)

// Image is what a container takes from its image's config; the CRI layer
// fills it from the image store.
type Image = oci.Image

// specPod is what the spec of a container takes from its pod.
func specPod(p *Pod) oci.Pod {
	return oci.Pod{ID: p.ID, Config: p.Config, Dir: p.Dir, PausePID: p.PausePID, PIDHolder: p.PIDHolder, Cgroup: p.Cgroup}
}

// stopSignal is the signal a stored container is stopped with; records
// written before stop signals existed have none and get SIGTERM.
func stopSignalOf(c *Container) unix.Signal {
	if sig, err := oci.ParseSignal(c.StopSignal); err == nil && c.StopSignal != "" {
		return sig
	}
	return unix.SIGTERM
}
