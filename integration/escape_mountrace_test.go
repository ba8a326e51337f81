package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// swapScript swaps /e/sub between a directory and a symlink to / (the
// container's, and through /proc/self/root the host's as runc's init sees
// it before pivot_root) as fast as busybox allows; whatever
// a racer made below /e/sub is removed each round.
const swapScript = `echo SWAPPING
while :; do
	rm -rf /e/sub; mkdir /e/sub
	rm -rf /e/sub; ln -s / /e/sub
	rm -rf /e/sub; ln -s /proc/self/root/ /e/sub
done`

// TestEscapeMountDestinationRace (CVE-2021-30465 class): container A of a
// pod swaps a directory of a shared emptyDir for a symlink to / in a loop
// while container B of the same pod starts with the emptyDir at /data and
// another volume at /data/sub/<name>. B's volume must land inside B's root
// (where the path resolves in-root at that instant) or B's start must fail
// cleanly: never a directory made or a mount placed on the host, never
// over B's /proc.
func TestEscapeMountDestinationRace(t *testing.T) {
	d, image := readyDaemon(t)
	emptyDir := t.TempDir()
	volume := t.TempDir()
	name := "peapod-race-" + randomSuffix()
	if err := os.WriteFile(filepath.Join(volume, "canary"), []byte("VOLUME-CANARY\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove("/" + name); os.Remove(filepath.Join("/tmp", name)) })
	podCfg := podConfig("mountrace", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	swapper := containerConfig("swapper", image, "sh", "-c", swapScript)
	swapper.Mounts = []*runtimeapi.Mount{{HostPath: emptyDir, ContainerPath: "/e"}}
	startContainer(t, d, pod, podCfg, swapper)
	waitFor(t, 20*time.Second, "the swapper to run", func() bool { return logHas(filepath.Join(podCfg.LogDirectory, "swapper.log"), "SWAPPING") })
	mountsBefore := mountsUnder("/")

	landed := map[string]int{}
	deadline := time.Now().Add(25 * time.Second)
	for i := 0; i < 40 && time.Now().Before(deadline); i++ {
		cfg := containerConfig(fmt.Sprintf("racer%d", i), image, "sleep", "1000")
		cfg.Mounts = []*runtimeapi.Mount{
			{HostPath: emptyDir, ContainerPath: "/data"},
			{HostPath: volume, ContainerPath: "/data/sub/" + name},
		}
		cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if _, err := d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			if landed["start refused"]++; landed["start refused"] == 1 {
				t.Logf("racer%d refused: %v", i, err)
			}
			if strings.TrimSpace(err.Error()) == "" {
				t.Error("start refused without a reason")
			}
		} else {
			out, _ := execAll(t, d, cr.ContainerId, "sh", "-c", "grep -l VOLUME-CANARY /data/sub/*/canary /"+name+"/canary /proc/self/root/"+name+"/canary 2>/dev/null; stat -f -c %T /proc; head -c 5 /proc/self/status")
			switch {
			case !strings.Contains(out, "proc") || !strings.Contains(out, "Name:"):
				t.Errorf("racer%d: /proc is not procfs: %q", i, out)
			case strings.Contains(out, "/data/sub/"+name):
				landed["at /data/sub/"+name]++
			case strings.Contains(out, "/"+name+"/canary"):
				landed["at /"+name+" of the container's root (the symlink, resolved in-root)"]++
			default:
				landed["nowhere visible: "+strings.Join(strings.Fields(out), " ")]++
			}
			d.RT.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: cr.ContainerId, Timeout: 1})
		}
		if _, err := d.RT.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Errorf("remove racer%d: %v", i, err)
		}
		for _, p := range []string{"/" + name, filepath.Join("/tmp", name)} {
			if _, err := os.Lstat(p); err == nil {
				t.Fatalf("racer%d: %s was made on the host", i, p)
			}
		}
	}
	t.Logf("where the volume landed: %v", landed)
	if after := mountsUnder("/"); len(after) != len(mountsBefore) {
		t.Errorf("the host's mounts changed: %d before, %d after", len(mountsBefore), len(after))
	}
	if b, _ := os.ReadFile(filepath.Join(volume, "canary")); string(b) != "VOLUME-CANARY\n" {
		t.Errorf("the volume's canary changed: %q", b)
	}
}
