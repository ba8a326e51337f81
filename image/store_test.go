package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peapod-cri/peapod/integration/testenv"
	"go.podman.io/storage/pkg/reexec"
)

func TestMain(m *testing.M) {
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}

// openTestStore opens a store in a fresh temp dir whose registries.conf
// mirrors registry.k8s.io and docker.io to the local registry at addr.
// It checks at cleanup that Close left no mounts under the temp dir.
func openTestStore(t *testing.T, addr string) (*Store, string) {
	t.Helper()
	return openTestStoreWith(t, addr, nil)
}

// openTestStoreWith is openTestStore with the Config adjusted by mod
// (dir is the test's temp dir; Root and RunRoot are under it).
func openTestStoreWith(t testing.TB, addr string, mod func(dir string, c *Config)) (*Store, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (overlay storage)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`
unqualified-search-registries = ["docker.io"]

[[registry]]
location = "registry.k8s.io"
[[registry.mirror]]
location = %[1]q
insecure = true

[[registry]]
location = "docker.io"
[[registry.mirror]]
location = %[1]q
insecure = true

[[registry]]
location = %[1]q
insecure = true
`, addr)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Root: filepath.Join(dir, "root"), RunRoot: filepath.Join(dir, "run"), RegistriesConf: conf}
	if mod != nil {
		mod(dir, &cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if m := mountsUnder(t, dir); len(m) > 0 {
			t.Errorf("mounts left under %s after Close: %v", dir, m)
		}
	})
	return s, dir
}

