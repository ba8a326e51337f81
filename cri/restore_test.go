package cri

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/checkpoint"
)

// TestRestoredConfig: the new container runs the dumped process on the
// checkpoint's image and keeps the caller's name, labels and mounts; every
// dumped bind mount but peapod's own pod files must be among the caller's
// mounts (CRIU needs each back, and host paths are not taken from the
// archive): a missing one is InvalidArgument naming it and its source.
func TestRestoredConfig(t *testing.T) {
	a := &checkpoint.Archive{Path: "/ckpt.tar", Spec: &specs.Spec{
		Process: &specs.Process{Args: []string{"sh", "-c", "count"}, Env: []string{"A=1", "B=x=y"}, Cwd: "/work"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/hosts", Type: "bind", Source: "/old/pod/etc-hosts", Options: []string{"rbind", "ro"}},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: "/old/pod/resolv.conf", Options: []string{"rbind"}},
			{Destination: "/data", Source: "/", Options: []string{"rbind", "rw"}},
		},
	}}
	given := []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/new/volume"}, {ContainerPath: "/etc/hosts/", HostPath: "/new/pod/etc-hosts"}}
	req := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "restored"},
		Image:    &runtimeapi.ImageSpec{Image: "/ckpt.tar"},
		Command:  []string{"ignored"},
		Labels:   map[string]string{"l": "v"},
		Mounts:   given,
	}
	cfg, err := restoredConfig(req, a, "busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Image.Image != "busybox:1" || strings.Join(cfg.Command, " ") != "sh -c count" || cfg.Args != nil || cfg.WorkingDir != "/work" {
		t.Errorf("process/image: %v %v %v %q", cfg.Image, cfg.Command, cfg.Args, cfg.WorkingDir)
	}
	if len(cfg.Envs) != 2 || cfg.Envs[1].Key != "B" || string(cfg.Envs[1].Value) != "x=y" {
		t.Errorf("envs %v", cfg.Envs)
	}
	if cfg.Metadata.Name != "restored" || cfg.Labels["l"] != "v" || len(cfg.Mounts) != 2 || cfg.Mounts[0].HostPath != "/new/volume" {
		t.Errorf("caller's name, labels or mounts lost: %v %v %v", cfg.Metadata, cfg.Labels, cfg.Mounts)
	}
	if req.Command[0] != "ignored" {
		t.Errorf("the request was changed: %v", req)
	}

	// The archive's bind of the host's / is not taken.
	req.Mounts = given[1:]
	_, err = restoredConfig(req, a, "busybox:1")
	if err == nil || !strings.Contains(err.Error(), "InvalidArgument") || !strings.Contains(err.Error(), "/data (from /)") || strings.Contains(err.Error(), "/etc/hosts") {
		t.Errorf("a dumped bind mount the caller does not give: %v, want InvalidArgument naming /data (from /) only", err)
	}
}
