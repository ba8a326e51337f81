package sandbox

import (
	"encoding/json"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodState is the state of a pod sandbox.
type PodState string

const (
	PodReady    PodState = "ready"
	PodNotReady PodState = "notready"
)

// Pod is one pod sandbox: the pause process that owns the pod's namespaces
// and the files (resolv.conf, hostname, /dev/shm) its containers share.
// Values handed out by Runtime are copies.
type Pod struct {
	ID             string
	Config         *runtimeapi.PodSandboxConfig
	RuntimeHandler string
	CreatedAt      int64 // unix nanoseconds
	State          PodState
	PausePID       int
	PauseStart     uint64 // start time of PausePID, see processStartTime
	PIDHolder      int    // PID 1 of the pod's shared PID namespace (or its user namespace holder), 0 when there is none
	HolderStart    uint64 // start time of PIDHolder, see processStartTime
	// KeeperProtocol is the keeper protocol version the pod's keeper
	// speaks (keeperProtocol when it was started); 0 for keepers started by
	// a peapod from before versions, which take the 7-field start.
	KeeperProtocol int `json:",omitempty"`
	// NotReadyReason says why a pod whose pause or holder died on its own
	// is not ready ("" otherwise); not saved, refresh finds it again.
	NotReadyReason string `json:"-"`
	Dir            string // pod files under the state dir
	CgroupParent   string
	Cgroup         string   // the pod's own cgroup below CgroupParent ("" for pods from before pod cgroups)
	IPs            []string // from the network setup, primary first
	Creating       bool     // RunPodSandbox has not finished; recovery cleans up after a crash

	// NetworkBackend set up the pod's network and tears it down
	// (network.BackendBuiltin or network.BackendCNI); "" for host-network
	// pods and pods recorded before it was (network.Reloadable.TeardownPod).
	NetworkBackend string `json:",omitempty"`
}

// ContainerState is the state of a container.
type ContainerState string

const (
	ContainerCreated ContainerState = "created"
	ContainerRunning ContainerState = "running"
	ContainerExited  ContainerState = "exited"
)

// Container is one container of a pod. Values handed out are copies.
type Container struct {
	ID         string
	PodID      string
	Config     *runtimeapi.ContainerConfig
	Image      ImageRef
	CreatedAt  int64
	StartedAt  int64
	FinishedAt int64
	State      ContainerState
	ExitCode   int32
	Reason     string
	Message    string
	PID        int
	PIDStart   uint64
	LogPath    string // absolute, "" when the kubelet asked for no log
	Bundle     string // directory with config.json
	Rootfs     string
	User       specs.User // the identity the container's processes run as
	StopSignal string     // e.g. "SIGTERM": what StopContainer sends first
}

// ImageRef names the image a container was created from.
type ImageRef struct {
	ID  string // image ID ("sha256:...")
	Ref string // the reference as requested, e.g. "busybox:1.36"
}

// The records below are how Pod and Container are persisted: the CRI configs
// are stored in their protobuf encoding, the rest as JSON.

type podRecord struct {
	Pod
	Config []byte
}

func encodePod(p *Pod) (podRecord, error) {
	cfg, err := proto.Marshal(p.Config)
	if err != nil {
		return podRecord{}, fmt.Errorf("encode pod %s config: %w", p.ID, err)
	}
	r := podRecord{Pod: *p, Config: cfg}
	r.Pod.Config = nil
	return r, nil
}

func decodePod(data []byte) (*Pod, error) {
	var r podRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	p := r.Pod
	p.Config = &runtimeapi.PodSandboxConfig{}
	if err := proto.Unmarshal(r.Config, p.Config); err != nil {
		return nil, err
	}
	return &p, nil
}

type containerRecord struct {
	Container
	Config []byte
}

func encodeContainer(c *Container) (containerRecord, error) {
	cfg, err := proto.Marshal(c.Config)
	if err != nil {
		return containerRecord{}, fmt.Errorf("encode container %s config: %w", c.ID, err)
	}
	r := containerRecord{Container: *c, Config: cfg}
	r.Container.Config = nil
	return r, nil
}

func decodeContainer(data []byte) (*Container, error) {
	var r containerRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	c := r.Container
	c.Config = &runtimeapi.ContainerConfig{}
	if err := proto.Unmarshal(r.Config, c.Config); err != nil {
		return nil, err
	}
	return &c, nil
}


