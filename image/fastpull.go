package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
	graphdriver "go.podman.io/storage/drivers"
	"golang.org/x/sync/errgroup"
)

// The fast pull: peapod's own copy of a registry image into storage, for
// the images a node runs (one Docker v2 schema 2 or OCI image manifest,
// possibly behind an index, ordinary layers). Every missing layer is
// fetched, verified and unpacked at once, each into a staging directory,
// then the layers are committed in order and the image recorded exactly as
// containers/image's storage destination records it (same layer IDs, image
// ID, names and manifest/config items), so that images pulled either way
// are one and the same to storage, to peapod and to a later pull.
//
// containers/image's copy fetches in parallel too, but storage creates
// each layer only on top of its parent, unpacking it in a re-executed
// child: one layer after the other (~100 ms per 10 MiB layer here, about
// containerd's time for the whole pull of 5 such layers).
//
// What the fast pull does not handle, containers/image's copy does
// (errFallback, decided before anything is written): schema 1 manifests,
// non-image artifacts, encrypted layers, layers with foreign URLs.

// errFallback says the image is left to containers/image's copy.
var errFallback = errors.New("left to containers/image")

// maxConfigBytes bounds an image config read into memory.
const maxConfigBytes = 8 << 20

// maxImageLayers is the most layers an image may have: storage's overlay
// driver mounts a root filesystem of at most 500 lower layers ("max depth
// exceeded"), so a deeper image could be stored but never run.
const maxImageLayers = 500

// maxLayerTrailer bounds what is read of a layer blob past the end of its
// tar (the tar's and the compressor's padding, a few KiB), and past a
// failed unpack (only to tell a blob that is not what the manifest says):
// neither is unpacked, so without a bound a registry could keep a pull
// reading for ever, faster than pull_progress_timeout can see, when the
// declared size does not stop it.
const maxLayerTrailer = 1 << 20

type fastPull struct {
	s     *Store
	src   types.ImageSource
	named reference.Named

	top, man             []byte // the manifest as fetched, the platform's image manifest
	topDigest, manDigest digest.Digest
	m                    manifest.Manifest
}

// fastPull pulls named as described above, or returns errFallback.
func (s *Store) fastPull(ctx context.Context, sys *types.SystemContext, pol *pullPolicy, named reference.Named, watch *pullWatch) (*storage.Image, error) {
	srcRef, err := docker.NewReference(named)
	if err != nil {
		return nil, err
	}
	src, err := watchedRef{ImageReference: srcRef, w: watch}.NewImageSource(ctx, sys)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	p := &fastPull{s: s, src: src, named: named}
	if err := p.resolveManifest(ctx, sys); err != nil {
		return nil, err
	}
	// The policy judges the manifest fetched above (signatures name its
	// digest), before anything is stored or found already stored.
	if err := checkPolicy(ctx, pol, unwatched(src), named); err != nil {
		return nil, err
	}
	id, err := p.m.ImageID(nil) // the config digest, as containers/image's storage destination computes it
	if err != nil {
		return nil, errFallback
	}
	if simg, err := s.store.Image(id); err == nil && simg.ID == id {
		// Present (a pull of another tag, or again): its layers are there.
		return p.recordImage(id, simg.TopLayer, nil, "", nil)
	}

	cfgInfo := p.m.ConfigInfo()
	cfgBlob, err := p.fetchConfig(ctx, cfgInfo)
	if err != nil {
		return nil, err
	}
	var cfg imgspecv1.Image
	if err := json.Unmarshal(cfgBlob, &cfg); err != nil {
		return nil, fmt.Errorf("image config %s: %w: %v", cfgInfo.Digest, ErrCorrupt, err)
	}
	layers := p.m.LayerInfos()
	if len(cfg.RootFS.DiffIDs) != len(layers) {
		return nil, errFallback
	}
	chain := chainIDs(cfg.RootFS.DiffIDs)
	if err := p.fetchLayers(ctx, layers, cfg.RootFS.DiffIDs, chain); err != nil {
		return nil, err
	}
	top := ""
	if len(chain) > 0 {
		top = chain[len(chain)-1]
	}
	return p.recordImage(id, top, cfgBlob, cfgInfo.Digest, cfg.Created)
}

