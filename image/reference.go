package image

import (
	"fmt"
	"strings"

	"go.podman.io/image/v5/docker/reference"
)

// Normalize turns an image reference as users write it into the fully
// qualified form peapod stores, like docker does: "busybox" becomes
// "docker.io/library/busybox:latest", "quay.io/x/y" becomes
// "quay.io/x/y:latest"; digests are kept ("repo@sha256:..."; a tag next to
// a digest is dropped, the digest wins). It returns an error for strings that
// are not image references (IDs are not handled here).
func Normalize(ref string) (string, error) {
	named, err := normalizeNamed(ref)
	if err != nil {
		return "", err
	}
	return named.String(), nil
}

func normalizeNamed(ref string) (reference.Named, error) {
	if ref == "" {
		return nil, fmt.Errorf("empty image reference")
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	if canon, ok := named.(reference.Canonical); ok {
		// name:tag@digest: the digest identifies the content; keep only it.
		d, err := reference.WithDigest(reference.TrimNamed(named), canon.Digest())
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	return reference.TagNameOnly(named), nil
}

// isShortName reports whether ref names no registry ("busybox",
// "library/busybox", "foo/bar:1"), i.e. its first path component is not a
// host (no '.' or ':' and not "localhost").
func isShortName(ref string) bool {
	i := strings.IndexRune(ref, '/')
	if i < 0 {
		return true
	}
	first := ref[:i]
	return !strings.ContainsAny(first, ".:") && first != "localhost" && strings.ToLower(first) == first
}

// hexID reports whether s looks like (a prefix of) a storage image ID.
func hexID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// repoOf returns the repository part of a stored name (drops :tag/@digest).
func repoOf(name string) string {
	if i := strings.IndexRune(name, '@'); i >= 0 {
		name = name[:i]
	}
	slash := strings.LastIndexByte(name, '/')
	if i := strings.LastIndexByte(name, ':'); i > slash {
		name = name[:i]
	}
	return name
}
