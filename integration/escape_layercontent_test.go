package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// wideFiles is how many files the hostile layer puts in one directory, and
// its second layer whites out (PEAPOD_TEST_WIDE_FILES for a scaling run).
var wideFiles = func() int {
	if n, err := strconv.Atoi(os.Getenv("PEAPOD_TEST_WIDE_FILES")); err == nil && n > 0 {
		return n
	}
	return 50_000 // 200,000 takes ~40 s on an idle machine here, 100,000 34 s at load 7: too close to the bound under load
}()

// hostileLayer is a layer built by f, gzip-compressed at the fastest level.
func hostileLayer(t *testing.T, f func(tw *tar.Writer) error) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := f(tw); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestEscapeLayerContent: image layers a registry controls, with 50,000
// files in one directory (200,000 with PEAPOD_TEST_WIDE_FILES), names made of control bytes, and a second layer whiting out
// all 200,000 files. The pull must end with the image stored, in bounded
// daemon memory; a container of it must see the whiteouts applied and
// start; RemoveImage and ImageFsInfo must answer.
func TestEscapeLayerContent(t *testing.T) {
	reg := testenv.StartRegistry(t)
	base, err := testenv.BuildImage(testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	epoch := time.Unix(1700000000, 0)
	hdr := func(name string, typ byte) *tar.Header {
		mode := int64(0o644)
		if typ == tar.TypeDir {
			mode = 0o755
		}
		return &tar.Header{Name: name, Typeflag: typ, Mode: mode, ModTime: epoch, Format: tar.FormatPAX}
	}
	wide := hostileLayer(t, func(tw *tar.Writer) error {
		if err := tw.WriteHeader(hdr("wide/", tar.TypeDir)); err != nil {
			return err
		}
		for i := 0; i < wideFiles; i++ {
			if err := tw.WriteHeader(hdr(fmt.Sprintf("wide/f%06d", i), tar.TypeReg)); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(hdr("ctl/", tar.TypeDir)); err != nil {
			return err
		}
		for _, n := range []string{"\x01\x02\x03", "line\nbreak", "tab\there", "\x1b[31mred", "del\x7f", "cr\rlf", " lead", "trail "} {
			if err := tw.WriteHeader(hdr("ctl/"+n, tar.TypeReg)); err != nil {
				return err
			}
		}
		return nil
	})
	whiteouts := hostileLayer(t, func(tw *tar.Writer) error {
		for i := 0; i < wideFiles; i++ {
			if err := tw.WriteHeader(hdr(fmt.Sprintf("wide/.wh.f%06d", i), tar.TypeReg)); err != nil {
				return err
			}
		}
		return nil
	})
	img, err := mutate.AppendLayers(base, wide, whiteouts)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg + "/hostile/layers:1"
	testenv.Push(t, ref, img, "", "")

	d := newDaemon(t, reg)
	d.Start()
	pid := d.Cmd.Process.Pid
	before := statusKBQuiet(pid, "VmRSS")
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if v := statusKBQuiet(pid, "VmRSS"); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t0 := time.Now()
	pctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, err = d.Img.PullImage(pctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	pullTook := time.Since(t0)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("pull of the hostile layers: %v", err)
	}
	t.Logf("pull of %d files in one directory, control-byte names and %d whiteouts: %v; daemon resident %d KiB before, %d KiB at the peak",
		wideFiles, wideFiles, pullTook.Round(time.Millisecond), before, peak.Load())
	if peak.Load()-before > 256<<10 {
		t.Errorf("the daemon grew by %d KiB pulling the layers", peak.Load()-before)
	}

	podCfg := podConfig("layercontent", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	id := startContainer(t, d, pod, podCfg, containerConfig("c", ref, "sleep", "1000"))
	out, code := execAll(t, d, id, "sh", "-c", "ls /wide | wc -l; ls /ctl | wc -l")
	t.Logf("in the container (%d): %q", code, out)
	if f := strings.Fields(out); code != 0 || len(f) < 2 || f[0] != "0" || f[1] != "8" {
		t.Errorf("the container sees %q (exit %d), want 0 files left in /wide, 8 in /ctl", out, code)
	}
	if _, err := d.RT.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	fs, err := d.Img.ImageFsInfo(ctx(t), &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		t.Fatalf("ImageFsInfo: %v", err)
	}
	fsTook := time.Since(t1)
	t1 = time.Now()
	if _, err := d.Img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatalf("RemoveImage: %v", err)
	}
	t.Logf("ImageFsInfo %v (%d inodes), RemoveImage %v", fsTook.Round(time.Millisecond),
		fs.GetImageFilesystems()[0].GetInodesUsed().GetValue(), time.Since(t1).Round(time.Millisecond))
	if m := mountsUnder(filepath.Join(d.Dir)); len(m) > 1 {
		t.Logf("mounts under the daemon's directory: %v", m)
	}
}

// TestEscapeLayerDeepPath: a layer whose directory chain is deep (1,400
// levels, a 4,205-byte path, past PATH_MAX, by default). storage's unpack
// resolves each entry's parent with securejoin, one lstat of a growing
// path per component: time cubic in the depth, all of it in the daemon.
// It is a known residual (docs/security.md, session 14), so the test runs
// only with PEAPOD_TEST_DEEP_LAYER=<levels>, and reports how long the
// pull took; it fails if the pull took longer than 60 s, left a staging
// directory behind or stopped the next pull.
func TestEscapeLayerDeepPath(t *testing.T) {
	levels, err := strconv.Atoi(os.Getenv("PEAPOD_TEST_DEEP_LAYER"))
	if err != nil || levels <= 0 {
		t.Skip("a known residual: set PEAPOD_TEST_DEEP_LAYER=<levels> (1400: past PATH_MAX) to run it")
	}
	reg := testenv.StartRegistry(t)
	base, err := testenv.BuildImage(testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	epoch := time.Unix(1700000000, 0)
	deepLayer := hostileLayer(t, func(tw *tar.Writer) error {
		deep := "deep/"
		for i := 0; i <= levels; i++ {
			if err := tw.WriteHeader(&tar.Header{Name: deep, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return err
			}
			deep += "dd/"
		}
		return tw.WriteHeader(&tar.Header{Name: deep + "bottom", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX})
	})
	img, err := mutate.AppendLayers(base, deepLayer)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg + "/hostile/deep:1"
	testenv.Push(t, ref, img, "", "")
	testenv.Push(t, reg+"/plain/busybox:1", base, "", "")
	d := newDaemon(t, reg)
	d.Start()
	t0 := time.Now()
	_, err = d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	took := time.Since(t0)
	msg := fmt.Sprint(err)
	if len(msg) > 300 {
		msg = msg[:150] + " … " + msg[len(msg)-150:]
	}
	t.Logf("pull of a %d-level chain (%d-byte path): %v after %v (%d bytes of message)", levels, 5+levels*3+6, msg, took.Round(time.Millisecond), len(fmt.Sprint(err)))
	if took > 60*time.Second {
		t.Errorf("the pull took %v", took)
	}
	waitFor(t, 30*time.Second, "no staging directory left", func() bool {
		staging, _ := os.ReadDir(filepath.Join(d.Root, "storage", "overlay", "staging"))
		return len(staging) == 0
	})
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: reg + "/plain/busybox:1"}}); err != nil {
		t.Errorf("a plain pull after the deep one: %v", err)
	}
}