// resolveManifest fetches the manifest, follows an index to this
// platform's image and checks both against the digests that name them.
func (p *fastPull) resolveManifest(ctx context.Context, sys *types.SystemContext) error {
	top, topType, err := p.src.GetManifest(ctx, nil)
	if err != nil {
		return err
	}
	if dn, ok := p.named.(reference.Digested); ok {
		if err := checkManifestDigest(top, dn.Digest()); err != nil {
			return err
		}
	}
	p.top, p.man = top, top
	if p.topDigest, err = manifest.Digest(top); err != nil {
		return err
	}
	p.manDigest = p.topDigest
	manType := manifest.NormalizedMIMEType(topType)
	if manifest.MIMETypeIsMultiImage(manType) {
		list, err := manifest.ListFromBlob(top, manType)
		if err != nil {
			return fmt.Errorf("parse image index: %w", err)
		}
		inst, err := list.ChooseInstance(sys)
		if err != nil {
			return fmt.Errorf("choosing the image for this platform: %w", err)
		}
		man, instType, err := p.src.GetManifest(ctx, &inst)
		if err != nil {
			return err
		}
		if err := checkManifestDigest(man, inst); err != nil {
			return err
		}
		p.man, p.manDigest, manType = man, inst, manifest.NormalizedMIMEType(instType)
	}
	// Before anything is fetched, and before the fallback to
	// containers/image's copy (schema 1 too): storing each layer rewrites
	// the store's list of every layer and the overlay driver's list of the
	// lower ones, so a hostile image of 20,000 empty layers (a 4 MiB
	// manifest) would cost hours of writes in the square of the count,
	// under the store's lock, for an image no container can mount.
	if m, err := manifest.FromBlob(p.man, manType); err == nil && len(m.LayerInfos()) > maxImageLayers {
		return fmt.Errorf("the image has %d layers, more than the %d a root filesystem can stack: %w", len(m.LayerInfos()), maxImageLayers, ErrTooManyLayers)
	}
	switch manType {
	case manifest.DockerV2Schema2MediaType, imgspecv1.MediaTypeImageManifest:
	default:
		return errFallback
	}
	m, err := manifest.FromBlob(p.man, manType)
	if err != nil {
		return fmt.Errorf("parse manifest: %w", err)
	}
	switch m.ConfigInfo().MediaType {
	case manifest.DockerV2Schema2ConfigMediaType, imgspecv1.MediaTypeImageConfig:
	default:
		return errFallback // an artifact, not an image
	}
	for _, l := range m.LayerInfos() {
		// Both formats require the size, and it bounds what is read of the
		// blob: without it (0, or -1 for unknown) a registry could send
		// for ever.
		if l.Size <= 0 {
			return fmt.Errorf("layer %s: the manifest gives no size (%d): %w", l.Digest, l.Size, ErrCorrupt)
		}
		if len(l.URLs) > 0 || strings.Contains(l.MediaType, "encrypted") || l.EmptyLayer {
			return errFallback
		}
	}
	p.m = m
	return nil
}

func checkManifestDigest(blob []byte, want digest.Digest) error {
	ok, err := manifest.MatchesDigest(blob, want)
	if err != nil {
		return fmt.Errorf("manifest digest %s: %w", want, err)
	}
	if !ok {
		return fmt.Errorf("manifest does not match digest %s: %w", want, ErrCorrupt)
	}
	return nil
}

func (p *fastPull) fetchConfig(ctx context.Context, info types.BlobInfo) ([]byte, error) {
	if err := info.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("image config digest %q: %w", info.Digest, err)
	}
	rc, _, err := p.src.GetBlob(ctx, info, none.NoCache)
	if err != nil {
		return nil, fmt.Errorf("fetch image config %s: %w", info.Digest, err)
	}
	defer rc.Close()
	blob, err := io.ReadAll(io.LimitReader(rc, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch image config %s: %w", info.Digest, err)
	}
	if len(blob) > maxConfigBytes {
		return nil, fmt.Errorf("image config %s is over %d bytes", info.Digest, maxConfigBytes)
	}
	if got := info.Digest.Algorithm().FromBytes(blob); got != info.Digest {
		return nil, fmt.Errorf("image config %s: content digest %s does not match: %w", info.Digest, got, ErrCorrupt)
	}
	return blob, nil
}

// chainIDs are the storage layer IDs of a stack of layers, as
// containers/image names them: the first layer's diff ID, then
// sha256("<parent ID>+<diff ID>").
func chainIDs(diffIDs []digest.Digest) []string {
	ids := make([]string, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			ids[i] = d.Encoded()
			continue
		}
		ids[i] = digest.Canonical.FromString(ids[i-1] + "+" + d.Encoded()).Encoded()
	}
	return ids
}

