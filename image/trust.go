package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	cimage "go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
)

// Image trust: which registries a reference is pulled from and which
// images are accepted, all through containers/image's own files.
//
//   - registries.conf (+ drop-ins in RegistriesConfDir): mirrors, insecure
//     registries, blocked registries, unqualified-search-registries and
//     short-name [aliases] (shortnames.conf is such a drop-in);
//   - registries.d (RegistriesD): where signatures are read from
//     (lookaside, use-sigstore-attachments);
//   - policy.json (SignaturePolicy): which images are accepted.
//
// Nothing is read from the host's /etc/containers unless a key names it:
// the daemon's config says what a node trusts, in one place.

// Sources are the files that say where images come from and which are
// accepted. Empty fields keep peapod's built-in defaults (see Config).
type Sources struct {
	RegistriesConf    string
	RegistriesConfDir string
	RegistriesD       string
	SignaturePolicy   string
}

// pullPolicy is a parsed signature policy and where it came from (for
// error messages). A PolicyContext is made from it for each pull:
// containers/image's PolicyContext is an unlocked state machine that fails
// an evaluation while another one runs.
type pullPolicy struct {
	policy *signature.Policy
	path   string // "" : the built-in insecureAcceptAnything default
}

// defaultPolicy accepts any image, as peapod did before signature_policy
// existed (and as the kubelet expects of a node with no policy).
func defaultPolicy() *pullPolicy {
	return &pullPolicy{policy: &signature.Policy{
		Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()},
	}}
}

// loadPolicy reads and checks the policy at path ("" : the default).
func loadPolicy(path string) (*pullPolicy, error) {
	if path == "" {
		return defaultPolicy(), nil
	}
	p, err := signature.NewPolicyFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("signature policy: %w", err)
	}
	// A policy whose keys cannot be read would refuse every pull it
	// covers; say so now rather than at the first pull.
	if err := checkKeyFiles(p); err != nil {
		return nil, fmt.Errorf("signature policy %s: %w", path, err)
	}
	return &pullPolicy{policy: p, path: path}, nil
}

// checkKeyFiles checks that every key file the policy names can be read
// (containers/image reads them only when a rule is evaluated).
func checkKeyFiles(p *signature.Policy) error {
	all := []signature.PolicyRequirements{p.Default}
	for _, scopes := range p.Transports {
		for _, reqs := range scopes {
			all = append(all, reqs)
		}
	}
	for _, reqs := range all {
		for _, r := range reqs {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			var keys struct {
				Type     string   `json:"type"`
				KeyPath  string   `json:"keyPath"`
				KeyPaths []string `json:"keyPaths"`
			}
			if err := json.Unmarshal(b, &keys); err != nil {
				return err
			}
			for _, k := range append(keys.KeyPaths, keys.KeyPath) {
				if k == "" {
					continue
				}
				if _, err := os.ReadFile(k); err != nil {
					return fmt.Errorf("%s key: %w", keys.Type, err)
				}
			}
		}
	}
	return nil
}

// systemContextFor is the containers/image context for src under root
// (peapod's --root): the files src names, and paths of peapod's own for
// what it leaves unnamed, so the host's /etc/containers/registries.conf.d,
// /etc/containers/registries.d and $HOME are never read by accident.
func systemContextFor(root string, src Sources) *types.SystemContext {
	none := filepath.Join(root, "nonexistent.d")
	sys := &types.SystemContext{
		SystemRegistriesConfPath:    src.RegistriesConf,
		SystemRegistriesConfDirPath: none,
		RegistriesDirPath:           none,
		// Short-name aliases podman records per user; peapod records none.
		UserShortNameAliasConfPath: filepath.Join(none, "short-name-aliases.conf"),
		AuthFilePath:               filepath.Join(none, "auth.json"),
		BigFilesTemporaryDir:       filepath.Join(root, "tmp"),
		BlobInfoCacheDir:           filepath.Join(root, "cache"), // not the host's /var/lib/containers/cache
		OSChoice:                   "linux",
		ArchitectureChoice:         runtime.GOARCH,
		DockerRegistryUserAgent:    "peapod",
	}
	if src.RegistriesConfDir != "" {
		sys.SystemRegistriesConfDirPath = src.RegistriesConfDir
	}
	if src.RegistriesD != "" {
		sys.RegistriesDirPath = src.RegistriesD
	}
	return sys
}

