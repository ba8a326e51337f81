package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/signature"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
)

// maxParallelDownloads is how many blobs of one image are fetched at once
// (containers/image's default is 6; containerd's CRI default is 3).
const maxParallelDownloads = 6

// candidates lists the fully qualified references ref may mean, in order.
// A short name with a short-name alias (an [aliases] entry of
// registries.conf or a drop-in such as shortnames.conf) means only the
// alias's target, as containers-registries.conf(5) says; other short names
// expand over unqualified-search-registries (docker.io when none is
// configured). Like CRI-O, peapod never prompts and never tries
// "localhost/" for a pull.
func (s *Store) candidates(ref string) ([]reference.Named, error) {
	if !isShortName(ref) {
		n, err := normalizeNamed(ref)
		if err != nil {
			return nil, err
		}
		return []reference.Named{n}, nil
	}
	if n, err := s.aliasOf(ref); n != nil || err != nil {
		if err != nil {
			return nil, err
		}
		return []reference.Named{n}, nil
	}
	search, err := sysregistriesv2.UnqualifiedSearchRegistries(s.systemContext())
	if err != nil {
		return nil, err
	}
	if len(search) == 0 {
		search = []string{"docker.io"}
	}
	var out []reference.Named
	for _, reg := range search {
		n, err := normalizeNamed(reg + "/" + ref)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// Pull pulls ref (short, tagged or by digest) for this machine's platform
// and returns the stored image. Concurrent pulls of the same reference with
// the same credentials share one transfer. Errors wrap one of the package's
// sentinels (ErrNotFound, ErrUnauthorized, ErrRegistryUnavailable,
// ErrCorrupt, ErrNoSpace, ErrPullStalled) when the cause is known. A failed
// pull leaves no image and no layer behind.
func (s *Store) Pull(ctx context.Context, ref string, auth *Auth) (*Image, error) {
	cands, err := s.candidates(ref)
	if err != nil {
		return nil, err
	}
	sys := *s.systemContext() // a reload during the pull does not change it
	pol := s.policy.Load()
	if auth != nil && *auth != (Auth{}) {
		sys.DockerAuthConfig = &types.DockerAuthConfig{
			Username: auth.Username, Password: auth.Password, IdentityToken: auth.IdentityToken,
		}
		sys.DockerBearerRegistryToken = auth.RegistryToken
	}
	var key strings.Builder
	for _, c := range cands {
		key.WriteString(c.String() + "\n")
	}
	key.WriteString(authKey(auth))
	img, err := s.flights.do(ctx, s.baseCtx, key.String(), func(ctx context.Context) (*Image, error) {
		return s.pull(ctx, ref, cands, &sys, pol)
	})
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrPullStalled) {
		return nil, fmt.Errorf("pull %q: %w", ref, ctx.Err())
	}
	return img, err
}

// authKey tells credentials apart without keeping them in the clear.
func authKey(a *Auth) string {
	if a == nil || *a == (Auth{}) {
		return ""
	}
	h := sha256.Sum256([]byte(a.Username + "\x00" + a.Password + "\x00" + a.IdentityToken + "\x00" + a.RegistryToken))
	return hex.EncodeToString(h[:])
}

func (s *Store) pull(ctx context.Context, ref string, cands []reference.Named, sys *types.SystemContext, pol *pullPolicy) (img *Image, err error) {
	s.beginPull()
	defer func() { s.endPull(err != nil) }()
	var errs []error
	for _, named := range cands {
		img, err := s.pullOne(ctx, sys, pol, named)
		if err == nil {
			return img, nil
		}
		if errors.Is(err, ErrPullStalled) || errors.Is(err, ErrSignatureRejected) {
			return nil, err // a refused image is not looked for elsewhere
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pull %q: %w", ref, ctx.Err())
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	err = errors.Join(errs...)
	if allNotFound(errs) {
		return nil, fmt.Errorf("image %q: %w: %v", ref, ErrNotFound, err)
	}
	return nil, fmt.Errorf("pull %q: %w", ref, err)
}

func allNotFound(errs []error) bool {
	for _, e := range errs {
		if !errors.Is(e, ErrNotFound) {
			return false
		}
	}
	return true
}

func (s *Store) pullOne(ctx context.Context, sys *types.SystemContext, pol *pullPolicy, named reference.Named) (*Image, error) {
	watch := newPullWatch(named.String(), s.progressTimeout, s.log)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var watching sync.WaitGroup
	watching.Add(1)
	go func() { defer watching.Done(); watch.run(ctx, cancel) }()
	defer watching.Wait()
	defer cancel(nil) // runs before Wait: stops the watch

	s.log.Info("pulling image", "image", named.String())
	var simg *storage.Image
	err := errFallback
	if !s.noFastPull {
		simg, err = s.fastPull(ctx, sys, pol, named, watch)
	}
	if errors.Is(err, errFallback) {
		s.log.Debug("pulling with containers/image's copy", "image", named.String())
		simg, err = s.copyPull(ctx, sys, pol, named, watch)
	}
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrPullStalled) {
			err = cause
		} else if !errors.Is(err, ErrSignatureRejected) && isPolicyRefusal(err) {
			err = policyRefusal(pol, named, err) // refused in containers/image's copy
		}
		err = classifyPullError(named.String(), err)
		if s.observer != nil {
			s.observer.PullDone(watch.bytes.Load(), time.Since(watch.start), err)
		}
		s.log.Info("image pull failed", "image", named.String(), "bytes", watch.bytes.Load(),
			"elapsed", time.Since(watch.start).Round(time.Millisecond), "error", err)
		return nil, err
	}
	if s.observer != nil {
		s.observer.PullDone(watch.bytes.Load(), time.Since(watch.start), nil)
	}
	s.log.Info("pulled image", "image", named.String(), "id", simg.ID, "bytes", watch.bytes.Load(),
		"blobs", watch.blobs.Load(), "elapsed", time.Since(watch.start).Round(time.Millisecond))
	return s.describe(ctx, simg)
}

// copyPull pulls named with containers/image's copy: the images the fast
// pull leaves to it (fastpull.go).
func (s *Store) copyPull(ctx context.Context, sys *types.SystemContext, pol *pullPolicy, named reference.Named, watch *pullWatch) (*storage.Image, error) {
	// The watched source below hides sigstore signatures from the copy
	// (containers/image's public ImageSource API carries only simple
	// signing ones), so the policy judges the manifest through a plain
	// source and the copy is pinned to the digest it judged.
	judged, err := judgeManifest(ctx, sys, pol, named)
	if err != nil {
		return nil, err
	}
	pinned, err := reference.WithDigest(reference.TrimNamed(named), judged)
	if err != nil {
		return nil, err
	}
	srcRef, err := docker.NewReference(pinned)
	if err != nil {
		return nil, err
	}
	dstRef, err := istorage.Transport.NewStoreReference(s.store, named, "")
	if err != nil {
		return nil, err
	}
	pc, err := signature.NewPolicyContext(defaultPolicy().policy) // judged above
	if err != nil {
		return nil, err
	}
	defer pc.Destroy() //nolint:errcheck
	if _, err := copy.Image(ctx, pc, dstRef, watchedRef{ImageReference: srcRef, w: watch}, &copy.Options{
		SourceCtx:            sys,
		DestinationCtx:       sys,
		ReportWriter:         io.Discard,
		ImageListSelection:   copy.CopySystemImage,
		MaxParallelDownloads: maxParallelDownloads,
	}); err != nil {
		return nil, err
	}
	simg, err := istorage.Transport.GetStoreImage(s.store, dstRef)
	if err != nil {
		return nil, fmt.Errorf("pull %q: stored image not found: %w", named.String(), err)
	}
	return simg, nil
}

// ---------------------------------------------------------------- shared pulls

// flights runs one pull per key; callers of the same key wait for it. The
// pull runs on a context of its own, cancelled when every waiter has gone
// or the store closes, so one impatient caller does not fail the others.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
	wg sync.WaitGroup
}

