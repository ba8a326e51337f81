package sandbox

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
)

// newID returns a random 64-hex-digit ID, the form kubelet and crictl expect.
func newID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// nameRegistry makes "one pod (or container) per name" a single call.
type nameRegistry struct {
	mu    sync.Mutex
	names map[string]string // name -> id
}

func newNameRegistry() *nameRegistry { return &nameRegistry{names: map[string]string{}} }

func (r *nameRegistry) reserve(name, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if owner, ok := r.names[name]; ok && owner != id {
		return fmt.Errorf("name %q is in use by %s: %w", name, owner, ErrAlreadyExists)
	}
	r.names[name] = id
	return nil
}

func (r *nameRegistry) release(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.names, name)
}

// resolveID finds the single ID in ids equal to or starting with prefix,
// as crictl lets users type short IDs.
func resolveID[T any](m map[string]T, prefix, kind string) (string, error) {
	if prefix == "" {
		return "", fmt.Errorf("%s ID is empty: %w", kind, ErrInvalidArgument)
	}
	if _, ok := m[prefix]; ok {
		return prefix, nil
	}
	var match string
	for id := range m {
		if strings.HasPrefix(id, prefix) {
			if match != "" {
				return "", fmt.Errorf("%s ID prefix %q is ambiguous: %w", kind, prefix, ErrInvalidArgument)
			}
			match = id
		}
	}
	if match == "" {
		return "", fmt.Errorf("%s %q: %w", kind, prefix, ErrNotFound)
	}
	return match, nil
}
