package ociruntime

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// What a handler claims follows the runtime's own features: rro for
// recursive read-only mounts, the user namespace and idmapped mounts for
// user namespaces.
func TestFeaturesOf(t *testing.T) {
	yes, no := true, false
	idmap := func(on *bool) *features.Linux {
		return &features.Linux{Namespaces: []string{"user", "pid"}, MountExtensions: &features.MountExtensions{IDMap: &features.IDMap{Enabled: on}}}
	}
	for _, tc := range []struct {
		name string
		in   features.Features
		want Features
	}{
		{"nothing", features.Features{}, Features{}},
		{"runc 1.1: rro, userns without idmap", features.Features{MountOptions: []string{"ro", "rro"}, Linux: &features.Linux{Namespaces: []string{"user"}}}, Features{RecursiveReadOnlyMounts: true}},
		{"idmap on", features.Features{Linux: idmap(&yes)}, Features{UserNamespaces: true}},
		{"idmap off", features.Features{Linux: idmap(&no)}, Features{}},
		{"idmap without the user namespace", features.Features{Linux: &features.Linux{Namespaces: []string{"pid"}, MountExtensions: &features.MountExtensions{IDMap: &features.IDMap{Enabled: &yes}}}}, Features{}},
	} {
		if got := featuresOf(tc.in); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// LogError finds the runtime's last error among its JSON log lines.
func TestLogError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	os.WriteFile(p, []byte(`{"level":"warning","msg":"w"}
{"level":"error","msg":"first"}
not json
{"level":"error","msg":"container_linux.go: exec: \"x\": executable file not found in $PATH"}
{"level":"info","msg":"i"}
`), 0o600)
	if got, want := LogError(p), `container_linux.go: exec: "x": executable file not found in $PATH`; got != want {
		t.Errorf("LogError = %q, want %q", got, want)
	}
	if got := LogError(filepath.Join(t.TempDir(), "none")); got != "" {
		t.Errorf("LogError of a missing file = %q", got)
	}
}
