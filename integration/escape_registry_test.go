package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// stallingRegistry is a registry on loopback that serves one image and,
// for one of its layers, sends half the blob and then nothing more for
// as long as the client keeps the connection: a hostile or broken
// registry the daemon cannot tell from a slow one.
type stallingRegistry struct {
	addr      string
	manifest  []byte
	mediaType string
	blobs     map[string][]byte // digest → content
	stall     string            // the digest of the layer that stalls

	mu       sync.Mutex
	served   map[string]bool // blobs sent whole
	stalled  chan struct{}   // closed when the stalling layer's first half is out
	released chan struct{}   // closed when its request ends (the client went)
}

func startStallingRegistry(t *testing.T, img v1.Image, stall v1.Layer) *stallingRegistry {
	t.Helper()
	r := &stallingRegistry{blobs: map[string][]byte{}, served: map[string]bool{},
		stalled: make(chan struct{}), released: make(chan struct{})}
	var err error
	if r.manifest, err = img.RawManifest(); err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	r.mediaType = string(mt)
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	r.blobs[cfgName.String()] = cfg
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		r.blobs[d.String()] = b
	}
	sd, err := stall.Digest()
	if err != nil {
		t.Fatal(err)
	}
	r.stall = sd.String()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	srv := &http.Server{Handler: r}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *stallingRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	p := req.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		w.WriteHeader(http.StatusOK)
	case strings.Contains(p, "/manifests/"):
		w.Header().Set("Content-Type", r.mediaType)
		w.Header().Set("Docker-Content-Digest", v1.Hash{Algorithm: "sha256", Hex: sha256Hex(r.manifest)}.String())
		w.Header().Set("Content-Length", itoa(len(r.manifest)))
		if req.Method != http.MethodHead {
			w.Write(r.manifest) //nolint:errcheck
		}
	case strings.Contains(p, "/blobs/"):
		d := p[strings.LastIndex(p, "/")+1:]
		b, ok := r.blobs[d]
		if !ok {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", itoa(len(b)))
		if req.Method == http.MethodHead {
			return
		}
		if d != r.stall {
			w.Write(b) //nolint:errcheck
			r.mu.Lock()
			r.served[d] = true
			r.mu.Unlock()
			return
		}
		w.Write(b[:len(b)/2]) //nolint:errcheck
		w.(http.Flusher).Flush()
		r.mu.Lock()
		select {
		case <-r.stalled:
		default:
			close(r.stalled)
		}
		r.mu.Unlock()
		<-req.Context().Done() // the client closed the connection
		r.mu.Lock()
		select {
		case <-r.released:
		default:
			close(r.released)
		}
		r.mu.Unlock()
	default:
		http.NotFound(w, req)
	}
}

