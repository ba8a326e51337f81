package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestEscapeCheckpointUpperSwap: CheckpointContainer leaves the container
// running while it archives the container's writable layer, so the
// container can change that layer under the archive. This one swaps, in a
// loop, a directory of 2,000 files for a symlink to a host directory
// (whose path a real attacker would guess: /etc, /root, /var/lib/kubelet)
// and a regular file for a FIFO (renameat2's atomic exchange, as any
// container can). Before the fix the archive walked by path:
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
	regAddr, _ := testImage(t)
	image := exchangeImage(t, regAddr)
	d := newDaemon(t, regAddr)
	d.Start()
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
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
	// The same length as the host file's content: a read mixed up
	// between the two is not caught by the tar writer's size check.
	script := `mkdir /d; i=0; while [ $i -lt 2000 ]; do : > /d/f$i; i=$((i+1)); done
printf containerX-checkpoint > /d/zz-secret; ln -s ` + host + ` /s
echo data > /f; mkfifo /p
exchange /f /p &
touch /ready
exec exchange /d /s`
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
			releaseFIFOReaders(d.Root)
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

// releaseFIFOReaders opens every FIFO below root for writing, so that a
// daemon blocked opening one for reading (the old archive writer) returns
// and the daemon can stop.
func releaseFIFOReaders(root string) {
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type()&fs.ModeNamedPipe != 0 {
			if fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
				unix.Close(fd)
			}
		}
		return nil
	})
}

// exchangeSource swaps two paths atomically for ever (renameat2
// RENAME_EXCHANGE): a directory and a symlink, a file and a FIFO. busybox
// has no such applet, and its mv leaves a moment with neither, which
// breaks a racing walk before it reaches anything.
const exchangeSource = `#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/fs.h>
int main(int argc, char **argv) {
	if (argc != 3)
		return 2;
	for (;;)
		if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) {
			perror("renameat2");
			return 1;
		}
}
`

// exchangeImage is busybox with /bin/exchange (exchangeSource, static),
// built here with gcc, or taken from PEAPOD_TEST_EXCHANGE where there is
// no gcc (checkpoint-guest.sh builds it on the host).
func exchangeImage(t *testing.T, regAddr string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command("cp", "-a", testenv.BusyboxRootfs(t), root).CombinedOutput(); err != nil {
		t.Fatalf("copy busybox rootfs: %v: %s", err, out)
	}
	bin := filepath.Join(root, "bin", "exchange")
	if pre := os.Getenv("PEAPOD_TEST_EXCHANGE"); pre != "" {
		if out, err := exec.Command("cp", pre, bin).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v: %s", pre, err, out)
		}
	} else {
		src := filepath.Join(t.TempDir(), "exchange.c")
		if err := os.WriteFile(src, []byte(exchangeSource), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("gcc", "-static", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
			t.Fatalf("build exchange (gcc, libc6-dev): %v: %s", err, out)
		}
	}
	testenv.PushImage(t, regAddr, "e2e-test-images/exchange:it", root, testenv.ImageConfig{Cmd: []string{"sh"}})
	return "registry.k8s.io/e2e-test-images/exchange:it"
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
