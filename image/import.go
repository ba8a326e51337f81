package image

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker/archive"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/types"
	"golang.org/x/sys/unix"
)

// ErrBadArchive is returned when the file to import is neither an OCI
// layout (directory or tar, as `podman save --format oci-archive`,
// `ctr images export` or `skopeo copy oci-archive:` write it) nor a
// docker-archive tar (`docker save`, `podman save`).
var ErrBadArchive = errors.New("not an OCI layout or docker-archive")

// containerdNameAnnotation is where containerd's `ctr images export` keeps an
// image's full name; org.opencontainers.image.ref.name is often only a tag.
const containerdNameAnnotation = "io.containerd.image.name"

// Import stores every image of an OCI layout (a directory or a tar of one,
// gzip-compressed or not) or a docker-archive tar, under the names the
// archive gives them, as `ctr images import` or `podman load` would. name,
// if not empty, names an archive's only image when the archive gives it no
// full name (an OCI ref.name that is only a tag is taken as name's tag). It
// returns the stored images in archive order. Errors wrap ErrBadArchive for
// a file of another kind and ErrNotFound when the file is absent.
func (s *Store) Import(ctx context.Context, file, name string) (imgs []*Image, err error) {
	st, err := os.Stat(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("import %s: %w", file, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("import %s: %w", file, err)
	}
	s.beginPull() // committed layers of a failed import are collected like a failed pull's
	defer func() { s.endPull(err != nil) }()
	sys := *s.systemContext()
	if st.IsDir() {
		return s.importLayout(ctx, &sys, file, name)
	}
	kind, err := archiveKind(file)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", file, err)
	}
	if kind == "docker" {
		return s.importDockerArchive(ctx, &sys, file, name)
	}
	dir, err := os.MkdirTemp(sys.BigFilesTemporaryDir, "import-")
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", file, err)
	}
	defer os.RemoveAll(dir)
	if err := extractTar(ctx, file, dir); err != nil {
		return nil, fmt.Errorf("import %s: %w", file, err)
	}
	return s.importLayout(ctx, &sys, dir, name)
}

// archiveKind tells an OCI layout tar ("oci") from a docker-archive
// ("docker") by the files at its top.
func archiveKind(file string) (string, error) {
	var kind string
	err := walkTar(file, func(h *tar.Header, _ io.Reader) (bool, error) {
		switch path.Clean(h.Name) {
		case "index.json", "oci-layout":
			kind = "oci"
			return false, nil
		case "manifest.json":
			kind = "docker" // docker-archives may also hold index.json; keep looking for oci-layout
		}
		return true, nil
	})
	if err != nil {
		return "", err
	}
	if kind == "" {
		return "", ErrBadArchive
	}
	return kind, nil
}

// walkTar calls fn for each entry of the (possibly gzip-compressed) tar
// file until fn returns false.
func walkTar(file string, fn func(*tar.Header, io.Reader) (bool, error)) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadArchive, err)
		}
		defer zr.Close()
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadArchive, err)
		}
		more, err := fn(h, tr)
		if err != nil || !more {
			return err
		}
	}
}

// extractTar unpacks an OCI layout tar into dir. Only directories and
// regular files are taken, and only below dir: a layout has nothing else,
// and a crafted archive must not write outside. A gzip-compressed tar may
// expand to any size (a few MiB of zeros name terabytes): each file's
// size is charged before it is written against dir's free space less a
// tenth of its filesystem (the kubelet's default nodefs eviction
// threshold), as a checkpoint's archive is; beyond, ErrNoSpace. ctx stops
// it between reads.
func extractTar(ctx context.Context, file, dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", dir, err)
	}
	reserved := int64(st.Blocks) * int64(st.Bsize) / 10
	left := int64(st.Bavail)*int64(st.Bsize) - reserved
	return walkTar(file, func(h *tar.Header, r io.Reader) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		name := path.Clean(h.Name)
		if name == "." {
			return true, nil
		}
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return false, fmt.Errorf("%w: entry %q leaves the archive", ErrBadArchive, h.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			return true, os.MkdirAll(target, 0o700)
		case tar.TypeReg:
			if left -= h.Size; h.Size < 0 || left < 0 {
				return false, fmt.Errorf("%w: unpacking the archive into %s would leave less than %d MiB (a tenth of its filesystem) free (entry %q: %d bytes)", ErrNoSpace, dir, reserved>>20, h.Name, h.Size)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return false, err
			}
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return false, err
			}
			_, err = io.Copy(out, ctxReader{ctx, io.LimitReader(r, h.Size)})
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			return true, err
		default:
			return true, nil // links and devices have no place in a layout
		}
	})
}