type flight struct {
	done    chan struct{}
	img     *Image
	err     error
	waiters int
	cancel  context.CancelFunc
}

func (f *flights) do(ctx, base context.Context, key string, fn func(context.Context) (*Image, error)) (*Image, error) {
	f.mu.Lock()
	fl := f.m[key]
	if fl == nil {
		fctx, cancel := context.WithCancel(base)
		fl = &flight{done: make(chan struct{}), cancel: cancel}
		f.m[key] = fl
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			img, err := fn(fctx)
			cancel()
			f.mu.Lock()
			delete(f.m, key)
			fl.img, fl.err = img, err
			f.mu.Unlock()
			close(fl.done)
		}()
	}
	fl.waiters++
	f.mu.Unlock()
	select {
	case <-fl.done:
		return fl.img, fl.err
	case <-ctx.Done():
		f.mu.Lock()
		fl.waiters--
		if fl.waiters == 0 {
			fl.cancel()
		}
		f.mu.Unlock()
		return nil, ctx.Err()
	}
}

// wait returns when every pull has ended.
func (f *flights) wait() { f.wg.Wait() }

// ---------------------------------------------------------------- failed-pull cleanup

func (s *Store) beginPull() {
	s.gcMu.Lock()
	for s.gcRunning {
		s.gcIdle.Wait()
	}
	s.running++
	s.gcMu.Unlock()
}