// TestEscapeRegistryStalledPullCancelled: a registry sends half of a
// layer and then holds the connection open without a byte more (the
// busybox layer beside it comes whole and is committed). The kubelet's
// PullImage has no deadline; when its caller goes away the pull must end
// at once (not at pull_progress_timeout, 5 minutes), close the
// registry's connection, and leave nothing behind: no half-unpacked
// staging directory, no layer of the image that was never recorded, no
// image.
func TestEscapeRegistryStalledPullCancelled(t *testing.T) {
	base, err := testenv.BuildImage(testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	junk := make([]byte, 8<<20) // incompressible: half the blob is half the bytes
	if _, err := rand.Read(junk); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk"), junk, 0o644); err != nil {
		t.Fatal(err)
	}
	stall, err := testenv.LayerFromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, stall)
	if err != nil {
		t.Fatal(err)
	}
	reg := startStallingRegistry(t, img, stall)
	baseLayers, err := base.Layers()
	if err != nil {
		t.Fatal(err)
	}
	baseDigest, err := baseLayers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}

	d := newDaemon(t, reg.addr)
	d.Start()
	pullCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pulled := make(chan error, 1)
	go func() {
		_, err := d.Img.PullImage(pullCtx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "registry.k8s.io/e2e-test-images/busybox:stall"}})
		pulled <- err
	}()
	select {
	case <-reg.stalled:
	case err := <-pulled:
		t.Fatalf("the pull ended before the layer stalled: %v", err)
	case <-time.After(60 * time.Second * timeoutScale):
		t.Fatal("the stalling layer was never fetched")
	}
	// Let the whole busybox layer arrive and be committed.
	deadline := time.Now().Add(30 * time.Second * timeoutScale)
	for {
		reg.mu.Lock()
		done := reg.served[baseDigest.String()]
		reg.mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	layersBefore := storedLayers(t, d.Root)
	t.Logf("layers stored while the pull stalls: %d", layersBefore)

	cancel()
	gone := time.Now()
	select {
	case err := <-pulled:
		t.Logf("PullImage returned %s after the cancel: %v", time.Since(gone).Round(time.Millisecond), err)
		if err == nil {
			t.Fatal("the stalled pull succeeded")
		}
	case <-time.After(10 * time.Second * timeoutScale):
		t.Fatal("PullImage did not return 10 s after its caller went")
	}
	select {
	case <-reg.released:
		t.Logf("the registry's connection closed %s after the cancel", time.Since(gone).Round(time.Millisecond))
	case <-time.After(10 * time.Second * timeoutScale):
		t.Fatal("the daemon still holds the stalled connection 10 s after its only caller went")
	}

	// The pull's cleanup runs as it returns; give it a moment.
	var staged []string
	var layers int
	for end := time.Now().Add(10 * time.Second * timeoutScale); ; time.Sleep(200 * time.Millisecond) {
		staged = stagingLeft(t, d.Root)
		layers = storedLayers(t, d.Root)
		if (len(staged) == 0 && layers == 0) || time.Now().After(end) {
			break
		}
	}
	if len(staged) > 0 {
		t.Errorf("half-unpacked layers left in staging: %v", staged)
	}
	if layers != 0 {
		t.Errorf("%d layers left in the store by a pull that was cancelled (%d while it stalled)", layers, layersBefore)
	}
	l, err := d.Img.ListImages(ctx(t), &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Images) != 0 {
		t.Errorf("images stored after the cancelled pull: %v", l.Images)
	}
}

// stagingLeft lists what is in the overlay driver's staging directories.
func stagingLeft(t *testing.T, root string) []string {
	t.Helper()
	var left []string
	for _, dir := range []string{filepath.Join(root, "storage", "overlay", "staging")} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			left = append(left, filepath.Join(dir, e.Name()))
		}
	}
	return left
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestEscapeRegistryRedirectReadback: a registry answers the manifest of
// a tag (which nothing verifies against a digest) with a redirect to a
// host-local service the pod's author cannot reach (a cloud metadata
// endpoint, the kubelet's read-only port): the redirect gives the author
// the whole URL, where an image name gives only /v2/<name>/manifests/<tag>.
// The daemon follows redirects, as containerd and CRI-O do; what the
// kubelet shows the author is the pull's error (in the pod's events).
// A 2xx answer must never come back. Of an error answer containers/image
// quotes the first 50 bytes (CRI-O's behaviour too) and a message in the
// registry's error JSON in full: what lies past byte 50 must not come
// back.
func TestEscapeRegistryRedirectReadback(t *testing.T) {
	const secret = "AKIASECRETREADBACK0123"
	pad := strings.Repeat("p", 64) // past the 50 bytes quoted of an error body
	type answer struct {
		code   int
		ct     string
		body   string
		echoed bool // the secret may come back (a registry's own error message)
	}
	answers := map[string]answer{
		"json200":     {200, "application/json", `{"Code":"Success","AccessKeyId":"` + secret + `","SecretAccessKey":"x"}`, false},
		"text200":     {200, "text/plain", secret + "\n", false},
		"manifest200": {200, "application/vnd.oci.image.manifest.v1+json", `{"schemaVersion":2,"mediaType":"` + secret + `","config":{"mediaType":"` + secret + `","digest":"sha256:` + strings.Repeat("0", 64) + `","size":1},"layers":[]}`, false},
		"text404":     {404, "text/plain", pad + secret + "\n", false},
		"html403":     {403, "text/html", "<html><body>" + pad + secret + "</body></html>", false},
		"json500":     {500, "application/json", `{"message":"` + pad + secret + `"}`, false},
		"json401":     {401, "application/json", `{"errors":[{"code":"UNAUTHORIZED","message":"` + secret + `"}]}`, true},
		"short404":    {404, "text/plain", secret, true}, // within the 50 bytes
	}
	private, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	privSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a, ok := answers[strings.TrimPrefix(req.URL.Path, "/")]
		if !ok {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Type", a.ct)
		w.WriteHeader(a.code)
		io.WriteString(w, a.body) //nolint:errcheck
	})}
	go privSrv.Serve(private) //nolint:errcheck
	t.Cleanup(func() { privSrv.Close() })

	hostile, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		p := req.URL.Path
		if p == "/v2/" {
			return
		}
		if i := strings.Index(p, "/manifests/"); i >= 0 {
			http.Redirect(w, req, "http://"+private.Addr().String()+"/"+p[i+len("/manifests/"):], http.StatusTemporaryRedirect)
			return
		}
		http.NotFound(w, req)
	})}
	go hostSrv.Serve(hostile) //nolint:errcheck
	t.Cleanup(func() { hostSrv.Close() })

	d := newDaemon(t, hostile.Addr().String())
	d.Start()
	for tag := range answers {
		c, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeoutScale)
		_, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "registry.k8s.io/e2e-test-images/busybox:" + tag}})
		cancel()
		if err == nil {
			t.Errorf("%s: pulled", tag)
			continue
		}
		t.Logf("%s: %v", tag, err)
		if strings.Contains(err.Error(), secret) && !answers[tag].echoed {
			t.Errorf("%s: the redirected service's answer is in the pull's error: %v", tag, err)
		}
	}
}