// fetchLayers stages every layer not yet stored, maxParallelDownloads at
// a time, and commits each as soon as it and the layers below it are
// staged. Staged layers of a failed pull are removed; committed ones are
// the failed-pull cleanup's (endPull).
func (p *fastPull) fetchLayers(ctx context.Context, layers []manifest.LayerInfo, diffIDs []digest.Digest, chain []string) error {
	staged := make([]*graphdriver.DriverWithDifferOutput, len(layers))
	ready := make([]chan struct{}, len(layers)) // closed when staged[i] is set or the layer is stored
	defer func() {
		for _, out := range staged {
			if out != nil {
				if err := p.s.store.CleanupStagedLayer(out); err != nil {
					p.s.log.Warn("removing a staged layer", "dir", out.Target, "error", err)
				}
			}
		}
	}()
	for i := range ready {
		ready[i] = make(chan struct{})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxParallelDownloads + 1) // + the committer
	g.Go(func() error {
		for i := range layers {
			select {
			case <-ready[i]:
			case <-gctx.Done():
				return gctx.Err()
			}
			if staged[i] == nil {
				continue
			}
			if err := p.commitLayer(chain, i, staged[i]); err != nil {
				return fmt.Errorf("commit layer %s: %w", layers[i].Digest, err)
			}
			staged[i] = nil
		}
		return nil
	})
	for i := range layers {
		if p.s.layerStored(chain[i]) {
			close(ready[i])
			continue
		}
		g.Go(func() error {
			out, err := p.stageLayer(gctx, layers[i].BlobInfo, diffIDs[i])
			if err != nil {
				return err
			}
			staged[i] = out
			close(ready[i])
			return nil
		})
	}
	return g.Wait()
}

// commitLayer makes staged layer i of chain a storage layer on top of
// layer i-1. Commits are serialised store-wide, so that a layer two pulls
// share is made once.
func (p *fastPull) commitLayer(chain []string, i int, out *graphdriver.DriverWithDifferOutput) error {
	p.s.commitMu.Lock()
	defer p.s.commitMu.Unlock()
	if p.s.layerStored(chain[i]) {
		return p.s.store.CleanupStagedLayer(out)
	}
	parent := ""
	if i > 0 {
		parent = chain[i-1]
	}
	stagingDir := filepath.Dir(out.Target)
	if _, err := p.s.store.ApplyStagedLayer(storage.ApplyStagedLayerOptions{
		ID: chain[i], ParentLayer: parent, DiffOutput: out, DiffOptions: &graphdriver.ApplyDiffWithDifferOpts{},
	}); err != nil {
		return err
	}
	// The driver renames the layer's files out of the staging directory and
	// leaves it, empty, until the store is next opened.
	if err := os.Remove(stagingDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		p.s.log.Warn("removing an empty staging directory", "dir", stagingDir, "error", err)
	}
	return nil
}

func (s *Store) layerStored(id string) bool {
	l, err := s.store.Layer(id)
	return err == nil && l.ID == id
}