// ctxReader ends a copy once ctx is done (Ctrl-C of `peapod image import`).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// importLayout copies each manifest of the OCI layout in dir.
func (s *Store) importLayout(ctx context.Context, sys *types.SystemContext, dir, name string) ([]*Image, error) {
	blob, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("import %s: %w: no index.json", dir, ErrBadArchive)
	} else if err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	var index imgspecv1.Index
	if err := json.Unmarshal(blob, &index); err != nil {
		return nil, fmt.Errorf("import %s: %w: index.json: %v", dir, ErrBadArchive, err)
	}
	if len(index.Manifests) == 0 {
		return nil, fmt.Errorf("import %s: %w: index.json lists no image", dir, ErrBadArchive)
	}
	var out []*Image
	for i, desc := range index.Manifests {
		named, err := layoutName(desc.Annotations, name, len(index.Manifests))
		if err != nil {
			return out, fmt.Errorf("import %s: image %d of %d: %w", dir, i+1, len(index.Manifests), err)
		}
		src, err := layout.NewIndexReference(dir, i)
		if err != nil {
			return out, fmt.Errorf("import %s: %w", dir, err)
		}
		img, err := s.importOne(ctx, sys, src, []reference.Named{named})
		if err != nil {
			return out, fmt.Errorf("import %s: image %s: %w", dir, named, err)
		}
		out = append(out, img)
	}
	return out, nil
}

// layoutName is the name an OCI layout's manifest is stored under: the
// full name containerd records, else ref.name when it is a full
// reference, else name (with ref.name as its tag when ref.name is one).
func layoutName(ann map[string]string, name string, count int) (reference.Named, error) {
	if n := ann[containerdNameAnnotation]; n != "" {
		return normalizeTagged(n)
	}
	refName := ann[imgspecv1.AnnotationRefName]
	if refName != "" && strings.ContainsAny(refName, "/:@") {
		if n, err := normalizeTagged(refName); err == nil {
			return n, nil
		}
	}
	if name == "" || count > 1 {
		if refName != "" {
			return nil, fmt.Errorf("its name %q is only a tag: give the repository with --name", refName)
		}
		return nil, errors.New("the archive names no image: give one with --name")
	}
	n, err := normalizeTagged(name)
	if err != nil {
		return nil, err
	}
	if refName != "" && reference.TagRegexp.MatchString(refName) {
		return reference.WithTag(reference.TrimNamed(n), refName)
	}
	return n, nil
}

// normalizeTagged parses ref as the store names images: fully
// qualified, ":latest" when it has neither tag nor digest.
func normalizeTagged(ref string) (reference.Named, error) {
	n, err := normalizeNamed(ref)
	if err != nil {
		return nil, fmt.Errorf("image name %q: %w", ref, err)
	}
	return n, nil
}

// importDockerArchive copies each image of a docker-archive tar with all
// the tags the archive gives it.
func (s *Store) importDockerArchive(ctx context.Context, sys *types.SystemContext, file, name string) ([]*Image, error) {
	r, err := archive.NewReader(sys, file)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w: %v", file, ErrBadArchive, err)
	}
	defer r.Close()
	lists, err := r.List()
	if err != nil {
		return nil, fmt.Errorf("import %s: %w: %v", file, ErrBadArchive, err)
	}
	var out []*Image
	for i, refs := range lists {
		var names []reference.Named
		for _, ref := range refs {
			if n := ref.DockerReference(); n != nil {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			if name == "" || len(lists) > 1 {
				return out, fmt.Errorf("import %s: image %d of %d: the archive names no image: give one with --name", file, i+1, len(lists))
			}
			n, err := normalizeTagged(name)
			if err != nil {
				return out, fmt.Errorf("import %s: %w", file, err)
			}
			names = []reference.Named{n}
		}
		img, err := s.importOne(ctx, sys, refs[0], names)
		if err != nil {
			return out, fmt.Errorf("import %s: image %s: %w", file, names[0], err)
		}
		out = append(out, img)
	}
	return out, nil
}

// importOne copies src into the store under names[0] and adds the other
// names to the stored image.
func (s *Store) importOne(ctx context.Context, sys *types.SystemContext, src types.ImageReference, names []reference.Named) (*Image, error) {
	dst, err := istorage.Transport.NewStoreReference(s.store, names[0], "")
	if err != nil {
		return nil, err
	}
	// An import is the node operator's own act on a local file, which
	// carries no signatures: the signature policy (for pulls) does not
	// apply, as for containerd's ctr import and podman load.
	pc, err := signature.NewPolicyContext(defaultPolicy().policy)
	if err != nil {
		return nil, err
	}
	defer pc.Destroy() //nolint:errcheck
	if _, err := copy.Image(ctx, pc, dst, src, &copy.Options{
		SourceCtx:          sys,
		DestinationCtx:     sys,
		ReportWriter:       io.Discard,
		ImageListSelection: copy.CopySystemImage,
	}); err != nil {
		return nil, err
	}
	simg, err := istorage.Transport.GetStoreImage(s.store, dst)
	if err != nil {
		return nil, fmt.Errorf("stored image not found: %w", err)
	}
	if len(names) > 1 {
		var more []string
		for _, n := range names[1:] {
			more = append(more, n.String())
		}
		if err := s.store.AddNames(simg.ID, more); err != nil {
			return nil, fmt.Errorf("name the image %s: %w", strings.Join(more, ", "), err)
		}
		if simg, err = s.store.Image(simg.ID); err != nil {
			return nil, err
		}
	}
	s.log.Info("imported image", "image", names[0].String(), "id", simg.ID)
	return s.describe(ctx, simg)
}
