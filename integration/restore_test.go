package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criuWorks: `criu check` passes on this node (not on the development
// host's 6.18 kernel: TestCheckpointContainerReason says why).
func criuWorks() bool {
	criu, err := exec.LookPath("criu")
	return err == nil && exec.Command(criu, "check").Run() == nil
}

// TestRestoreFromCheckpoint: a container counting into a file and onto
// stdout is checkpointed and removed; a container created in the same pod
// from the archive and started goes on counting from where the dump
// stopped it (not from 1), its output goes on in its own log, its file
// changes (a file written, an image file removed) are in its root, the
// pod's keeper is its init's parent, and its exit is recorded. Needs a
// node where CRIU works: integration/checkpoint-guest.sh runs it in the
// qemu guest.
func TestRestoreFromCheckpoint(t *testing.T) {
	if !criuWorks() {
		t.Skip("criu check fails on this node; integration/checkpoint-guest.sh runs this test where it passes")
	}
	d, image := readyDaemon(t)
	c := ctx(t)
	logDir := t.TempDir()
	podCfg := podConfig("restore", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId
	counter := startContainer(t, d, pod, podCfg, containerConfig("counter", image, "sh", "-c",
		"rm /etc/shadow; echo written > /marker; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; echo tick $i; sleep 0.2; done"))
	count := func(id string) int {
		t.Helper()
		r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"cat", "/tmp/count"}, Timeout: 10})
		if err != nil || r.ExitCode != 0 {
			t.Fatalf("read the count of %s: %v, %v", id, r, err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(r.Stdout)))
		return n
	}
	waitFor(t, 30*time.Second, "the counter to reach 10", func() bool { return count(counter) >= 10 })

	location := filepath.Join(t.TempDir(), "counter.tar")
	before := count(counter)
	t0 := time.Now()
	if _, err := d.RT.CheckpointContainer(c, &runtimeapi.CheckpointContainerRequest{ContainerId: counter, Location: location}); err != nil {
		t.Fatalf("CheckpointContainer: %v", err)
	}
	dumpTook := time.Since(t0)
	after := count(counter) // the dump lies between before and after
	if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: counter, Timeout: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: counter}); err != nil {
		t.Fatal(err)
	}

	cfg := containerConfig("counter-restored", location)
	cfg.Command = nil // the archive's
	t0 = time.Now()
	created, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("CreateContainer from %s: %v", location, err)
	}
	createTook := time.Since(t0)
	id := created.ContainerId
	t0 = time.Now()
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer (restore): %v", err)
	}
	t.Logf("checkpoint %s, create from the archive %s, start (CRIU restore) %s", dumpTook, createTook, time.Since(t0))

	first := count(id)
	if first < before || first > after+2 {
		t.Errorf("restored counter at %d; the dump was taken between %d and %d", first, before, after)
	}
	waitFor(t, 20*time.Second, "the restored counter to go on", func() bool { return count(id) > first+2 })

	pid := containerPID(t, d, id)
	if keeper, pp := pausePID(c, d, pod), parentPID(t, pid); pp != keeper {
		t.Errorf("restored init %d has parent %d, want the pod's keeper %d", pid, pp, keeper)
	}
	r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "cat /marker; test -e /etc/shadow && echo shadow-back"}, Timeout: 10})
	if err != nil || strings.TrimSpace(string(r.GetStdout())) != "written" {
		t.Errorf("restored root: /marker and /etc/shadow: %q %q, %v; want the file written and the removed one gone", r.GetStdout(), r.GetStderr(), err)
	}
	st, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("restored container: %v, %v", st.GetStatus(), err)
	}

	// Its output: CRI log lines "TIME stdout F tick N" in its own log,
	// the first after the dump's count, not 1.
	logPath := filepath.Join(logDir, "counter-restored.log")
	var ticks []int
	waitFor(t, 10*time.Second, "the restored container's log", func() bool {
		ticks = logTicks(t, logPath)
		return len(ticks) >= 3
	})
	if ticks[0] < before || ticks[0] > after+2 {
		t.Errorf("restored log starts at tick %d; the dump was taken between %d and %d", ticks[0], before, after)
	}
	for i := 1; i < len(ticks); i++ {
		if ticks[i] != ticks[i-1]+1 {
			t.Errorf("restored log ticks %v are not consecutive", ticks)
			break
		}
	}
	t.Logf("counted to %d-%d at the dump; restored counter read %d, its log %v", before, after, first, ticks)

	if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 0}); err != nil {
		t.Fatal(err)
	}
	st, err = d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.Status.ExitCode != 137 {
		t.Errorf("stopped restored container: %v, %v; want exited with 137 (SIGKILL), recorded by the keeper", st.GetStatus(), err)
	}
}

// logTicks is the N of each "tick N" line of a CRI log.
func logTicks(t *testing.T, path string) []int {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var ticks []int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 5 && f[3] == "tick" {
			if n, err := strconv.Atoi(f[4]); err == nil {
				ticks = append(ticks, n)
			}
		}
	}
	return ticks
}

