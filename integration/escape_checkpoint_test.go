package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeCheckpointUpperSwap: CheckpointContainer leaves the container
// running while it archives the container's writable layer, so the
// container can change that layer under the archive. This one swaps, in a
// loop, a directory of 2,000 files for a symlink to a host directory
// (whose path a real attacker would guess: /etc, /root, /var/lib/kubelet)
// and a regular file for a FIFO. Before the fix the archive walked by path:
// it read the host directory's files through the symlink into
// rootfs-diff.tar (a host file leaked into an archive made to be moved and
// restored elsewhere), and opened the FIFO, hanging the daemon's call for
// ever. Now every entry is opened by handle without following symlinks:
// no host file, no hang. Runs only where `criu check` passes (the qemu
// guest of integration/checkpoint-guest.sh); the same races against the
// archive writer alone are checkpoint's TestWriteArchiveUpper*, which run
// anywhere.
func TestEscapeCheckpointUpperSwap(t *testing.T) {
	criu, err := exec.LookPath("criu")
	if err != nil || exec.Command(criu, "check").Run() != nil {
		t.Skip("criu cannot checkpoint on this node (integration/checkpoint-guest.sh runs this test where it can)")
	}
	d, image := readyDaemon(t)
	host := t.TempDir()
	const secret = "HOSTSECRET-checkpoint"
	if err := os.WriteFile(filepath.Join(host, "zz-secret"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	// The names the container's directory holds, as an attacker picks
	// the names of the directory it aims at (passwd, shadow in /etc): a
	// walk that has listed the container's directory then finds each of
	// them through the symlink.
	for i := 0; i < 2000; i++ {
		if err := os.WriteFile(filepath.Join(host, "f"+strconv.Itoa(i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	podCfg := podConfig("ckpt-swap", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	script := `mkdir /d; i=0; while [ $i -lt 2000 ]; do : > /d/f$i; i=$((i+1)); done
echo container > /d/zz-secret; ln -s ` + host + ` /s
echo data > /f; mkfifo /p
( while true; do mv /f /f.real; mv /p /f; mv /f /p; mv /f.real /f; done ) &
touch /ready
while true; do mv /d /d.real; mv /s /d; mv /d /s; mv /d.real /d; done`
	id := startContainer(t, d, pod, podCfg, containerConfig("swapper", image, "sh", "-c", script))
	c := ctx(t)
	waitFor(t, 30*time.Second, "the swapper to be ready", func() bool {
		r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"test", "-e", "/ready"}, Timeout: 10})
		return err == nil && r.ExitCode == 0
	})

	dir := t.TempDir()
	// Four tries, or as many as fit in 4 minutes (a dump under qemu TCG
	// takes tens of seconds).
	until := time.Now().Add(4 * time.Minute)
	for i := 0; i < 4 && (i == 0 || time.Now().Before(until)); i++ {
		location := filepath.Join(dir, "swap.tar")
		cc, cancel := context.WithTimeout(context.Background(), 90*time.Second*timeoutScale)
		_, err := d.RT.CheckpointContainer(cc, &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: location})
		cancel()
		if grpcCode(err) == "DeadlineExceeded" {
			t.Fatalf("checkpoint %d hung (a FIFO opened on the host?): %v", i+1, err)
		}
		if err != nil {
			// The container may make its own checkpoint fail (a file
			// changed while archived); it may not leak or hang.
			t.Logf("checkpoint %d: %v", i+1, err)
			continue
		}
		diff := rootfsDiffOf(t, location)
		if bytes.Contains(diff, []byte(secret)) {
			t.Fatalf("checkpoint %d: rootfs-diff.tar holds the host file %s, read through the container's symlink", i+1, filepath.Join(host, "zz-secret"))
		}
		t.Logf("checkpoint %d: %d bytes of rootfs diff, no host file", i+1, len(diff))
		os.Remove(location)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("CheckpointContainer left work files beside the archive: %v", left)
	}
}

// rootfsDiffOf is the rootfs-diff.tar entry of the checkpoint archive at
// location.
func rootfsDiffOf(t *testing.T, location string) []byte {
	t.Helper()
	f, err := os.Open(location)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("archive %s has no rootfs-diff.tar: %v", location, err)
		}
		if strings.TrimPrefix(hdr.Name, "./") == "rootfs-diff.tar" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}