func mountsUnder(t testing.TB, dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestStoreEndToEnd(t *testing.T) {
	ctx := context.Background()
	addr := testenv.StartRegistry(t)
	rootfs := testenv.BusyboxRootfs(t)
	cfg := testenv.ImageConfig{
		Cmd: []string{"sh"}, Env: []string{"FOO=bar"}, WorkingDir: "/tmp", User: "33",
		Labels: map[string]string{"peapod.test": "yes"}, StopSignal: "SIGQUIT",
	}
	mirroredDigest := testenv.PushImage(t, addr, "e2e-test-images/busybox:1.29", rootfs, cfg)
	libDigest := testenv.PushImage(t, addr, "library/busybox:1.0", rootfs, cfg)
	s, dir := openTestStore(t, addr)

	// Pull through the registry.k8s.io mirror.
	const k8sRef = "registry.k8s.io/e2e-test-images/busybox:1.29"
	img, err := s.Pull(ctx, k8sRef, nil)
	if err != nil {
		t.Fatalf("Pull %s: %v", k8sRef, err)
	}
	if !contains(img.RepoTags, k8sRef) {
		t.Errorf("RepoTags = %v, want %s", img.RepoTags, k8sRef)
	}
	wantRepoDigest := "registry.k8s.io/e2e-test-images/busybox@" + mirroredDigest
	if !contains(img.RepoDigests, wantRepoDigest) {
		t.Errorf("RepoDigests = %v, want %s", img.RepoDigests, wantRepoDigest)
	}
	if !strings.HasPrefix(img.ID, "sha256:") || len(img.ID) != 71 {
		t.Errorf("ID = %q", img.ID)
	}
	if img.User != "33" || img.WorkingDir != "/tmp" || strings.Join(img.Cmd, " ") != "sh" ||
		img.Labels["peapod.test"] != "yes" || img.StopSignal != "SIGQUIT" || !contains(img.Env, "FOO=bar") ||
		img.Size == 0 || len(img.ConfigJSON) == 0 {
		t.Errorf("image = %+v", img)
	}

	// Short name through the docker.io mirror: same content, same image.
	img2, err := s.Pull(ctx, "busybox:1.0", nil)
	if err != nil {
		t.Fatalf("Pull busybox:1.0: %v", err)
	}
	if img2.ID != img.ID || !contains(img2.RepoTags, "docker.io/library/busybox:1.0") || !contains(img2.RepoTags, k8sRef) {
		t.Errorf("second pull: %+v (first ID %s)", img2, img.ID)
	}
	if libDigest != mirroredDigest {
		t.Errorf("same content, different manifests: %s %s", libDigest, mirroredDigest)
	}

	// Status by every kind of reference.
	hex := strings.TrimPrefix(img.ID, "sha256:")
	for _, ref := range []string{
		k8sRef, img.ID, hex, hex[:12], "busybox:1.0", "docker.io/library/busybox:1.0",
		wantRepoDigest, "docker.io/library/busybox@" + mirroredDigest,
	} {
		got, err := s.Status(ctx, ref)
		if err != nil || got.ID != img.ID {
			t.Errorf("Status(%q) = %v, %v", ref, got, err)
		}
	}
	for _, ref := range []string{"busybox", "registry.k8s.io/e2e-test-images/busybox:9.9", "sha256:" + strings.Repeat("0", 64), "0000000"} {
		if _, err := s.Status(ctx, ref); !errors.Is(err, ErrNotFound) {
			t.Errorf("Status(%q) err = %v, want ErrNotFound", ref, err)
		}
	}

	// Pull of a missing tag (through the mirror, upstream unreachable) and of a missing repo.
	for _, ref := range []string{"registry.k8s.io/e2e-test-images/busybox:9.9", addr + "/nope/nothing:1"} {
		_, err := s.Pull(ctx, ref, nil)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ref) {
			t.Errorf("Pull(%q) err = %v, want ErrNotFound naming it", ref, err)
		}
		t.Logf("Pull(%q): %v", ref, err)
	}

	// Pull by digest directly from the local registry.
	byDigest := addr + "/library/busybox@" + libDigest
	img3, err := s.Pull(ctx, byDigest, nil)
	if err != nil {
		t.Fatalf("Pull %s: %v", byDigest, err)
	}
	if img3.ID != img.ID || !contains(img3.RepoDigests, byDigest) {
		t.Errorf("pull by digest: %+v", img3)
	}
	if got, err := s.Status(ctx, byDigest); err != nil || got.ID != img.ID {
		t.Errorf("Status(%q) = %v, %v", byDigest, got, err)
	}

	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != img.ID {
		t.Fatalf("List = %v, %v", list, err)
	}

	// Rootfs.
	const cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	mp, err := s.CreateRootfs(ctx, cid, img.ID)
	if err != nil {
		t.Fatalf("CreateRootfs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mp, "bin/busybox")); err != nil {
		t.Fatalf("rootfs lacks busybox: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mp, "tmp/written"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if mp2, err := s.CreateRootfs(ctx, cid, img.ID); err != nil || mp2 != mp {
		t.Fatalf("CreateRootfs again = %q, %v; want %q", mp2, err, mp)
	}
	if _, err := os.Stat(filepath.Join(mp, "tmp/written")); err != nil {
		t.Fatalf("rootfs not reused: %v", err)
	}
	if !contains(mountsUnder(t, dir), mp) {
		t.Errorf("%s not in mountinfo", mp)
	}
	if _, err := s.CreateRootfs(ctx, "other", "registry.k8s.io/nope:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("CreateRootfs of a missing image: %v", err)
	}
	mountpoint, used, inodes, err := s.FsInfo()
	if err != nil || !strings.HasPrefix(mountpoint, dir) || used == 0 || inodes == 0 {
		t.Errorf("FsInfo = %q %d %d %v", mountpoint, used, inodes, err)
	}

	// An image in use is not removed (by ID); untagging is fine.
	if err := s.Remove(ctx, img.ID); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), hex) {
		t.Errorf("Remove of an image in use: %v", err)
	}
	if err := s.RemoveRootfs(ctx, cid); err != nil {
		t.Fatalf("RemoveRootfs: %v", err)
	}
	if contains(mountsUnder(t, dir), mp) {
		t.Errorf("%s still mounted after RemoveRootfs", mp)
	}
	if err := s.RemoveRootfs(ctx, cid); err != nil {
		t.Errorf("RemoveRootfs again: %v", err)
	}

	// Remove one tag of several, then the image.
	if err := s.Remove(ctx, "busybox:1.0"); err != nil {
		t.Fatalf("Remove tag: %v", err)
	}
	got, err := s.Status(ctx, img.ID)
	if err != nil || contains(got.RepoTags, "docker.io/library/busybox:1.0") || !contains(got.RepoTags, k8sRef) {
		t.Fatalf("after untag: %+v, %v", got, err)
	}
	if _, err := s.Status(ctx, "busybox:1.0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed tag still resolves: %v", err)
	}
	if err := s.Remove(ctx, k8sRef); err != nil {
		t.Fatalf("Remove last tag: %v", err)
	}
	if _, err := s.Status(ctx, img.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("image still there: %v", err)
	}
	for _, ref := range []string{k8sRef, img.ID, "never/there:1"} {
		if err := s.Remove(ctx, ref); err != nil {
			t.Errorf("Remove(%q) of an absent image: %v", ref, err)
		}
	}
	if list, err := s.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List after removal = %v, %v", list, err)
	}

	// Simultaneous removals of one image all succeed (critest does this).
	again, err := s.Pull(ctx, k8sRef, nil)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 5)
	for i := 0; i < 5; i++ {
		go func() { errs <- s.Remove(ctx, again.ID) }()
	}
	for i := 0; i < 5; i++ {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Remove: %v", err)
		}
	}
}

