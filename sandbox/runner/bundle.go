package runner

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/peapod-cri/peapod/durable"
)

// A container's bundle holds its OCI spec, config.json, written by the
// daemon and read by the runner (and by a restarted daemon).

// ReadSpec reads the bundle's OCI spec.
func ReadSpec(bundle string) (*specs.Spec, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("decode OCI spec: %w", err)
	}
	return &spec, nil
}

// WriteSpec replaces the bundle's OCI spec. It is never half-written:
// the runner and a restarted daemon read it back.
func WriteSpec(bundle string, spec *specs.Spec) error {
	data, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode OCI spec: %w", err)
	}
	if err := durable.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		return fmt.Errorf("write OCI spec: %w", err)
	}
	return nil
}
