package image

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// layerCount is the number of layers in the store's storage.
func layerCount(t *testing.T, s *Store) int {
	t.Helper()
	l, err := s.store.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return len(l)
}

// assertNothingLeft checks that a failed pull of ref left no image, no
// layer and no temporary file.
func assertNothingLeft(t *testing.T, s *Store, ref string, layersBefore int) {
	t.Helper()
	if img, err := s.Status(context.Background(), ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("after a failed pull, Status(%q) = %v, %v; want ErrNotFound", ref, img, err)
	}
	if n := layerCount(t, s); n != layersBefore {
		t.Errorf("after a failed pull of %s: %d layers, want %d", ref, n, layersBefore)
	}
	if tmp, _ := os.ReadDir(s.systemContext().BigFilesTemporaryDir); len(tmp) > 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

// Credentials from the request, from the auth file, none and wrong ones.
func TestPullAuth(t *testing.T) {
	ctx := context.Background()
	const user, pass = "kube", "s3cret"
	addr := testenv.StartRegistryWithAuth(t, user, pass)
	img, err := testenv.BuildImage(testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Push(t, addr+"/private/busybox:1", img, user, pass)
	ref := addr + "/private/busybox:1"

	var authFile string
	s, _ := openTestStoreWith(t, addr, func(dir string, c *Config) {
		authFile = filepath.Join(dir, "auth.json")
		c.AuthFile = authFile
	})
	for _, tc := range []struct {
		name string
		auth *Auth
	}{
		{"anonymous", nil},
		{"wrong password", &Auth{Username: user, Password: "nope"}},
		{"unknown user", &Auth{Username: "eve", Password: pass}},
	} {
		_, err := s.Pull(ctx, ref, tc.auth)
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), ref) {
			t.Errorf("%s: Pull err = %v, want ErrUnauthorized naming %s", tc.name, err, ref)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	assertNothingLeft(t, s, ref, 0)

	if _, err := s.Pull(ctx, ref, &Auth{Username: user, Password: pass}); err != nil {
		t.Fatalf("Pull with the request's credentials: %v", err)
	}
	if err := s.Remove(ctx, ref); err != nil {
		t.Fatal(err)
	}

	// The node's auth file: used when the request brings no credentials,
	// re-read at each pull.
	authJSON := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, addr, basic(user, pass))
	if err := os.WriteFile(authFile, []byte(authJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, ref, nil); err != nil {
		t.Fatalf("Pull with the auth file's credentials: %v", err)
	}
	// Request credentials win over the file's.
	if _, err := s.Pull(ctx, ref, &Auth{Username: user, Password: "nope"}); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("wrong request credentials with a good auth file: %v", err)
	}
}

func basic(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// A registry that stops sending mid-blob fails the pull after
// PullProgressTimeout; one that is slow but keeps sending is never cut.
func TestPullProgressTimeout(t *testing.T) {
	ctx := context.Background()
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartProxy(t, reg)
	testenv.PushImage(t, reg, "stall/busybox:1", testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	const timeout = 600 * time.Millisecond
	s, _ := openTestStoreWith(t, proxy.Addr, func(_ string, c *Config) { c.PullProgressTimeout = timeout })
	ref := proxy.Addr + "/stall/busybox:1"

	proxy.SetMode(testenv.StallBlobs)
	start := time.Now()
	_, err := s.Pull(ctx, ref, nil)
	took := time.Since(start)
	if !errors.Is(err, ErrPullStalled) || !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), timeout.String()) {
		t.Fatalf("stalled pull: err = %v; want ErrPullStalled naming %s and %s", err, ref, timeout)
	}
	if took > timeout+3*time.Second {
		t.Errorf("stalled pull took %s to fail, timeout %s", took, timeout)
	}
	t.Logf("stalled pull failed after %s: %v", took.Round(time.Millisecond), err)
	assertNothingLeft(t, s, ref, 0)

	// Each blob takes 8*SlowGap (> timeout) but is never silent that long.
	if 8*testenv.SlowGap <= timeout || testenv.SlowGap >= timeout/2 {
		t.Fatalf("SlowGap %s does not test timeout %s", testenv.SlowGap, timeout)
	}
	proxy.SetMode(testenv.SlowBlobs)
	start = time.Now()
	if _, err := s.Pull(ctx, ref, nil); err != nil {
		t.Fatalf("slow pull: %v", err)
	}
	if took := time.Since(start); took < 8*testenv.SlowGap {
		t.Errorf("slow pull took only %s; the proxy did not slow it", took)
	}
}

// Ten simultaneous pulls of one image fetch each blob once, and the layers
// of the image are fetched in parallel.
func TestConcurrentPullsShared(t *testing.T) {
	ctx := context.Background()
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartProxy(t, reg)
	img, err := testenv.RandomImage(5, 256<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Push(t, reg+"/shared/layers5:1", img, "", "")
	layers, _ := img.Layers()
	s, _ := openTestStore(t, proxy.Addr)
	ref := proxy.Addr + "/shared/layers5:1"

	const n = 10
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.Pull(ctx, ref, nil)
			errs[i] = err
			if err == nil {
				ids[i] = got.ID
			}
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("pull %d: %q, %v (first: %q)", i, ids[i], errs[i], ids[0])
		}
	}
	// 5 layers + the config, each once.
	if got, want := proxy.BlobGets(), len(layers)+1; got != want {
		t.Errorf("%d simultaneous pulls made %d blob downloads, want %d", n, got, want)
	}
	if p := proxy.MaxParallelBlobs(); p < 2 {
		t.Errorf("at most %d blob downloads at once; layers are not fetched in parallel", p)
	}
	t.Logf("blob downloads: %d, at most %d at once", proxy.BlobGets(), proxy.MaxParallelBlobs())

	// A waiter that gives up does not fail the others.
	if err := s.Remove(ctx, ref); err != nil {
		t.Fatal(err)
	}
	proxy.SetMode(testenv.SlowBlobs)
	impatient, cancel := context.WithTimeout(ctx, 2*testenv.SlowGap)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := s.Pull(ctx, ref, nil); done <- err }()
	if _, err := s.Pull(impatient, ref, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("impatient pull: %v, want DeadlineExceeded", err)
	}
	if err := <-done; err != nil {
		t.Errorf("patient pull failed with the impatient one: %v", err)
	}
}