// endPull removes the layers failed pulls left, once no pull is running:
// containers/storage commits each layer as it arrives, and keeps it when a
// later step fails. The last pull to end does the cleanup before returning.
func (s *Store) endPull(failed bool) {
	s.gcMu.Lock()
	s.running--
	s.gcPending = s.gcPending || failed
	if s.running > 0 || !s.gcPending {
		s.gcMu.Unlock()
		return
	}
	s.gcPending, s.gcRunning = false, true
	s.gcMu.Unlock()

	if err := s.removeOrphanLayers(); err != nil {
		s.log.Warn("removing layers left by a failed pull", "error", err)
	}

	s.gcMu.Lock()
	s.gcRunning = false
	s.gcIdle.Broadcast()
	s.gcMu.Unlock()
}

// removeOrphanLayers deletes image layers (layers made from a registry
// blob) that no image or container uses, children first. Container
// writable layers are never touched.
func (s *Store) removeOrphanLayers() error {
	s.removeMu.Lock()
	defer s.removeMu.Unlock()
	s.rw.use.Lock() // the writable layers' parents are in use
	defer s.rw.use.Unlock()
	layers, err := s.store.Layers()
	if err != nil {
		return err
	}
	images, err := s.store.Images()
	if err != nil {
		return err
	}
	containers, err := s.store.Containers()
	if err != nil {
		return err
	}
	byID := map[string]*storage.Layer{}
	for i := range layers {
		byID[layers[i].ID] = &layers[i]
	}
	used := map[string]bool{}
	var mark func(id string)
	mark = func(id string) {
		for id != "" && !used[id] {
			used[id] = true
			l := byID[id]
			if l == nil {
				return
			}
			id = l.Parent
		}
	}
	for _, img := range images {
		mark(img.TopLayer)
		for _, id := range img.MappedTopLayers {
			mark(id)
		}
	}
	for _, c := range containers {
		mark(c.LayerID)
	}
	for _, rec := range s.rw.snapshot() {
		mark(rec.Parent)
	}
	children := map[string]int{}
	for _, l := range layers {
		if l.Parent != "" {
			children[l.Parent]++
		}
	}
	var errs []error
	for removed := true; removed; {
		removed = false
		for id, l := range byID {
			fromRegistry := l.UncompressedDigest != "" || l.CompressedDigest != ""
			if used[id] || !fromRegistry || children[id] > 0 {
				continue
			}
			if err := s.store.DeleteLayer(id); err != nil {
				errs = append(errs, fmt.Errorf("delete layer %s: %w", id, err))
				used[id] = true // do not retry
				continue
			}
			s.log.Info("removed layer left by a failed pull", "layer", id)
			delete(byID, id)
			if l.Parent != "" {
				children[l.Parent]--
			}
			removed = true
		}
	}
	return errors.Join(errs...)
}
