package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	ggcrcompression "github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ggcrtypes "github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/integration/testenv"
)

var layerTime = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

type tarEntry struct {
	hdr  tar.Header
	data string
}

func reg(name string, mode int64, data string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))}, data: data}
}

func dir(name string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}}
}

func link(name, target string, typ byte) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: typ, Linkname: target, Mode: 0o777}}
}

func tarLayer(t *testing.T, entries ...tarEntry) v1.Layer {
	t.Helper()
	return tarLayerAs(t, "gzip", entries...)
}

// tarLayerAs builds a layer compressed as comp: "gzip", "zstd" or "none".
func tarLayerAs(t *testing.T, comp string, entries ...tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = layerTime
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if comp == "none" {
		return static.NewLayer(b, ggcrtypes.OCIUncompressedLayer)
	}
	opts := []tarball.LayerOption{tarball.WithCompressionLevel(gzip.BestSpeed)}
	if comp == "zstd" {
		opts = []tarball.LayerOption{tarball.WithCompression(ggcrcompression.ZStd), tarball.WithMediaType(ggcrtypes.OCILayerZStd)}
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func imageOf(t *testing.T, oci bool, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: arch, OS: "linux", Created: v1.Time{Time: layerTime},
		Config: v1.Config{Cmd: []string{"sh"}}, RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if oci {
		img = mutate.MediaType(img, ggcrtypes.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, ggcrtypes.OCIConfigJSON)
	}
	for _, l := range layers {
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func pushIndex(t *testing.T, ref string, idx v1.ImageIndex) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
}

// fileTree describes every file under root: type and mode, owner, size,
// device, link target, content digest, extended attributes and mtime.
func fileTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d rdev=%d", st.Mode, st.Uid, st.Gid, st.Rdev)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" size=%d sha=%x nlink=%d mtime=%d", st.Size, sha256.Sum256(b), st.Nlink, st.Mtim.Nano())
		case unix.S_IFLNK:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case unix.S_IFDIR:
			// A directory the tar names gets its time; one made for a
			// child, or changed after, has the time of the pull.
			if st.Mtim.Nano() == layerTime.UnixNano() {
				desc += " mtime=layer"
			}
		}
		desc += " xattrs=" + xattrsOf(t, path)
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func xattrsOf(t *testing.T, path string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(path, buf)
	if err != nil || n == 0 {
		return "{}"
	}
	var kv []string
	for _, k := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if !strings.HasPrefix(k, "user.") && !strings.HasPrefix(k, "trusted.") {
			continue
		}
		v := make([]byte, 256)
		m, err := unix.Lgetxattr(path, k, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", path, k, err)
		}
		kv = append(kv, k+"="+string(v[:m]))
	}
	sort.Strings(kv)
	return "{" + strings.Join(kv, ",") + "}"
}

// TestFastPullMatchesCopy pulls the same images with the fast pull and with
// containers/image's copy into two stores and compares everything storage
// keeps: image records, layer records and every file of every layer
// (whiteouts, opaque directories, owners, set-id bits, links, xattrs,
// implicit parents, the root directory's mode with and without a root
// entry). A plain Docker schema 2 image and an OCI index with this
// platform's image (gzip, zstd and uncompressed layers) and another's.
func TestFastPullMatchesCopy(t *testing.T) {
	addr := testenv.StartRegistry(t)
	canary := t.TempDir()
	l1 := tarLayer(t,
		dir("./", 0o751),
		dir("etc/", 0o755),
		reg("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n"),
		reg("etc/secret", 0o600, "s3cret\n"),
		dir("home/", 0o755),
		tarEntry{hdr: tar.Header{Name: "home/user/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000}},
		tarEntry{hdr: tar.Header{Name: "home/user/.profile", Typeflag: tar.TypeReg, Mode: 0o644, Uid: 1000, Gid: 1001, Size: 4}, data: "ls\n\n"},
		dir("bin/", 0o755),
		reg("bin/su", 0o4755, "#!su\n"),
		link("bin/sh", "su", tar.TypeSymlink),
		link("bin/su2", "bin/su", tar.TypeLink),
		tarEntry{hdr: tar.Header{Name: "bin/tagged", Typeflag: tar.TypeReg, Mode: 0o755, Size: 1,
			PAXRecords: map[string]string{"SCHILY.xattr.user.peapod": "yes"}}, data: "x"},
		tarEntry{hdr: tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o600}},
		reg("opt/deep/er/file", 0o640, "implicit parents\n"),
		link("esc", canary, tar.TypeSymlink),
		reg("esc/pwned", 0o644, "must stay inside the layer\n"),
	)
	l2 := tarLayer(t,
		reg("etc/.wh.passwd", 0o600, ""),
		reg("home/.wh..wh..opq", 0o600, ""),
		reg("home/fresh", 0o644, "new home\n"),
		reg("bin/su", 0o755, "#!su v2\n"),
		tarEntry{hdr: tar.Header{Name: "srv/", Typeflag: tar.TypeDir, Mode: 0o2775, Uid: 33, Gid: 33}},
	)
	l3 := tarLayer(t,
		dir("./", 0o755),
		reg("srv/data", 0o644, strings.Repeat("peapod ", 20000)),
	)
	plain := imageOf(t, false, runtime.GOARCH, l1, l2, l3)
	testenv.Push(t, addr+"/same/plain:1", plain, "", "")
	lz := tarLayerAs(t, "zstd", reg("srv/zstd", 0o644, strings.Repeat("zstd ", 5000)), reg("etc/.wh.secret", 0o600, ""))
	lu := tarLayerAs(t, "none", reg("srv/plain", 0o644, "uncompressed layer\n"))
	ociImg := imageOf(t, true, runtime.GOARCH, l1, l2, lz, lu)
	other := imageOf(t, true, "s390x", l3)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, ggcrtypes.OCIImageIndex),
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}},
		mutate.IndexAddendum{Add: ociImg, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	pushIndex(t, addr+"/same/index:1", idx)

	fast, _ := openTestStore(t, addr)
	slow, _ := openTestStore(t, addr)
	slow.noFastPull = true
	ctx := context.Background()
	for _, ref := range []string{addr + "/same/plain:1", addr + "/same/index:1"} {
		fi, err := fast.Pull(ctx, ref, nil)
		if err != nil {
			t.Fatalf("fast pull %s: %v", ref, err)
		}
		si, err := slow.Pull(ctx, ref, nil)
		if err != nil {
			t.Fatalf("copy pull %s: %v", ref, err)
		}
		if fmt.Sprint(fi.ID, fi.RepoTags, fi.RepoDigests, fi.Size, fi.Cmd) != fmt.Sprint(si.ID, si.RepoTags, si.RepoDigests, si.Size, si.Cmd) {
			t.Errorf("%s: ImageStatus differs:\nfast %s %v %v %d %v\ncopy %s %v %v %d %v", ref,
				fi.ID, fi.RepoTags, fi.RepoDigests, fi.Size, fi.Cmd, si.ID, si.RepoTags, si.RepoDigests, si.Size, si.Cmd)
		}
		id := strings.TrimPrefix(fi.ID, "sha256:")
		fimg, err := fast.store.Image(id)
		if err != nil {
			t.Fatal(err)
		}
		simg, err := slow.store.Image(id)
		if err != nil {
			t.Fatal(err)
		}
		sortedNames := func(n []string) []string { n = slices.Clone(n); sort.Strings(n); return n }
		if a, b := fmt.Sprint(fimg.TopLayer, fimg.Names, fimg.Digest, fimg.Digests, sortedNames(fimg.BigDataNames), fimg.BigDataDigests, fimg.Created.UTC()),
			fmt.Sprint(simg.TopLayer, simg.Names, simg.Digest, simg.Digests, sortedNames(simg.BigDataNames), simg.BigDataDigests, simg.Created.UTC()); a != b {
			t.Errorf("%s: image records differ:\nfast %s\ncopy %s", ref, a, b)
		}
		for lid := fimg.TopLayer; lid != ""; {
			fl, err := fast.store.Layer(lid)
			if err != nil {
				t.Fatalf("fast: layer %s: %v", lid, err)
			}
			sl, err := slow.store.Layer(lid)
			if err != nil {
				t.Fatalf("copy: layer %s: %v", lid, err)
			}
			// CompressedSize is not compared: storage takes it from the
			// stream it unpacks, which the staged path does not give it.
			if a, b := fmt.Sprint(fl.Parent, fl.CompressedDigest, fl.UncompressedDigest, fl.UncompressedSize, fl.UIDs, fl.GIDs),
				fmt.Sprint(sl.Parent, sl.CompressedDigest, sl.UncompressedDigest, sl.UncompressedSize, sl.UIDs, sl.GIDs); a != b {
				t.Errorf("layer %s records differ:\nfast %s\ncopy %s", lid, a, b)
			}
			// Which path made each layer: storage keeps tar-split data for
			// the layers it unpacks itself, the fast pull gives it none.
			_, ferr := os.Stat(filepath.Join(fast.root, "overlay-layers", lid+".tar-split.gz"))
			_, serr := os.Stat(filepath.Join(slow.root, "overlay-layers", lid+".tar-split.gz"))
			if ferr == nil || serr != nil {
				t.Errorf("layer %s: tar-split in the fast store: %v, in the copy store: %v; want only in the copy store", lid, ferr == nil, serr == nil)
			}
			fdir, err := fast.store.DifferTarget(lid)
			if err != nil {
				t.Fatal(err)
			}
			sdir, err := slow.store.DifferTarget(lid)
			if err != nil {
				t.Fatal(err)
			}
			ft, st := fileTree(t, fdir), fileTree(t, sdir)
			for p, d := range st {
				if ft[p] != d {
					t.Errorf("layer %s file %s:\nfast %q\ncopy %q", lid, p, ft[p], d)
				}
			}
			for p := range ft {
				if _, ok := st[p]; !ok {
					t.Errorf("layer %s: file %s only in the fast pull's layer", lid, p)
				}
			}
			if len(ft) < 2 {
				t.Errorf("layer %s: %d files, expected content", lid, len(ft))
			}
			lid = fl.Parent
		}
	}
	// The symlinked directory led nowhere outside the layer.
	if ents, _ := os.ReadDir(canary); len(ents) != 0 {
		t.Errorf("a layer wrote outside its directory, into %s: %v", canary, ents)
	}
}

