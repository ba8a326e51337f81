package store

import (
	"encoding/json"
	"fmt"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The records of pods and containers: what a restarted daemon needs to
// report them again and to clean up after them. package sandbox works on
// them (it names them sandbox.Pod and sandbox.Container); this package
// encodes, decodes and loads them.

// PodState is the state of a pod sandbox.
type PodState string

const (
	PodReady    PodState = "ready"
	PodNotReady PodState = "notready"
)

// Pod is one pod sandbox: the pause process that owns the pod's namespaces
// and the files (resolv.conf, hostname, /dev/shm) its containers share.
// Values sandbox.Runtime hands out are copies.
type Pod struct {
	ID             string
	Config         *runtimeapi.PodSandboxConfig
	RuntimeHandler string
	CreatedAt      int64 // unix nanoseconds
	State          PodState
	PausePID       int
	PauseStart     uint64 // start time of PausePID, see proc.StartTime
	PIDHolder      int    // PID 1 of the pod's shared PID namespace (or its user namespace holder), 0 when there is none
	HolderStart    uint64 // start time of PIDHolder, see proc.StartTime
	// KeeperProtocol is the keeper protocol version the pod's keeper
	// speaks (keeper.Protocol when it was started); 0 for keepers started by
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
	// ImageVolumes are the images mounted as volumes (Mount.image), in
	// the order of the config's mounts.
	ImageVolumes []ImageVolume `json:",omitempty"`
}

// ImageVolume is one image a container mounts as a volume.
type ImageVolume struct {
	Mount   int    // index of its Mount in the container config
	ImageID string // the image's ID ("sha256:..."), as resolved at creation
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

// SavePod writes the pod's record through.
func (s *Metadata) SavePod(p *Pod) error {
	rec, err := encodePod(p)
	if err != nil {
		return err
	}
	return s.Put(Pods, p.ID, rec)
}

// SaveContainer writes the container's record through.
func (s *Metadata) SaveContainer(c *Container) error {
	rec, err := encodeContainer(c)
	if err != nil {
		return err
	}
	return s.Put(Containers, c.ID, rec)
}

// LoadPods decodes every pod record. A record that cannot be used is moved
// aside (Quarantine) and logged: it never keeps the daemon from starting.
func (s *Metadata) LoadPods(log Logger) ([]*Pod, error) {
	return load(s, Pods, decodePod, func(p *Pod) string { return p.ID }, log)
}

// LoadContainers is LoadPods for containers.
func (s *Metadata) LoadContainers(log Logger) ([]*Container, error) {
	return load(s, Containers, decodeContainer, func(c *Container) string { return c.ID }, log)
}

// Logger is what loading logs through (a *slog.Logger).
type Logger interface {
	Warn(msg string, args ...any)
	Error(msg string, args ...any)
}

// load decodes the records of bucket, then (outside the read transaction)
// moves aside those it could not use.
func load[T any](s *Metadata, bucket []byte, decode func([]byte) (*T, error), idOf func(*T) string, log Logger) ([]*T, error) {
	type bad struct {
		id   string
		data []byte
		err  error
	}
	var out []*T
	var aside []bad
	err := s.Each(bucket, func(id string, data []byte) error {
		v, err := decode(data)
		if err == nil {
			err = validRecordID(id, idOf(v))
		}
		if err != nil {
			aside = append(aside, bad{id, append([]byte(nil), data...), err})
			return nil
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", bucket, err)
	}
	for _, b := range aside {
		if err := s.Quarantine(bucket, b.id, b.data); err != nil {
			log.Error("metadata record cannot be used, and moving it aside failed; it is ignored", "bucket", string(bucket), "id", b.id, "reason", b.err, "err", err)
			continue
		}
		log.Warn("metadata record cannot be used; moved aside", "bucket", string(bucket), "id", b.id,
			"reason", b.err, "moved_to", string(QuarantineBucket(bucket)))
	}
	return out, nil
}

// validRecordID checks that a record's own ID is the key it is stored
// under and looks like an ID peapod made (64 hex digits), so that a record
// that decodes by chance ("{}") is not taken for a pod.
func validRecordID(key, id string) error {
	if id != key {
		return fmt.Errorf("record of %q says it is %q", key, id)
	}
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return fmt.Errorf("bad ID %q", id)
	}
	return nil
}
