package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestEscapePodFilesHostileRootfs: every file peapod and the kubelet mount
// into a container (/etc/hostname, /etc/resolv.conf, /dev/shm, the
// kubelet's /etc/hosts and termination log) lands on whatever the image
// has at that path. An image that makes those paths symlinks out of its
// root (absolute, through /proc/self/root and /proc/1/root, by ../), FIFOs,
// device nodes or directories, or makes /proc, /dev or /etc a symlink or a
// file, must get its mounts inside its own root or a clear refusal: nothing
// made on the host, no CRI call held, nothing left after removal.
func TestEscapePodFilesHostileRootfs(t *testing.T) {
	regAddr := testenv.StartRegistry(t)
	plantDir := filepath.Join("/tmp", "peapod-plant-"+randomSuffix()+randomSuffix())
	t.Cleanup(func() { os.RemoveAll(plantDir) })
	link := func(rel, target string) func(string) error {
		return replaceWith(rel, func(p string) error { return os.Symlink(target, p) })
	}
	dirAt := func(p string) error { return os.Mkdir(p, 0o755) }
	fileAt := func(p string) error { return os.WriteFile(p, []byte("x"), 0o644) }
	all := func(ms ...func(string) error) func(string) error {
		return func(root string) error {
			for _, m := range ms {
				if err := m(root); err != nil {
					return err
				}
			}
			return nil
		}
	}
	cases := []struct {
		name   string
		mutate func(root string) error
	}{
		{"links-absolute", all(
			link("etc/hostname", filepath.Join("/proc/self/root", plantDir, "hostname")),
			link("etc/resolv.conf", filepath.Join("/proc/1/root", plantDir, "resolv.conf")),
			link("etc/hosts", filepath.Join(plantDir, "hosts")),
			link("tmp", "/proc/self/root/tmp"))},
		{"links-relative", all(
			link("etc/hostname", "../../../../../.."+filepath.Join(plantDir, "hostname")),
			link("etc/resolv.conf", "../proc/self/cwd/../../.."+filepath.Join(plantDir, "resolv.conf")),
			link("etc/hosts", "../../.."+filepath.Join(plantDir, "hosts")))},
		{"etc-link", func(root string) error {
			if err := os.RemoveAll(filepath.Join(root, "etc")); err != nil {
				return err
			}
			return os.Symlink(filepath.Join("/proc/self/root", plantDir), filepath.Join(root, "etc"))
		}},
		{"fifos", all(replaceWith("etc/hostname", fifoAt), replaceWith("etc/resolv.conf", fifoAt), replaceWith("etc/hosts", fifoAt))},
		{"devices", all(replaceWith("etc/hostname", devZeroAt), replaceWith("etc/resolv.conf", devZeroAt), replaceWith("etc/hosts", devZeroAt))},
		{"dirs", all(replaceWith("etc/hostname", dirAt), replaceWith("etc/resolv.conf", dirAt), replaceWith("etc/hosts", dirAt))},
		{"proc-link", link("proc", filepath.Join("/proc/self/root", plantDir))},
		{"proc-file", all(func(root string) error { return os.RemoveAll(filepath.Join(root, "proc")) }, replaceWith("proc", fileAt))},
		{"dev-link", all(func(root string) error { return os.RemoveAll(filepath.Join(root, "dev")) }, link("dev", filepath.Join("/proc/self/root", plantDir)))},
		{"dev-file", all(func(root string) error { return os.RemoveAll(filepath.Join(root, "dev")) }, replaceWith("dev", fileAt))},
	}
	images := map[string]string{}
	for _, c := range cases {
		images[c.name] = hostileImage(t, regAddr, "podfiles-"+c.name, c.mutate)
	}
	d := newDaemon(t, regAddr)
	d.Start()
	for _, c := range cases {
		pullAll(t, d, images[c.name])
	}
	hostDir := t.TempDir()
	hostsFile := filepath.Join(hostDir, "hosts")
	termLog := filepath.Join(hostDir, "termination-log")
	for _, f := range []string{hostsFile, termLog} {
		if err := os.WriteFile(f, []byte("KUBELET-FILE\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	podCfg := podConfig("podfiles", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	mountsBefore := mountsUnder(d.Dir)

	for _, c := range cases {
		cfg := containerConfig(c.name, images[c.name], "sh", "-c", "cat /etc/hostname /etc/resolv.conf /etc/hosts; echo PODFILES-OK; sleep 1000")
		cfg.Mounts = []*runtimeapi.Mount{
			{HostPath: hostsFile, ContainerPath: "/etc/hosts"},
			{HostPath: termLog, ContainerPath: "/dev/termination-log"},
		}
		start := time.Now()
		outcome := "ran"
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*timeoutScale)
		cr, err := d.RT.CreateContainer(cctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if err == nil {
			_, err = d.RT.StartContainer(cctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
		}
		cancel()
		took := time.Since(start)
		if err != nil {
			outcome = "refused: " + err.Error()
			if strings.TrimSpace(err.Error()) == "" {
				t.Errorf("%s: refused without a reason", c.name)
			}
		} else {
			r, xerr := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: cr.ContainerId, Timeout: 20,
				Cmd: []string{"sh", "-c", "cat /etc/hostname /etc/resolv.conf /etc/hosts /dev/termination-log 2>&1; ls -la /tmp 2>&1 | head -3"}})
			if xerr != nil {
				outcome = "ran; exec: " + xerr.Error()
			} else {
				out := string(r.Stdout) + string(r.Stderr)
				outcome = "ran; saw " + strings.Join(strings.Fields(out), " ")
				if !strings.Contains(out, "KUBELET-FILE") || !strings.Contains(out, "podfiles-host") {
					t.Errorf("%s: the container does not see its pod files: %q", c.name, out)
				}
			}
		}
		if took > 20*time.Second*timeoutScale {
			t.Errorf("%s: create and start took %v", c.name, took)
		}
		t.Logf("%s (%v): %s", c.name, took.Round(time.Millisecond), outcome)
		if ents, err := os.ReadDir(plantDir); err == nil {
			t.Errorf("%s: the host's %s was made (%d entries)", c.name, plantDir, len(ents))
			os.RemoveAll(plantDir)
		}
		if cr != nil {
			d.RT.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: cr.ContainerId, Timeout: 1})
			if _, err := d.RT.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: cr.ContainerId}); err != nil {
				t.Errorf("%s: remove: %v", c.name, err)
			}
		}
		for _, f := range []string{hostsFile, termLog} {
			if b, _ := os.ReadFile(f); string(b) != "KUBELET-FILE\n" {
				t.Errorf("%s: the kubelet's %s changed: %q", c.name, f, b)
			}
		}
	}
	list, err := d.RT.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Containers) != 0 {
		t.Errorf("containers left: %d", len(list.Containers))
	}
	if after := mountsUnder(d.Dir); !slices.Equal(after, mountsBefore) {
		t.Errorf("mounts changed:\nbefore %v\nafter  %v", mountsBefore, after)
	}
}