// TestFastPullRefusesEscape: a layer whose hard link points out of it fails
// the pull and leaves no image, layer or staging directory behind.
func TestFastPullRefusesEscape(t *testing.T) {
	addr := testenv.StartRegistry(t)
	good := tarLayer(t, reg("ok", 0o644, "fine\n"))
	bad := tarLayer(t, link("leak", "../../../../../../../../etc/hostname", tar.TypeLink))
	testenv.Push(t, addr+"/evil/hl:1", imageOf(t, false, runtime.GOARCH, good, bad), "", "")
	s, dir := openTestStore(t, addr)
	if _, err := s.Pull(context.Background(), addr+"/evil/hl:1", nil); err == nil {
		t.Fatal("pull of a layer with an escaping hard link succeeded")
	} else {
		t.Logf("refused: %v", err)
	}
	if imgs, _ := s.store.Images(); len(imgs) != 0 {
		t.Errorf("images left: %d", len(imgs))
	}
	if layers, _ := s.store.Layers(); len(layers) != 0 {
		t.Errorf("layers left: %d", len(layers))
	}
	staging := filepath.Join(dir, "root", "storage", "overlay", "staging")
	if ents, _ := os.ReadDir(staging); len(ents) != 0 {
		for _, e := range ents {
			sub, _ := os.ReadDir(filepath.Join(staging, e.Name()))
			var names []string
			for _, x := range sub {
				names = append(names, x.Name())
			}
			t.Errorf("staging directory left: %s %v", e.Name(), names)
		}
	}
}