// stageLayer fetches one layer blob and unpacks it into a staging
// directory while checking both its digest and its diff ID.
func (p *fastPull) stageLayer(ctx context.Context, info types.BlobInfo, diffID digest.Digest) (_ *graphdriver.DriverWithDifferOutput, err error) {
	if err := info.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("layer digest %q: %w", info.Digest, err)
	}
	if err := diffID.Validate(); err != nil {
		return nil, fmt.Errorf("layer diff ID %q: %w", diffID, err)
	}
	start := time.Now()
	rc, _, err := p.src.GetBlob(ctx, info, none.NoCache)
	if err != nil {
		return nil, fmt.Errorf("fetch layer %s: %w", info.Digest, err)
	}
	defer rc.Close()
	blobHash := info.Digest.Algorithm().Hash()
	blob := &countingReader{r: io.TeeReader(rc, blobHash)}
	var limited io.Reader = blob
	if info.Size > 0 {
		limited = io.LimitReader(blob, info.Size+1) // a registry sending more is caught below
	}
	dec, _, err := compression.AutoDecompress(limited)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", info.Digest, err)
	}
	diffHash := diffID.Algorithm().Hash()
	tarStream := &countingReader{r: io.TeeReader(dec, diffHash)}

	out, err := p.s.store.PrepareStagedLayer(nil, &tarDiffer{r: tarStream})
	// Stop the decompressor's read-ahead before the blob is read here.
	if cerr := dec.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if out != nil && out.Target != "" {
			p.s.store.CleanupStagedLayer(out) //nolint:errcheck
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		// A stream that does not decompress or unpack is most often a blob
		// that is not what the manifest says: read it to the end to tell,
		// if the end is near.
		if n, rerr := io.Copy(io.Discard, io.LimitReader(limited, maxLayerTrailer+1)); rerr == nil && n <= maxLayerTrailer {
			if got := digest.NewDigest(info.Digest.Algorithm(), blobHash); got != info.Digest {
				return nil, fmt.Errorf("layer %s: content digest %s does not match: %w (%v)", info.Digest, got, ErrCorrupt, err)
			}
		}
		return nil, fmt.Errorf("layer %s: %w", info.Digest, err)
	}
	defer func() {
		if err != nil {
			p.s.store.CleanupStagedLayer(out) //nolint:errcheck
		}
	}()
	// What the decompressor left: padding, else the blob is not a layer.
	if n, err := io.Copy(io.Discard, io.LimitReader(limited, maxLayerTrailer+1)); err != nil {
		return nil, fmt.Errorf("fetch layer %s: %w", info.Digest, err)
	} else if n > maxLayerTrailer {
		return nil, fmt.Errorf("layer %s: more than %d bytes after the end of its tar: %w", info.Digest, maxLayerTrailer, ErrCorrupt)
	}
	if info.Size > 0 && blob.n != info.Size {
		return nil, fmt.Errorf("layer %s: %d bytes received, the manifest says %d: %w", info.Digest, blob.n, info.Size, ErrCorrupt)
	}
	if got := digest.NewDigest(info.Digest.Algorithm(), blobHash); got != info.Digest {
		return nil, fmt.Errorf("layer %s: content digest %s does not match: %w", info.Digest, got, ErrCorrupt)
	}
	if got := digest.NewDigest(diffID.Algorithm(), diffHash); got != diffID {
		return nil, fmt.Errorf("layer %s: uncompressed digest %s does not match the config's diff ID %s: %w", info.Digest, got, diffID, ErrCorrupt)
	}
	out.CompressedDigest = info.Digest
	out.UncompressedDigest = diffID
	out.Size = tarStream.n
	p.s.log.Debug("layer staged", "image", p.named.String(), "layer", info.Digest.String(),
		"bytes", blob.n, "elapsed", time.Since(start).Round(time.Millisecond))
	return out, nil
}

// recordImage creates the image record on top layer top (or, for an image
// already stored, completes it), with the items containers/image stores:
// the config under its digest, each manifest under "manifest-<digest>",
// the platform's manifest as "manifest", and named as a name.
func (p *fastPull) recordImage(id, top string, cfgBlob []byte, cfgDigest digest.Digest, created *time.Time) (*storage.Image, error) {
	st := p.s.store
	var items []storage.ImageBigDataOption
	if cfgBlob != nil {
		items = append(items, storage.ImageBigDataOption{Key: cfgDigest.String(), Data: cfgBlob, Digest: digest.Canonical.FromBytes(cfgBlob)})
	}
	if !bytes.Equal(p.top, p.man) {
		items = append(items, storage.ImageBigDataOption{Key: manifestKey(p.topDigest), Data: p.top, Digest: p.topDigest})
	}
	items = append(items,
		storage.ImageBigDataOption{Key: manifestKey(p.manDigest), Data: p.man, Digest: p.manDigest},
		storage.ImageBigDataOption{Key: storage.ImageDigestBigDataKey, Data: p.man, Digest: p.manDigest})
	opts := &storage.ImageOptions{BigData: items, Metadata: "{}"}
	if created != nil {
		opts.CreationDate = *created
	}

	p.s.commitMu.Lock()
	defer p.s.commitMu.Unlock()
	simg, err := st.Image(id)
	isNew := false
	if err != nil || simg.ID != id {
		simg, err = st.CreateImage(id, nil, top, "", opts)
		isNew = err == nil
		if err != nil {
			return nil, fmt.Errorf("create image %s: %w", id, err)
		}
	} else {
		if simg.TopLayer != top {
			return nil, fmt.Errorf("image %s already exists with another top layer: %w", id, storage.ErrDuplicateID)
		}
		for _, it := range items {
			if simg.BigDataDigests[it.Key] == it.Digest {
				continue
			}
			if err := st.SetImageBigData(id, it.Key, it.Data, manifest.Digest); err != nil {
				return nil, fmt.Errorf("save %s of image %s: %w", it.Key, id, err)
			}
		}
	}
	if slices.Contains(simg.Names, p.named.String()) {
		return simg, nil
	}
	if err := st.AddNames(id, []string{p.named.String()}); err != nil {
		if isNew {
			st.DeleteImage(id, true) //nolint:errcheck
		}
		return nil, fmt.Errorf("name image %s %s: %w", id, p.named.String(), err)
	}
	return st.Image(id)
}

func manifestKey(d digest.Digest) string {
	return storage.ImageDigestManifestBigDataNamePrefix + "-" + d.String()
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}