// TestEscapeRegistryUnsizedLayer: a manifest whose layer descriptor gives
// no size (0, or -1 as "unknown") or 2^62 bytes, and a registry that then
// sends bytes for that layer without end, as fast as it can: bytes that do
// not unpack, or a small valid tar followed by them. A blob is read at
// most its declared size + 1, so nothing bounded the read: the pull went
// on reading what it would never unpack (to tell a corrupt blob from a bad
// tar, or the tar's trailing padding) for as long as the registry sent,
// never cut by pull_progress_timeout (bytes arrive) and never ended for
// the kubelet, whose PullImage has no deadline. The pull must be refused.
func TestEscapeRegistryUnsizedLayer(t *testing.T) {
	base, err := testenv.BuildImage(testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := base.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfgDigest := "sha256:" + sha256Hex(cfg)
	layerDigest := "sha256:" + strings.Repeat("ab", 32) // never matched: the bytes never end
	tiny, err := testenv.LayerFromDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := tiny.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	tarHead, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	for _, tc := range []struct {
		name string
		size int
		head []byte
	}{{"size0", 0, nil}, {"size-1", -1, nil}, {"huge", 1 << 62, nil}, {"huge-after-tar", 1 << 62, tarHead}} {
		size := tc.size
		t.Run(tc.name, func(t *testing.T) {
			man := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
				`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cfgDigest + `","size":` + itoa(len(cfg)) + `},` +
				`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + layerDigest + `","size":` + itoa(size) + `}]}`)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			sent.Store(0)
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
				p := req.URL.Path
				switch {
				case p == "/v2/":
				case strings.Contains(p, "/manifests/"):
					w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
					w.Header().Set("Docker-Content-Digest", "sha256:"+sha256Hex(man))
					w.Write(man) //nolint:errcheck
				case strings.HasSuffix(p, "/blobs/"+cfgDigest):
					w.Write(cfg) //nolint:errcheck
				case strings.HasSuffix(p, "/blobs/"+layerDigest):
					junk := make([]byte, 1<<20)
					for i := range junk {
						junk[i] = 'x' // not gzip, not a tar header
					}
					w.Write(tc.head) //nolint:errcheck
					for req.Context().Err() == nil {
						n, err := w.Write(junk)
						sent.Add(int64(n))
						if err != nil {
							return
						}
					}
				default:
					http.NotFound(w, req)
				}
			})}
			go srv.Serve(ln) //nolint:errcheck
			defer srv.Close()

			d := newDaemon(t, ln.Addr().String())
			d.Start()
			c, cancel := context.WithTimeout(context.Background(), 20*time.Second*timeoutScale)
			defer cancel()
			start := time.Now()
			_, err = d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "registry.k8s.io/e2e-test-images/busybox:unsized"}})
			took := time.Since(start).Round(time.Millisecond)
			t.Logf("after %s, %d MiB sent: %v", took, sent.Load()>>20, err)
			if err == nil {
				t.Fatal("an endless layer was pulled")
			}
			if c.Err() != nil {
				t.Fatalf("the pull read %d MiB of an endless layer until its caller gave up (%s)", sent.Load()>>20, took)
			}
		})
	}
}
