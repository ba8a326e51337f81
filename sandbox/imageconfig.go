package sandbox

import "github.com/peapod-cri/peapod/oci"

// Image is what a container takes from its image's config; the CRI layer
// fills it from the image store.
type Image = oci.Image

// specPod is what the spec of a container takes from its pod.
func specPod(p *Pod) oci.Pod {
	return oci.Pod{ID: p.ID, Config: p.Config, Dir: p.Dir, PausePID: p.PausePID, PIDHolder: p.PIDHolder, Cgroup: p.Cgroup}
}
