package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/crypto/bcrypt"
)

// StartRegistryWithAuth starts a registry like StartRegistry that demands
// HTTP basic auth (htpasswd, bcrypt) for user:pass on every request.
func StartRegistryWithAuth(t testing.TB, user, pass string) (addr string) {
	t.Helper()
	if err := ensureRegistryInstalled(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatalf("testenv: bcrypt: %v", err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startRegistryWith(t, fmt.Sprintf(`auth:
  htpasswd:
    realm: peapod-test
    path: %s
`, htpasswd))
}

// Push pushes img over plain HTTP to ref ("127.0.0.1:PORT/repo:tag"), with
// basic auth when user is not empty, and returns the manifest digest.
func Push(t testing.TB, ref string, img v1.Image, user, pass string) (digest string) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var opts []remote.Option
	if user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
	}
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatalf("testenv: push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return d.String()
}

// RandomImage builds an image of n layers, each one file of layerBytes
// random (incompressible) bytes, from seed: the same arguments give the same
// digests. Layers are gzip-compressed at the fastest level.
func RandomImage(n int, layerBytes int64, seed uint64) (v1.Image, error) {
	rng := rand.New(rand.NewChaCha8(seedBytes(seed)))
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: layerEpoch},
		Config:       v1.Config{Env: []string{DefaultPath}, Cmd: []string{"sh"}},
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		data := make([]byte, layerBytes)
		for j := 0; j+8 <= len(data); j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8; k++ {
				data[j+k] = byte(v >> (8 * k))
			}
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range []*tar.Header{
			{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: layerEpoch},
			{Name: fmt.Sprintf("data/layer%d.bin", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: layerBytes, ModTime: layerEpoch},
		} {
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		tarBytes := buf.Bytes()
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(tarBytes)), nil
		}, tarball.WithCompressionLevel(gzip.BestSpeed))
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:   layer,
			History: v1.History{Created: v1.Time{Time: layerEpoch}, CreatedBy: fmt.Sprintf("peapod testenv: random layer %d", i)},
		})
		if err != nil {
			return nil, err
		}
	}
	return img, nil
}

func seedBytes(seed uint64) (b [32]byte) {
	for i := 0; i < 8; i++ {
		b[i] = byte(seed >> (8 * i))
	}
	return b
}