// checkSources fails on the files of src, as sys reads them, that are
// missing or do not parse: registries.conf with its drop-ins, and
// policy.json (with the keys it names). registries.d files are read by
// containers/image at each pull (it exports no parser); an error there
// fails the pull, naming the file.
func checkSources(sys *types.SystemContext, src Sources) (*pullPolicy, error) {
	for _, d := range []struct{ key, path string }{
		{"registries_conf_dir", src.RegistriesConfDir}, {"registries_d", src.RegistriesD},
	} {
		if d.path == "" {
			continue
		}
		if fi, err := os.Stat(d.path); err != nil {
			return nil, fmt.Errorf("%s: %w", d.key, err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("%s: %s is not a directory", d.key, d.path)
		}
	}
	sysregistriesv2.InvalidateCache() // containers/image caches parsed files by path
	if _, err := sysregistriesv2.GetRegistries(sys); err != nil {
		return nil, fmt.Errorf("registries config %s (drop-ins %s): %w", sys.SystemRegistriesConfPath, sys.SystemRegistriesConfDirPath, err)
	}
	return loadPolicy(src.SignaturePolicy)
}

// checkPolicy evaluates the policy for the image src serves (its
// top-level manifest, as containers/image's copy does) before anything of
// it is stored. A refusal wraps ErrSignatureRejected and names the rule.
func checkPolicy(ctx context.Context, pol *pullPolicy, src types.ImageSource, named reference.Named) error {
	pc, err := signature.NewPolicyContext(pol.policy)
	if err != nil {
		return fmt.Errorf("pull %q: signature policy: %w", named.String(), err)
	}
	defer pc.Destroy() //nolint:errcheck
	allowed, err := pc.IsRunningImageAllowed(ctx, cimage.UnparsedInstance(src, nil))
	if allowed && err == nil {
		return nil
	}
	if err == nil {
		err = errors.New("refused")
	}
	return policyRefusal(pol, named, err)
}

// unwatched is the registry's own source under a pullWatch's wrapper: the
// wrapper offers only containers/image's public ImageSource API, through
// which sigstore signatures are not read.
func unwatched(src types.ImageSource) types.ImageSource {
	if w, ok := src.(*watchedSource); ok {
		return w.ImageSource
	}
	return src
}

// judgeManifest evaluates the policy for named on the manifest the
// registry serves now and returns that manifest's digest, to which the
// caller pins its copy.
func judgeManifest(ctx context.Context, sys *types.SystemContext, pol *pullPolicy, named reference.Named) (digest.Digest, error) {
	ref, err := docker.NewReference(named)
	if err != nil {
		return "", err
	}
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return "", err
	}
	defer src.Close()
	man, _, err := src.GetManifest(ctx, nil)
	if err != nil {
		return "", err
	}
	d, err := manifest.Digest(man)
	if err != nil {
		return "", err
	}
	if err := checkPolicy(ctx, pol, src, named); err != nil {
		return "", err
	}
	return d, nil
}

// policyRefusal is the error of an image pol refuses.
func policyRefusal(pol *pullPolicy, named reference.Named, cause error) error {
	where := "the built-in policy"
	if pol.path != "" {
		where = pol.path
	}
	return fmt.Errorf("%w: image %q refused by %s, rule %s: %v",
		ErrSignatureRejected, named.String(), where, ruleFor(pol.policy, named), cause)
}

// ruleFor names the policy section that applies to named, found as
// containers/image finds it (policy_eval.go: the full identity, then each
// enclosing namespace, then the transport's "" entry, then "default"), e.g.
// `transports.docker["quay.io/org"] (signedBy)`.
func ruleFor(p *signature.Policy, named reference.Named) string {
	reqs, scope := p.Default, "default"
	if ref, err := docker.NewReference(named); err == nil {
		if scopes, ok := p.Transports[ref.Transport().Name()]; ok {
			cands := append([]string{ref.PolicyConfigurationIdentity()}, ref.PolicyConfigurationNamespaces()...)
			cands = append(cands, "")
			for _, c := range cands {
				if r, ok := scopes[c]; ok {
					reqs, scope = r, fmt.Sprintf("transports.%s[%q]", ref.Transport().Name(), c)
					break
				}
			}
		}
	}
	var kinds []string
	for _, r := range reqs {
		var t struct {
			Type string `json:"type"`
		}
		if b, err := json.Marshal(r); err == nil && json.Unmarshal(b, &t) == nil {
			kinds = append(kinds, t.Type)
		}
	}
	return fmt.Sprintf("%s (%s)", scope, strings.Join(kinds, ", "))
}

// isPolicyRefusal tells a copy error that is the policy's verdict.
func isPolicyRefusal(err error) bool {
	var pre signature.PolicyRequirementError
	return errors.As(err, &pre) || strings.Contains(err.Error(), "Source image rejected")
}

// aliasOf resolves the short name ref ("name[:tag|@digest]") through the
// short-name aliases of the registries config, with ref's tag or digest
// kept; nil when no alias names it.
func (s *Store) aliasOf(ref string) (reference.Named, error) {
	parsed, err := reference.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	short, ok := parsed.(reference.Named)
	if !ok {
		return nil, fmt.Errorf("invalid image reference %q: no repository", ref)
	}
	alias, conf, err := sysregistriesv2.ResolveShortNameAlias(s.systemContext(), short.Name())
	if err != nil || alias == nil {
		return nil, err
	}
	target := reference.Named(alias)
	if t, ok := short.(reference.Tagged); ok {
		if target, err = reference.WithTag(target, t.Tag()); err != nil {
			return nil, err
		}
	}
	if d, ok := short.(reference.Digested); ok {
		if target, err = reference.WithDigest(reference.TrimNamed(target), d.Digest()); err != nil {
			return nil, err
		}
	}
	s.log.Debug("short name resolved by alias", "name", ref, "alias", target.String(), "config", conf)
	return normalizeNamed(target.String())
}
