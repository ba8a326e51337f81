package runner

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestInitProcessAppArmor: the spec's AppArmor profile reaches the
// container's first process (libcontainer applies Process.AppArmorProfile;
// the config's field stays empty since runc 1.5's specconv). Without it
// critest's deny-write specs saw a write succeed in the qemu guest.
func TestInitProcessAppArmor(t *testing.T) {
	spec := &specs.Spec{Process: &specs.Process{Args: []string{"touch", "/tmp/foo"}, ApparmorProfile: "cri-validate-apparmor-test-deny-write"}}
	p, err := InitProcess(spec)
	if err != nil {
		t.Fatal(err)
	}
	if p.AppArmorProfile != spec.Process.ApparmorProfile {
		t.Errorf("init process AppArmor profile %q, want %q", p.AppArmorProfile, spec.Process.ApparmorProfile)
	}
	cfg, err := LibcontainerConfig("c", &specs.Spec{Root: &specs.Root{Path: "/"}, Process: spec.Process, Linux: &specs.Linux{}})
	if err == nil && cfg.AppArmorProfile == "" && p.AppArmorProfile == "" {
		t.Errorf("the profile is in neither the config nor the process: the container would run unconfined")
	}
}
