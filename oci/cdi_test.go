package oci

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// testCDISpec defines vendor.test/dev=null: /dev/null shown as
// /dev/cdi-null, an environment variable, and a read-only mount.
const testCDISpec = `cdiVersion: "0.6.0"
kind: vendor.test/dev
devices:
  - name: "null"
    containerEdits:
      deviceNodes:
        - path: /dev/cdi-null
          hostPath: /dev/null
      env:
        - CDI_NULL=present
containerEdits:
  env:
    - CDI_VENDOR=test
  mounts:
    - hostPath: /etc/hostname
      containerPath: /etc/cdi-hostname
      options: [ro, bind]
`

func cdiDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func emptySpec() *specs.Spec {
	return &specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
}

func TestCDIInject(t *testing.T) {
	dir := cdiDir(t, map[string]string{"vendor.yaml": testCDISpec, "broken.yaml": "cdiVersion: [\n"})
	r := NewCDIRegistry([]string{dir})
	for _, cfg := range []*runtimeapi.ContainerConfig{
		{CDIDevices: []*runtimeapi.CDIDevice{{Name: "vendor.test/dev=null"}}},
		{Annotations: map[string]string{"cdi.k8s.io/test": "vendor.test/dev=null"}},
		{CDIDevices: []*runtimeapi.CDIDevice{{Name: "vendor.test/dev=null"}}, Annotations: map[string]string{"cdi.k8s.io/test": "vendor.test/dev=null"}},
	} {
		spec := emptySpec()
		if err := r.Inject(spec, cfg); err != nil {
			t.Fatalf("Inject %v: %v", cfg, err)
		}
		if len(spec.Linux.Devices) != 1 || spec.Linux.Devices[0].Path != "/dev/cdi-null" || spec.Linux.Devices[0].Major != 1 || spec.Linux.Devices[0].Minor != 3 {
			t.Errorf("devices %+v, want /dev/cdi-null 1:3 once", spec.Linux.Devices)
		}
		allowed := slices.ContainsFunc(spec.Linux.Resources.Devices, func(d specs.LinuxDeviceCgroup) bool {
			return d.Allow && d.Major != nil && *d.Major == 1 && d.Minor != nil && *d.Minor == 3
		})
		if !allowed {
			t.Errorf("no cgroup rule allows 1:3: %+v", spec.Linux.Resources.Devices)
		}
		for _, env := range []string{"CDI_NULL=present", "CDI_VENDOR=test"} {
			if !slices.Contains(spec.Process.Env, env) {
				t.Errorf("env %v lacks %s", spec.Process.Env, env)
			}
		}
		if !slices.ContainsFunc(spec.Mounts, func(m specs.Mount) bool { return m.Destination == "/etc/cdi-hostname" }) {
			t.Errorf("mounts %+v lack /etc/cdi-hostname", spec.Mounts)
		}
	}

	// No device asked: the directories are not even read.
	spec := emptySpec()
	if err := NewCDIRegistry(nil).Inject(spec, &runtimeapi.ContainerConfig{}); err != nil || len(spec.Linux.Devices) != 0 {
		t.Errorf("no CDI device: %v, devices %v", err, spec.Linux.Devices)
	}
}

func TestCDIRefusals(t *testing.T) {
	dir := cdiDir(t, map[string]string{"vendor.yaml": testCDISpec, "broken.yaml": "cdiVersion: [\n"})
	for _, tc := range []struct {
		name string
		r    *CDIRegistry
		cfg  *runtimeapi.ContainerConfig
		want []string
	}{
		{"unknown device", NewCDIRegistry([]string{dir}),
			&runtimeapi.ContainerConfig{CDIDevices: []*runtimeapi.CDIDevice{{Name: "vendor.test/dev=missing"}}},
			[]string{"vendor.test/dev=missing", "not defined", dir, "broken.yaml"}},
		{"not qualified", NewCDIRegistry([]string{dir}),
			&runtimeapi.ContainerConfig{CDIDevices: []*runtimeapi.CDIDevice{{Name: "null"}}},
			[]string{`"null"`, "vendor.com/class=name"}},
		{"bad annotation", NewCDIRegistry([]string{dir}),
			&runtimeapi.ContainerConfig{Annotations: map[string]string{"cdi.k8s.io/x": "nonsense"}},
			[]string{"annotation"}},
		{"no directories", NewCDIRegistry(nil),
			&runtimeapi.ContainerConfig{CDIDevices: []*runtimeapi.CDIDevice{{Name: "vendor.test/dev=null"}}},
			[]string{"cdi_spec_dirs"}},
	} {
		spec := emptySpec()
		err := tc.r.Inject(spec, tc.cfg)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tc.name, err, w)
			}
		}
		if len(spec.Linux.Devices) != 0 || len(spec.Process.Env) != 0 {
			t.Errorf("%s: the spec was changed: %+v %v", tc.name, spec.Linux.Devices, spec.Process.Env)
		}
	}
}