// Each way a pull can fail gives its own sentinel and a message naming what
// failed, and leaves nothing behind.
func TestPullErrors(t *testing.T) {
	ctx := context.Background()
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartProxy(t, reg)
	rootfs := testenv.BusyboxRootfs(t)
	dgst := testenv.PushImage(t, reg, "errs/busybox:1", rootfs, testenv.ImageConfig{Cmd: []string{"sh"}})
	s, _ := openTestStore(t, proxy.Addr)
	base := proxy.Addr + "/errs/busybox"
	bb, err := testenv.BuildImage(rootfs, testenv.ImageConfig{Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := bb.Layers()
	ld, _ := layers[0].Digest()
	layerDigest := ld.String()
	missingDigest := "sha256:" + strings.Repeat("ab", 32)
	refused := fmt.Sprintf("127.0.0.1:%d/x/y:1", closedPort(t))

	for _, tc := range []struct {
		name, ref string
		mode      testenv.ProxyMode
		want      error
		mention   string
	}{
		{"unknown host", "registry.invalid/x/y:1", testenv.PassThrough, ErrRegistryUnavailable, "registry.invalid"},
		{"connection refused", refused, testenv.PassThrough, ErrRegistryUnavailable, refused},
		{"missing tag", base + ":nope", testenv.PassThrough, ErrNotFound, base + ":nope"},
		{"missing repository", proxy.Addr + "/errs/none:1", testenv.PassThrough, ErrNotFound, "errs/none:1"},
		{"missing digest", base + "@" + missingDigest, testenv.PassThrough, ErrNotFound, missingDigest},
		{"corrupt layer", base + ":1", testenv.CorruptBlobs, ErrCorrupt, layerDigest},
	} {
		proxy.SetMode(tc.mode)
		start := time.Now()
		_, err := s.Pull(ctx, tc.ref, nil)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s: Pull(%q) = %v; want %v naming %q", tc.name, tc.ref, err, tc.want, tc.mention)
		}
		t.Logf("%s (%s): %v", tc.name, time.Since(start).Round(time.Millisecond), err)
		assertNothingLeft(t, s, tc.ref, 0)
	}
	proxy.SetMode(testenv.PassThrough)
	if _, err := s.Pull(ctx, base+"@"+dgst, nil); err != nil {
		t.Fatalf("pull after the failures: %v", err)
	}

	// The last of five layers is corrupt: the layers committed before it
	// are removed; the busybox image's layers stay.
	img5, err := testenv.RandomImage(5, 64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Push(t, reg+"/errs/layers5:1", img5, "", "")
	layers5, _ := img5.Layers()
	last, _ := layers5[4].Digest()
	proxy.SetModeFor(testenv.StallBlobs, last.String())
	before := layerCount(t, s)
	ref5 := proxy.Addr + "/errs/layers5:1"
	s.progressTimeout = 500 * time.Millisecond
	if _, err := s.Pull(ctx, ref5, nil); !errors.Is(err, ErrPullStalled) {
		t.Fatalf("pull with a stalled last layer: %v", err)
	}
	assertNothingLeft(t, s, ref5, before)
	if _, err := s.Status(ctx, base+"@"+dgst); err != nil {
		t.Errorf("the other image suffered: %v", err)
	}
}

func closedPort(t *testing.T) int {
	// A port just freed by the kernel: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// A full image filesystem gives ErrNoSpace, and the layers that fit are
// removed.
func TestPullDiskFull(t *testing.T) {
	ctx := context.Background()
	reg := testenv.StartRegistry(t)
	img, err := testenv.RandomImage(4, 2<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Push(t, reg+"/big/layers4:1", img, "", "")
	s, _ := openTestStoreWith(t, reg, func(dir string, c *Config) {
		// 5 MiB: room for the storage metadata and about two layers. Not
		// under dir: the store's cleanup checks dir has no mounts left
		// before this one is unmounted.
		c.Root = filepath.Join(t.TempDir(), "root")
		if err := os.MkdirAll(c.Root, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", c.Root, "tmpfs", 0, "size=5m"); err != nil {
			t.Skipf("mount tmpfs: %v", err)
		}
		root := c.Root
		t.Cleanup(func() {
			if err := syscall.Unmount(root, 0); err != nil {
				t.Errorf("unmount %s: %v", root, err)
			}
		})
	})
	ref := reg + "/big/layers4:1"
	_, err = s.Pull(ctx, ref, nil)
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), ref) {
		t.Fatalf("Pull on a full disk = %v; want ErrNoSpace naming %s", err, ref)
	}
	t.Logf("disk full: %v", err)
	assertNothingLeft(t, s, ref, 0)
}

// Pinned images, STOPSIGNAL and exposed volumes are reported.
func TestImageMetadata(t *testing.T) {
	ctx := context.Background()
	reg := testenv.StartRegistry(t)
	rootfs := testenv.BusyboxRootfs(t)
	testenv.PushImage(t, reg, "meta/pinned:1", rootfs, testenv.ImageConfig{
		Cmd: []string{"sh"}, StopSignal: "SIGQUIT", Volumes: []string{"/var/lib/data", "/cache"},
	})
	testenv.PushImage(t, reg, "meta/plain:1", rootfs, testenv.ImageConfig{Cmd: []string{"true"}})
	s, _ := openTestStoreWith(t, reg, func(_ string, c *Config) { c.PinnedImages = []string{reg + "/meta/pinned:1"} })

	pinned, err := s.Pull(ctx, reg+"/meta/pinned:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := s.Pull(ctx, reg+"/meta/plain:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !pinned.Pinned || plain.Pinned {
		t.Errorf("Pinned: %v and %v, want true and false", pinned.Pinned, plain.Pinned)
	}
	if pinned.StopSignal != "SIGQUIT" || strings.Join(pinned.Volumes, ",") != "/cache,/var/lib/data" {
		t.Errorf("StopSignal %q, Volumes %v", pinned.StopSignal, pinned.Volumes)
	}
	if plain.StopSignal != "" || len(plain.Volumes) != 0 {
		t.Errorf("plain image: StopSignal %q, Volumes %v", plain.StopSignal, plain.Volumes)
	}
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range list {
		if img.Pinned != (img.ID == pinned.ID) {
			t.Errorf("List: %s Pinned = %v", img.ID, img.Pinned)
		}
	}
	// Pinned by ID.
	s.pinned[plain.ID] = true
	if got, err := s.Status(ctx, plain.ID); err != nil || !got.Pinned {
		t.Errorf("pinned by ID: %v, %v", got, err)
	}
	if _, err := Open(Config{Root: t.TempDir(), RunRoot: t.TempDir(), PinnedImages: []string{"Not A Ref"}}); err == nil {
		t.Error("Open accepted an invalid pinned image")
	}
}

// FsInfo's numbers are those du and find give for the storage root.
func TestFsInfoMatchesDu(t *testing.T) {
	ctx := context.Background()
	reg := testenv.StartRegistry(t)
	testenv.PushImage(t, reg, "fs/busybox:1", testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	s, _ := openTestStore(t, reg)
	_, used0, inodes0, err := s.FsInfo()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, reg+"/fs/busybox:1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRootfs(ctx, "fs-c1", reg+"/fs/busybox:1"); err != nil {
		t.Fatal(err)
	}
	defer s.RemoveRootfs(ctx, "fs-c1")
	mnt, used, inodes, err := s.FsInfo()
	if err != nil {
		t.Fatal(err)
	}
	if used <= used0+1<<20 || inodes <= inodes0+50 {
		t.Errorf("after a pull: %d bytes %d inodes, before %d %d", used, inodes, used0, inodes0)
	}
	// du -x: same filesystem only (the mounted rootfs is not counted twice),
	// hard links once.
	out, err := exec.Command("du", "-sx", "--block-size=1", mnt).Output()
	if err != nil {
		t.Fatal(err)
	}
	duBytes, _ := strconv.ParseUint(strings.Fields(string(out))[0], 10, 64)
	out, err = exec.Command("du", "-sx", "--inodes", mnt).Output()
	if err != nil {
		t.Fatal(err)
	}
	duInodes, _ := strconv.ParseUint(strings.Fields(string(out))[0], 10, 64)
	if used != duBytes || inodes != duInodes {
		t.Errorf("FsInfo(%s) = %d bytes %d inodes; du says %d bytes %d inodes", mnt, used, inodes, duBytes, duInodes)
	}
	t.Logf("FsInfo(%s) = %d bytes, %d inodes", mnt, used, inodes)
}
