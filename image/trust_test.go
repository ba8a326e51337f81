package image

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/signature"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// ruleFor names the section containers/image applies: the most specific
// scope first, then the transport's "" scope, then the default.
func TestRuleFor(t *testing.T) {
	p, err := signature.NewPolicyFromBytes([]byte(`{
  "default": [{"type": "reject"}],
  "transports": {"docker": {
    "": [{"type": "insecureAcceptAnything"}],
    "quay.io/org": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}],
    "quay.io/org/app:v1": [{"type": "reject"}],
    "*.example.com": [{"type": "sigstoreSigned", "keyPath": "/k.pub", "signedIdentity": {"type": "matchRepository"}}]
  }}
}`))
	if err != nil {
		t.Fatal(err)
	}
	onlyDefault := &signature.Policy{Default: signature.PolicyRequirements{signature.NewPRReject()}}
	for _, tc := range []struct {
		policy *signature.Policy
		ref    string
		want   string
	}{
		{p, "quay.io/org/app:v1", `transports.docker["quay.io/org/app:v1"] (reject)`},
		{p, "quay.io/org/app:v2", `transports.docker["quay.io/org"] (signedBy)`},
		{p, "quay.io/other/app:v1", `transports.docker[""] (insecureAcceptAnything)`},
		{p, "reg.example.com/a/b:1", `transports.docker["*.example.com"] (sigstoreSigned)`},
		{onlyDefault, "quay.io/org/app:v1", `default (reject)`},
	} {
		named, err := reference.ParseNormalizedNamed(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := ruleFor(tc.policy, named); got != tc.want {
			t.Errorf("ruleFor(%s) = %s, want %s", tc.ref, got, tc.want)
		}
	}
}

// A policy that does not parse, or names a key that cannot be read, is
// refused when loaded (start or SIGHUP), not at the first pull.
func TestLoadPolicy(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p, err := loadPolicy(""); err != nil || p.path != "" || len(p.policy.Default) != 1 {
		t.Fatalf("default policy: %+v, %v", p, err)
	}
	good := write("good.json", `{"default": [{"type": "reject"}]}`)
	if _, err := loadPolicy(good); err != nil {
		t.Errorf("valid policy refused: %v", err)
	}
	for name, text := range map[string]string{
		"syntax.json":  `{"default": [`,
		"nodef.json":   `{"transports": {}}`,
		"badtype.json": `{"default": [{"type": "acceptWhatever"}]}`,
		"nokey.json":   `{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "` + filepath.Join(dir, "absent.gpg") + `"}]}`,
	} {
		if _, err := loadPolicy(write(name, text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := loadPolicy(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing policy file accepted")
	}
}

// Short names: an alias (here from a drop-in, as shortnames.conf is) is
// the only candidate, with the tag or digest kept; other short names go
// over unqualified-search-registries; qualified names are untouched.
func TestCandidatesAliases(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	dropins := filepath.Join(dir, "registries.conf.d")
	if err := os.MkdirAll(dropins, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("unqualified-search-registries = [\"docker.io\", \"quay.io\"]\n[aliases]\n\"tool\" = \"quay.io/team/tool\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dropins, "000-shortnames.conf"), []byte("[aliases]\n\"app\" = \"registry.example.com/org/app\"\n\"tool\" = \"quay.io/team/tool2\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Store{log: slog.New(slog.DiscardHandler)}
	s.sysCtx.Store(systemContextFor(dir, Sources{RegistriesConf: conf, RegistriesConfDir: dropins}))
	if _, err := checkSources(s.systemContext(), Sources{RegistriesConf: conf, RegistriesConfDir: dropins}); err != nil {
		t.Fatal(err)
	}
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct{ ref, want string }{
		{"app", "registry.example.com/org/app:latest"},
		{"app:1.2", "registry.example.com/org/app:1.2"},
		{"app@" + dgst, "registry.example.com/org/app@" + dgst},
		{"tool", "quay.io/team/tool2:latest"}, // the drop-in overrides the main file
		{"busybox", "docker.io/library/busybox:latest quay.io/busybox:latest"},
		{"quay.io/x/app", "quay.io/x/app:latest"},
	} {
		cands, err := s.candidates(tc.ref)
		if err != nil {
			t.Errorf("candidates(%s): %v", tc.ref, err)
			continue
		}
		var got []string
		for _, c := range cands {
			got = append(got, c.String())
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("candidates(%s) = %v, want %s", tc.ref, got, tc.want)
		}
	}
	// Without the drop-in directory the main file's alias applies.
	s.sysCtx.Store(systemContextFor(dir, Sources{RegistriesConf: conf}))
	if _, err := checkSources(s.systemContext(), Sources{RegistriesConf: conf}); err != nil {
		t.Fatal(err)
	}
	if cands, err := s.candidates("tool"); err != nil || len(cands) != 1 || cands[0].String() != "quay.io/team/tool:latest" {
		t.Errorf("without drop-ins: candidates(tool) = %v, %v", cands, err)
	}
}

// A drop-in directory or registries.d that is missing is refused.
func TestCheckSourcesMissingDirs(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, src := range []Sources{
		{RegistriesConf: conf, RegistriesConfDir: filepath.Join(dir, "absent")},
		{RegistriesConf: conf, RegistriesD: filepath.Join(dir, "absent")},
		{RegistriesConf: conf, RegistriesD: conf}, // a file
	} {
		if _, err := checkSources(systemContextFor(dir, src), src); err == nil {
			t.Errorf("%+v: accepted", src)
		}
	}
}

// TestPullPolicyBothPaths: the policy refuses on the fast pull and on the
// containers/image copy path alike, with ErrSignatureRejected naming the
// rule, and nothing of the refused image is stored; an accepted image
// pulls on both.
func TestPullPolicyBothPaths(t *testing.T) {
	addr := testenv.StartRegistry(t)
	img, err := testenv.RandomImage(2, 8<<10, 0x9011c)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Push(t, addr+"/no/app:1", img, "", "")
	testenv.Push(t, addr+"/ok/app:1", img, "", "")
	s, _ := openTestStoreWith(t, addr, func(dir string, c *Config) {
		c.SignaturePolicy = filepath.Join(dir, "policy.json")
		if err := os.WriteFile(c.SignaturePolicy, []byte(`{"default": [{"type": "insecureAcceptAnything"}],
  "transports": {"docker": {"`+addr+`/no": [{"type": "reject"}]}}}`), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	ctx := context.Background()
	for _, copyOnly := range []bool{false, true} {
		s.noFastPull = copyOnly
		_, err := s.Pull(ctx, addr+"/no/app:1", nil)
		if !errors.Is(err, ErrSignatureRejected) || !strings.Contains(err.Error(), `transports.docker["`+addr+`/no"] (reject)`) {
			t.Errorf("copy only %v: refused pull: %v, want ErrSignatureRejected naming the rule", copyOnly, err)
		}
		if layers, _ := s.store.Layers(); len(layers) != 0 {
			t.Errorf("copy only %v: %d layers after the refused pull, want 0", copyOnly, len(layers))
		}
		if imgs, _ := s.store.Images(); len(imgs) != 0 {
			t.Errorf("copy only %v: %d images after the refused pull, want 0", copyOnly, len(imgs))
		}
	}
	for _, copyOnly := range []bool{false, true} {
		s.noFastPull = copyOnly
		pulled, err := s.Pull(ctx, addr+"/ok/app:1", nil)
		if err != nil {
			t.Fatalf("copy only %v: accepted pull: %v", copyOnly, err)
		}
		if !slices.Contains(pulled.RepoTags, addr+"/ok/app:1") {
			t.Errorf("copy only %v: tags %v", copyOnly, pulled.RepoTags)
		}
		if err := s.Remove(ctx, pulled.ID); err != nil {
			t.Fatal(err)
		}
	}
	// Stored, the refused name is still refused.
	s.noFastPull = false
	if _, err := s.Pull(ctx, addr+"/ok/app:1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, addr+"/no/app:1", nil); !errors.Is(err, ErrSignatureRejected) {
		t.Errorf("refused name of a stored image: %v, want ErrSignatureRejected", err)
	}
}
