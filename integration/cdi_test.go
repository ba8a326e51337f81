package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCDIDevices: a container asking for a CDI device (what a DRA driver
// hands the kubelet) gets the device node, environment and mount its spec
// defines — here /dev/null shown as /dev/cdi-null — through the CRI field
// and through the older annotation; a device no spec defines is
// InvalidArgument and leaves nothing behind.
func TestCDIDevices(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	cdiDir := filepath.Join(d.Dir, "cdi")
	writeNullCDISpec(t, cdiDir, filepath.Join(d.Dir, "cdi-shared"))
	conf := filepath.Join(d.Dir, "peapod.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("cdi_spec_dirs = [%q]\n", cdiDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = append(d.Args, "--config", conf)
	d.Start()
	pullAll(t, d, image)
	podCfg := podConfig("cdi", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	mounts := mountsUnder(d.Dir)

	byField := containerConfig("by-field", image, "sleep", "1000")
	byField.CDIDevices = []*runtimeapi.CDIDevice{{Name: "vendor.test/dev=null"}}
	byAnnotation := containerConfig("by-annotation", image, "sleep", "1000")
	byAnnotation.Annotations = map[string]string{"cdi.k8s.io/test": "vendor.test/dev=null"}
	for _, cfg := range []*runtimeapi.ContainerConfig{byField, byAnnotation} {
		id := startContainer(t, d, pod, podCfg, cfg)
		r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Timeout: 20, Cmd: []string{"sh", "-c", nullCDIProbe}})
		if err != nil {
			t.Fatalf("%s: exec: %v", cfg.Metadata.Name, err)
		}
		if got := string(r.Stdout); r.ExitCode != 0 || got != nullCDIWant {
			t.Errorf("%s: exit %d, output %q (stderr %q), want %q", cfg.Metadata.Name, r.ExitCode, got, r.Stderr, nullCDIWant)
		}
	}

	// Not defined: refused with the device named, nothing left.
	before, err := d.RT.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bad := containerConfig("unknown", image, "true")
	bad.CDIDevices = []*runtimeapi.CDIDevice{{Name: "vendor.test/dev=gpu0"}}
	_, err = d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: bad, SandboxConfig: podCfg})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "vendor.test/dev=gpu0") {
		t.Errorf("unknown CDI device: %v, want InvalidArgument naming it", err)
	}
	after, err := d.RT.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Containers) != len(before.Containers) {
		t.Errorf("%d containers after the refused create, %d before", len(after.Containers), len(before.Containers))
	}
	if got := mountsUnder(d.Dir); len(got) != len(mounts)+2 { // the two started containers' rootfs
		t.Errorf("mounts after the refused create: %v (before the containers: %v)", got, mounts)
	}
}

// writeNullCDISpec writes into cdiDir the CDI spec of vendor.test/dev=null:
// the host's /dev/null as /dev/cdi-null, CDI_NULL=present in the
// environment and sharedDir (made here, holding a note) mounted read-only
// at /cdi-shared. nullCDIProbe, run in a container given the device,
// prints nullCDIWant.
func writeNullCDISpec(t *testing.T, cdiDir, sharedDir string) {
	t.Helper()
	for _, dir := range []string{cdiDir, sharedDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(sharedDir, "note"), []byte("from the CDI spec\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := fmt.Sprintf(`cdiVersion: "0.6.0"
kind: vendor.test/dev
devices:
  - name: "null"
    containerEdits:
      deviceNodes:
        - path: /dev/cdi-null
          hostPath: /dev/null
      env:
        - CDI_NULL=present
      mounts:
        - hostPath: %s
          containerPath: /cdi-shared
          options: [ro, rbind]
`, sharedDir)
	if err := os.WriteFile(filepath.Join(cdiDir, "vendor.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
}

const (
	nullCDIProbe = `stat -c '%t:%T %F' /dev/cdi-null && echo $CDI_NULL && cat /cdi-shared/note && echo x > /dev/cdi-null && echo written && (echo y > /cdi-shared/other || echo read-only)`
	nullCDIWant  = "1:3 character special file\npresent\nfrom the CDI spec\nwritten\nread-only\n"
)