// TestRestoreRefusesBadArchives: CreateContainer from an archive that is
// missing, not an archive, or hostile (names leaving it, links, devices, a
// rootfs diff aiming outside the container) is InvalidArgument naming the
// problem, before CRIU is asked, as is one whose spec binds a host path
// the caller does not give; a well-formed archive then meets the
// node's CRIU (FailedPrecondition here, where it cannot work) or the
// image check. Nothing is created for any of them.
func TestRestoreRefusesBadArchives(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("restore-bad", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	dir := t.TempDir()

	type ent struct {
		hdr  tar.Header
		data string
	}
	file := func(name, data string) ent {
		return ent{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}, data}
	}
	tarOf := func(es ...ent) string {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, e := range es {
			h := e.hdr
			h.ModTime = time.Now()
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			tw.Write([]byte(e.data))
		}
		tw.Close()
		return b.String()
	}
	cfgDump, _ := json.Marshal(map[string]string{"id": "x", "name": "counter", "rootfsImageName": image})
	wellFormed := func(diff string, extra ...ent) []ent {
		return append([]ent{
			file("config.dump", string(cfgDump)),
			file("spec.dump", `{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"}}`),
			file("deleted.files", `[]`),
			file("rootfs-diff.tar", diff),
			file("checkpoint/inventory.img", "inv"),
			file("checkpoint/descriptors.json", `["/dev/null","pipe:[1]","pipe:[2]"]`),
		}, extra...)
	}
	write := func(name string, es ...ent) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(tarOf(es...)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	junk := filepath.Join(dir, "junk.tar")
	os.WriteFile(junk, bytes.Repeat([]byte("not a tar "), 300), 0o600)

	for _, tc := range []struct{ what, path, msg string }{
		{"missing", filepath.Join(dir, "missing.tar"), "no such file"},
		{"a directory", dir, "not a regular file"},
		{"not a tar", junk, "invalid checkpoint archive"},
		{"name leaving the archive", write("dotdot.tar", wellFormed(tarOf(), file("../../etc/cron.d/evil", "x"))...), "not a clean path"},
		{"absolute name", write("abs.tar", wellFormed(tarOf(), file("/etc/cron.d/evil", "x"))...), "absolute name"},
		{"symlink", write("symlink.tar", wellFormed(tarOf(), ent{hdr: tar.Header{Name: "checkpoint/pages-1.img", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}})...), "is a symlink"},
		{"device", write("device.tar", wellFormed(tarOf(), ent{hdr: tar.Header{Name: "checkpoint/mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1}})...), "device node"},
		{"diff leaving the root", write("diffout.tar", wellFormed(tarOf(file("../../../etc/cron.d/evil", "x")))...), "rootfs-diff.tar: entry"},
		{"diff hard link out", write("difflink.tar", wellFormed(tarOf(ent{hdr: tar.Header{Name: "x", Typeflag: tar.TypeLink, Linkname: "../../../../etc/shadow"}}))...), "outside the container's root"},
		{"diff device", write("diffdev.tar", wellFormed(tarOf(ent{hdr: tar.Header{Name: "dev/kmem", Typeflag: tar.TypeBlock, Devmajor: 8}}))...), "device node"},
		{"no CRIU images", write("noimages.tar", wellFormed(tarOf())[:4]...), "no CRIU images"},
		{"spec.dump binding the host's /", write("hostroot.tar", append(wellFormed(tarOf())[:1], append([]ent{file("spec.dump", `{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"mounts":[{"destination":"/hostroot","type":"bind","source":"/","options":["rbind","rw"]}]}`)}, wellFormed(tarOf())[2:]...)...)...), "/hostroot (from /)"},
		{"deleted.files naming the root", write("delroot.tar", append(wellFormed(tarOf())[:2], append([]ent{file("deleted.files", `["/"]`)}, wellFormed(tarOf())[3:]...)...)...), "not a file in the container"},
	} {
		cfg := containerConfig("restored", tc.path)
		_, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if grpcCode(err) != "InvalidArgument" || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: CreateContainer = %v, want InvalidArgument naming %q", tc.what, err, tc.msg)
		}
	}

	// Well-formed: the node decides.
	ok := write("ok.tar", wellFormed(tarOf(file("tmp/count", "7\n")))...)
	_, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("restored", ok), SandboxConfig: podCfg})
	if criuWorks() {
		// CRIU works: created (the images are fake; StartContainer would fail).
		if err != nil {
			t.Errorf("well-formed archive: CreateContainer = %v", err)
		}
	} else if grpcCode(err) != "FailedPrecondition" || !strings.Contains(err.Error(), "criu") {
		t.Errorf("well-formed archive where CRIU cannot work: CreateContainer = %v, want FailedPrecondition naming criu", err)
	} else {
		t.Logf("well-formed archive on this node: %v", err)
		list, err := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{})
		if err != nil || len(list.Containers) != 0 {
			t.Errorf("refused restores left containers: %v, %v", list.GetContainers(), err)
		}
		if left, _ := os.ReadDir(filepath.Join(d.State, "containers")); len(left) != 0 {
			t.Errorf("refused restores left bundles: %v", left)
		}
	}
}

// TestRestoreImagesCheckedAtStart: CRIU images that would restore more
// privilege than the spec gives are refused by StartContainer itself, before
// anything runs, whether or not CRIU works on the node. The daemon checks
// them right before it asks the keeper for the start (the runner, which
// restores them, no longer links the checker). Forged here by writing an
// old-layout credentials image into a created container's bundle, as a
// spec changed after the create's check would make them.
func TestRestoreImagesCheckedAtStart(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("restore-start", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	created, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod,
		Config: containerConfig("forged", image, "sleep", "3600"), SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	id := created.ContainerId
	images := filepath.Join(d.State, "containers", id, "checkpoint")
	if err := os.Mkdir(images, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(images, "creds-1.img"), []byte("forged"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: id})
	if err == nil || !strings.Contains(err.Error(), "credentials outside the core images are not restored") {
		t.Fatalf("StartContainer with forged CRIU images = %v, want the images refused", err)
	}
	st, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Status; s.State != runtimeapi.ContainerState_CONTAINER_EXITED || s.Reason != "StartError" {
		t.Fatalf("refused start left the container %v reason %q", s.State, s.Reason)
	}
}
