// Package names owns how pods and containers are named and found: the
// random IDs peapod gives them, the CRI names kubelet makes them unique by
// (one pod, or container, per name), and the lookup by ID or unique ID
// prefix that crictl's short IDs need. It knows no pod or container, only
// names and IDs, and imports nothing of peapod.
package names

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// What a lookup or a reservation refuses; cri/errors.go maps each to its
// gRPC code.
var (
	ErrInUse    = errors.New("already exists")   // AlreadyExists
	ErrUnknown  = errors.New("not found")        // NotFound
	ErrBadQuery = errors.New("invalid argument") // InvalidArgument: empty, or an ambiguous prefix
)

// NewID returns a random 64-hex-digit ID, the form kubelet and crictl
// expect.
func NewID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// Pod is the name kubelet's pod is unique by.
func Pod(cfg *runtimeapi.PodSandboxConfig) string {
	m := cfg.GetMetadata()
	return fmt.Sprintf("%s_%s_%s_%d", m.GetName(), m.GetNamespace(), m.GetUid(), m.GetAttempt())
}

// Container is the name a container is unique by within the node.
func Container(pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	m, pm := cfg.GetMetadata(), pod.GetMetadata()
	return fmt.Sprintf("%s_%s_%s_%s_%d", m.GetName(), pm.GetName(), pm.GetNamespace(), pm.GetUid(), m.GetAttempt())
}

// PodLog is "namespace/name" of the pod's metadata: the daemon's log lines
// name pods as the CRI layer's do ("pod=namespace/name pod_id=..."), so
// that one grep finds every line of a pod.
func PodLog(cfg *runtimeapi.PodSandboxConfig) string {
	m := cfg.GetMetadata()
	if m.GetNamespace() == "" {
		return m.GetName()
	}
	return m.GetNamespace() + "/" + m.GetName()
}

// Registry makes "one pod (or container) per name" a single call. The
// zero value is not usable; use NewRegistry.
type Registry struct {
	mu    sync.Mutex
	names map[string]string // name -> id
}

func NewRegistry() *Registry { return &Registry{names: map[string]string{}} }

// Reserve gives name to id, unless another ID has it (ErrInUse).
func (r *Registry) Reserve(name, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if owner, ok := r.names[name]; ok && owner != id {
		return fmt.Errorf("name %q is in use by %s: %w", name, owner, ErrInUse)
	}
	r.names[name] = id
	return nil
}

// Release frees name.
func (r *Registry) Release(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.names, name)
}

// Resolve finds the single key of m equal to or starting with prefix, as
// crictl lets users type short IDs. kind names what is looked up in the
// error ("container", "pod sandbox").
func Resolve[T any](m map[string]T, prefix, kind string) (string, error) {
	if prefix == "" {
		return "", fmt.Errorf("%s ID is empty: %w", kind, ErrBadQuery)
	}
	if _, ok := m[prefix]; ok {
		return prefix, nil
	}
	var match string
	for id := range m {
		if strings.HasPrefix(id, prefix) {
			if match != "" {
				return "", fmt.Errorf("%s ID prefix %q is ambiguous: %w", kind, prefix, ErrBadQuery)
			}
			match = id
		}
	}
	if match == "" {
		return "", fmt.Errorf("%s %q: %w", kind, prefix, ErrUnknown)
	}
	return match, nil
}
