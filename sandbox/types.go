package sandbox

import "github.com/peapod-cri/peapod/sandbox/store"

// The pod and container records live with the store that persists them
// (sandbox/store/records.go); the lifecycle and the CRI layer know them by
// these names.
type (
	Pod            = store.Pod
	PodState       = store.PodState
	Container      = store.Container
	ContainerState = store.ContainerState
	ImageRef       = store.ImageRef
	ImageVolume    = store.ImageVolume
)

const (
	PodReady         = store.PodReady
	PodNotReady      = store.PodNotReady
	ContainerCreated = store.ContainerCreated
	ContainerRunning = store.ContainerRunning
	ContainerExited  = store.ContainerExited
)