// A store reopened on the same root keeps its images; a second rootfs
// mounted at Close time is unmounted by Close.
func TestReopenAndCloseUnmounts(t *testing.T) {
	ctx := context.Background()
	addr := testenv.StartRegistry(t)
	testenv.PushImage(t, addr, "library/busybox:latest", testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	s, dir := openTestStore(t, addr)
	img, err := s.Pull(ctx, "busybox", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(img.RepoTags, "docker.io/library/busybox:latest") {
		t.Errorf("RepoTags = %v", img.RepoTags)
	}
	mp, err := s.CreateRootfs(ctx, "c1", "busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if contains(mountsUnder(t, dir), mp) {
		t.Fatalf("%s still mounted after Close", mp)
	}
	s2, err := Open(Config{Root: filepath.Join(dir, "root"), RunRoot: filepath.Join(dir, "run"), RegistriesConf: filepath.Join(dir, "registries.conf")})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.Status(ctx, "docker.io/library/busybox:latest"); err != nil || got.ID != img.ID {
		t.Fatalf("after reopen: %v, %v", got, err)
	}
	mp2, err := s2.CreateRootfs(ctx, "c1", img.ID)
	if err != nil || mp2 != mp {
		t.Fatalf("CreateRootfs after reopen = %q, %v (was %q)", mp2, err, mp)
	}
	if err := s2.RemoveRootfs(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
}

// A store with no registries config opens on a fresh root (the daemon's
// defaults on a new machine) and resolves short names to docker.io.
func TestOpenWithoutRegistriesConf(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (overlay storage)")
	}
	dir := t.TempDir()
	s, err := Open(Config{Root: filepath.Join(dir, "root"), RunRoot: filepath.Join(dir, "run")})
	if err != nil {
		t.Fatalf("Open without registries config: %v", err)
	}
	defer s.Close()
	if _, err := s.Status(context.Background(), "busybox"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status of an absent short name: %v, want ErrNotFound", err)
	}
}

// By default a container's records go to c/storage's volatile files,
// written without fsync; PEAPOD_DURABLE_ROOTFS=1 (make bench) puts them
// in containers.json and layers.json, which c/storage syncs.
func TestDurableRootfsRecords(t *testing.T) {
	ctx := context.Background()
	addr := testenv.StartRegistry(t)
	testenv.PushImage(t, addr, "library/busybox:latest", testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	s, dir := openTestStore(t, addr)
	if _, err := s.Pull(ctx, "busybox", nil); err != nil {
		t.Fatal(err)
	}
	// The records as c/storage writes them, under the graph root, or for
	// volatile ones possibly under the run root.
	records := func(name string) string {
		var all []byte
		for _, d := range []string{"root/storage", "run/storage"} {
			data, _ := os.ReadFile(filepath.Join(dir, d, "overlay-containers", name))
			all = append(all, data...)
		}
		return string(all)
	}
	defer func() { durableRootfs = false }()
	for _, durable := range []bool{false, true} {
		durableRootfs = durable
		id := fmt.Sprintf("durable-%v", durable)
		if _, err := s.CreateRootfs(ctx, id, "busybox"); err != nil {
			t.Fatal(err)
		}
		stable, volatile := strings.Contains(records("containers.json"), id), strings.Contains(records("volatile-containers.json"), id)
		if stable != durable || volatile == durable {
			t.Errorf("durable=%v: record in containers.json %v, in volatile-containers.json %v", durable, stable, volatile)
		}
		if err := s.RemoveRootfs(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}
