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
)

// tokenAuthFixture is a real registry behind token auth holding one
// private image, and a store whose auth file the test may write.
type tokenAuthFixture struct {
	s        *Store
	tokens   *testenv.TokenServer
	addr     string
	ref      string
	authFile string
}

func newTokenAuthFixture(t *testing.T, user, pass string) *tokenAuthFixture {
	t.Helper()
	f := &tokenAuthFixture{}
	f.addr, f.tokens = testenv.StartRegistryWithTokenAuth(t, user, pass)
	img, err := testenv.BuildImage(testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	f.ref = f.addr + "/private/busybox:1"
	// go-containerregistry pushes through the token server too (GET with
	// basic auth, then the bearer token).
	testenv.Push(t, f.ref, img, user, pass)
	f.s, _ = openTestStoreWith(t, f.addr, func(dir string, c *Config) {
		f.authFile = filepath.Join(dir, "auth.json")
		c.AuthFile = f.authFile
	})
	return f
}

// pull pulls the image with auth and returns what the token server saw
// meanwhile.
func (f *tokenAuthFixture) pull(auth *Auth) (testenv.TokenCounts, error) {
	before := f.tokens.Counts()
	_, err := f.s.Pull(context.Background(), f.ref, auth)
	return f.tokens.Counts().Since(before), err
}

// pullOK pulls with auth, which must succeed, removes the image again so
// the next case pulls from scratch, and returns the token server's counts.
func (f *tokenAuthFixture) pullOK(t *testing.T, auth *Auth) testenv.TokenCounts {
	t.Helper()
	c, err := f.pull(auth)
	if err != nil {
		t.Fatalf("Pull: %v (token server: %+v)", err, c)
	}
	if err := f.s.Remove(context.Background(), f.ref); err != nil {
		t.Fatal(err)
	}
	if n := layerCount(t, f.s); n != 0 {
		t.Fatalf("%d layers left after Remove; the next pull would not fetch its blobs", n)
	}
	t.Logf("token server requests: %+v", c)
	return c
}

// bothPaths runs fn once with the fast pull and once with containers/image's
// copy, which fetch manifests and blobs through image sources of their own.
func (f *tokenAuthFixture) bothPaths(t *testing.T, fn func(t *testing.T)) {
	for _, path := range []struct {
		name     string
		copyOnly bool
	}{{"fast", false}, {"copy", true}} {
		t.Run(path.name, func(t *testing.T) {
			f.s.noFastPull = path.copyOnly
			defer func() { f.s.noFastPull = false }()
			fn(t)
		})
	}
}

// Every kind of credential a kubelet may send (AuthConfig's username and
// password, identity_token, registry_token) and the node's auth file work
// against a registry using the Docker token flow, each through the flow it
// is meant for.
func TestPullTokenAuth(t *testing.T) {
	const user, pass = "kube", "s3cret"
	f := newTokenAuthFixture(t, user, pass)
	f.bothPaths(t, func(t *testing.T) {
		t.Run("password", func(t *testing.T) {
			// GET /token with basic auth.
			c := f.pullOK(t, &Auth{Username: user, Password: pass})
			if c.Basic == 0 || c.Refresh != 0 || c.Refused != 0 {
				t.Errorf("token server saw %+v; want basic-auth GETs only", c)
			}
		})
		t.Run("identity token", func(t *testing.T) {
			// The OAuth2 refresh grant (POST), never the password.
			idToken := f.tokens.IdentityToken(t, user, pass)
			c := f.pullOK(t, &Auth{IdentityToken: idToken})
			if c.Refresh == 0 || c.Basic != 0 || c.Anonymous != 0 || c.Refused != 0 {
				t.Errorf("token server saw %+v; want refresh_token grants only", c)
			}
		})
		t.Run("registry token", func(t *testing.T) {
			// Sent as is to the registry: the token server is not asked.
			regToken := f.tokens.RegistryToken(t, "repository:private/busybox:pull", user, pass)
			if c := f.pullOK(t, &Auth{RegistryToken: regToken}); c.Total() != 0 {
				t.Errorf("token server saw %+v; a registry token needs no request to it", c)
			}
		})
		t.Run("auth file", func(t *testing.T) {
			writeAuthFile(t, f.authFile, fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, f.addr, basic(user, pass)))
			defer writeAuthFile(t, f.authFile, `{"auths": {}}`)
			if c := f.pullOK(t, nil); c.Basic == 0 || c.Refused != 0 {
				t.Errorf("token server saw %+v; want basic-auth GETs with the file's credentials", c)
			}
		})
		t.Run("auth file identity token", func(t *testing.T) {
			// An identity token as docker login stores it for an OAuth2
			// registry: the password dropped, "auth" keeping "user:". The
			// "auth" field is needed: containers/image skips an entry whose
			// "auth" does not decode to "user:password" (it takes it for a
			// credential helper's marker), identitytoken included.
			idToken := f.tokens.IdentityToken(t, user, pass)
			writeAuthFile(t, f.authFile, fmt.Sprintf(`{"auths": {%q: {"auth": %q, "identitytoken": %q}}}`,
				f.addr, basic(user, ""), idToken))
			defer writeAuthFile(t, f.authFile, `{"auths": {}}`)
			if c := f.pullOK(t, nil); c.Refresh == 0 || c.Basic != 0 || c.Refused != 0 {
				t.Errorf("token server saw %+v; want refresh_token grants with the file's identity token", c)
			}
		})
	})
}

// Refused credentials of every kind fail with ErrUnauthorized naming the
// reference and leave nothing behind.
func TestPullTokenAuthRefused(t *testing.T) {
	const user, pass = "kube", "s3cret"
	f := newTokenAuthFixture(t, user, pass)
	otherRepo := f.tokens.RegistryToken(t, "repository:private/other:pull", user, pass)

	for _, tc := range []struct {
		name string
		auth *Auth
		// what the token server must have seen
		check func(testenv.TokenCounts) bool
	}{
		// The token server gives anonymous clients a token granting
		// nothing, as Docker Hub does; the registry refuses it.
		{"anonymous", nil, func(c testenv.TokenCounts) bool { return c.Anonymous > 0 }},
		{"wrong password", &Auth{Username: user, Password: "nope"}, func(c testenv.TokenCounts) bool { return c.Refused > 0 && c.Basic == 0 }},
		{"unknown user", &Auth{Username: "eve", Password: pass}, func(c testenv.TokenCounts) bool { return c.Refused > 0 && c.Basic == 0 }},
		{"unknown identity token", &Auth{IdentityToken: "not-issued-by-the-server"}, func(c testenv.TokenCounts) bool { return c.Refused > 0 && c.Refresh == 0 }},
		// Refused by the registry itself: a malformed JWT, and a good one
		// for another repository (insufficient_scope).
		{"garbage registry token", &Auth{RegistryToken: "garbage"}, func(c testenv.TokenCounts) bool { return c.Total() == 0 }},
		{"registry token for another repository", &Auth{RegistryToken: otherRepo}, func(c testenv.TokenCounts) bool { return c.Total() == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.bothPaths(t, func(t *testing.T) {
				c, err := f.pull(tc.auth)
				if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), f.ref) {
					t.Errorf("Pull err = %v, want ErrUnauthorized naming %s", err, f.ref)
				}
				if !tc.check(c) {
					t.Errorf("token server saw %+v", c)
				}
				t.Logf("%v", err)
				assertNothingLeft(t, f.s, f.ref, 0)
			})
		})
	}
}

func writeAuthFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