// TestFastPullSharedLayers: images sharing their lower layers, pulled at
// the same time, store each shared layer once; an image pulled by the copy
// path lends its layers to a later fast pull, and the other way round.
func TestFastPullSharedLayers(t *testing.T) {
	addr := testenv.StartRegistry(t)
	base1 := tarLayer(t, dir("usr/", 0o755), reg("usr/base1", 0o644, "one\n"))
	base2 := tarLayer(t, reg("usr/base2", 0o644, "two\n"))
	var refs []string
	for i := 0; i < 4; i++ {
		top := tarLayer(t, reg(fmt.Sprintf("app%d", i), 0o644, fmt.Sprintf("app %d\n", i)))
		ref := fmt.Sprintf("%s/shared/app%d:1", addr, i)
		testenv.Push(t, ref, imageOf(t, i%2 == 0, runtime.GOARCH, base1, base2, top), "", "")
		refs = append(refs, ref)
	}
	ctx := context.Background()

	s, dir := openTestStore(t, addr)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = s.Pull(ctx, refs[i], nil) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pull %s: %v", refs[i], err)
		}
	}
	if layers, _ := s.store.Layers(); len(layers) != 4 {
		t.Errorf("%d layers after two concurrent pulls, want 4 (2 shared + 2 own)", len(layers))
	}

	// Copy path first, fast path after: the fast pull reuses the layers.
	s.noFastPull = true
	if _, err := s.Pull(ctx, refs[2], nil); err != nil {
		t.Fatal(err)
	}
	s.noFastPull = false
	if _, err := s.Pull(ctx, refs[3], nil); err != nil {
		t.Fatal(err)
	}
	if layers, _ := s.store.Layers(); len(layers) != 6 {
		t.Errorf("%d layers after four pulls, want 6", len(layers))
	}
	// Every image's root filesystem has its files.
	for i, ref := range refs {
		img, err := s.Status(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		cid := fmt.Sprintf("c%d", i)
		root, err := s.CreateRootfs(ctx, cid, img.ID)
		if err != nil {
			t.Fatalf("rootfs of %s: %v", ref, err)
		}
		for _, f := range []string{"usr/base1", "usr/base2", fmt.Sprintf("app%d", i)} {
			if _, err := os.Stat(filepath.Join(root, f)); err != nil {
				t.Errorf("%s: %v", ref, err)
			}
		}
		if err := s.RemoveRootfs(ctx, cid); err != nil {
			t.Error(err)
		}
	}
	staging := filepath.Join(dir, "root", "storage", "overlay", "staging")
	if ents, _ := os.ReadDir(staging); len(ents) != 0 {
		t.Errorf("%d staging directories left in %s after the pulls", len(ents), staging)
	}
	// Removing the images removes every layer.
	for _, ref := range refs {
		if err := s.Remove(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	if layers, _ := s.store.Layers(); len(layers) != 0 {
		t.Errorf("%d layers left after removing every image", len(layers))
	}
}

// A layer a daemon crash left half-unpacked in staging is gone when the
// store opens again.
func TestOpenRemovesStagingLeftovers(t *testing.T) {
	addr := testenv.StartRegistry(t)
	s, dir := openTestStore(t, addr)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	left := filepath.Join(dir, "root", "storage", "overlay", "staging", "123456", "dir", "usr")
	if err := os.MkdirAll(left, 0o755); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(Config{Root: filepath.Join(dir, "root"), RunRoot: filepath.Join(dir, "run"), RegistriesConf: filepath.Join(dir, "registries.conf")})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if ents, _ := os.ReadDir(filepath.Dir(filepath.Dir(filepath.Dir(left)))); len(ents) != 0 {
		t.Errorf("staging leftovers after Open: %d", len(ents))
	}
}
