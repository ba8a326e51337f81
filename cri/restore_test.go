package cri

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/checkpoint"
)

// TestRestoredConfig: the new container runs the dumped process on the
// checkpoint's image, keeps the caller's name, labels and mounts, and
// gets the dumped container's bind mounts the caller did not give (CRIU
// needs every dumped mount back), except the pod files peapod binds
// itself; a dumped bind whose source is gone is InvalidArgument naming it.
func TestRestoredConfig(t *testing.T) {
	dir := t.TempDir()
	hosts := filepath.Join(dir, "etc-hosts")
	termLog := filepath.Join(dir, "termination-log")
	for _, f := range []string{hosts, termLog} {
		os.WriteFile(f, nil, 0o644)
	}
	a := &checkpoint.Archive{Path: "/ckpt.tar", Spec: &specs.Spec{
		Process: &specs.Process{Args: []string{"sh", "-c", "count"}, Env: []string{"A=1", "B=x=y"}, Cwd: "/work"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/hosts", Type: "bind", Source: hosts, Options: []string{"rbind", "ro"}},
			{Destination: "/dev/termination-log", Type: "bind", Source: termLog, Options: []string{"rbind", "rw"}},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: "/old/pod/resolv.conf", Options: []string{"rbind"}},
			{Destination: "/data", Type: "bind", Source: "/old/volume", Options: []string{"rbind", "rslave"}},
		},
	}}
	req := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "restored"},
		Image:    &runtimeapi.ImageSpec{Image: "/ckpt.tar"},
		Command:  []string{"ignored"},
		Labels:   map[string]string{"l": "v"},
		Mounts:   []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: dir}},
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
	if cfg.Metadata.Name != "restored" || cfg.Labels["l"] != "v" {
		t.Errorf("caller's name and labels lost: %v %v", cfg.Metadata, cfg.Labels)
	}
	got := map[string]*runtimeapi.Mount{}
	for _, m := range cfg.Mounts {
		got[m.ContainerPath] = m
	}
	if len(cfg.Mounts) != 3 || got["/data"].HostPath != dir || got["/etc/hosts"].HostPath != hosts || !got["/etc/hosts"].Readonly ||
		got["/dev/termination-log"].HostPath != termLog || got["/etc/resolv.conf"] != nil {
		t.Errorf("mounts %v: want the caller's /data, the dumped /etc/hosts (ro) and /dev/termination-log, not resolv.conf", cfg.Mounts)
	}
	if req.Mounts[0].HostPath != dir || len(req.Mounts) != 1 || req.Command[0] != "ignored" {
		t.Errorf("the request was changed: %v", req)
	}

	req.Mounts = nil // the dumped /data's source is gone
	if _, err := restoredConfig(req, a, "busybox:1"); err == nil || !strings.Contains(err.Error(), "/old/volume") || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Errorf("a dumped mount whose source is gone: %v", err)
	}
}
