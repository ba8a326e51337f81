package image

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/types"
)

// progressLogInterval is how often a running pull logs the bytes received.
const progressLogInterval = 10 * time.Second

// pullWatch follows the bytes a pull receives from the registry. A pull is
// stalled when a transfer is open (a manifest fetch or a blob being read)
// and no byte has arrived for the timeout; time spent unpacking, with no
// transfer open, never counts (as containerd's pull progress timeout).
type pullWatch struct {
	ref     string
	timeout time.Duration // 0: never stalled
	log     *slog.Logger
	start   time.Time

	bytes  atomic.Int64
	blobs  atomic.Int64 // blob transfers finished
	open   atomic.Int64 // transfers open now
	lastNs atomic.Int64 // last activity, ns since start
}

func newPullWatch(ref string, timeout time.Duration, log *slog.Logger) *pullWatch {
	return &pullWatch{ref: ref, timeout: timeout, log: log, start: time.Now()}
}

func (w *pullWatch) touch() { w.lastNs.Store(int64(time.Since(w.start))) }

func (w *pullWatch) begin() { w.touch(); w.open.Add(1) }
func (w *pullWatch) end()   { w.touch(); w.open.Add(-1) }

// run cancels the pull with an ErrPullStalled cause when it stalls, and
// logs progress, until ctx ends. The caller owns the goroutine running it
// and stops it by cancelling ctx.
func (w *pullWatch) run(ctx context.Context, cancel context.CancelCauseFunc) {
	tick := time.Second
	if w.timeout > 0 && w.timeout/4 < tick {
		tick = max(w.timeout/4, 10*time.Millisecond)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	lastLog, loggedBytes := time.Now(), int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if b := w.bytes.Load(); now.Sub(lastLog) >= progressLogInterval && b != loggedBytes {
				w.log.Info("pulling image", "image", w.ref, "bytes", b, "blobs_done", w.blobs.Load(),
					"elapsed", time.Since(w.start).Round(time.Millisecond))
				lastLog, loggedBytes = now, b
			}
			if w.timeout <= 0 || w.open.Load() == 0 {
				continue
			}
			idle := time.Since(w.start) - time.Duration(w.lastNs.Load())
			if idle >= w.timeout {
				cancel(fmt.Errorf("pull %q: %w for %s (pull_progress_timeout) after %d bytes: the registry stopped sending",
					w.ref, ErrPullStalled, w.timeout, w.bytes.Load()))
				return
			}
		}
	}
}

// watchedRef is a source reference whose image source reports to a
// pullWatch. Only the public types.ImageSource is wrapped, so copy falls
// back to plain (non-partial) blob reads, which is all peapod uses.
type watchedRef struct {
	types.ImageReference
	w *pullWatch
}

func (r watchedRef) NewImageSource(ctx context.Context, sys *types.SystemContext) (types.ImageSource, error) {
	// Opening a docker source pings the registry and fetches the manifest.
	r.w.begin()
	defer r.w.end()
	src, err := r.ImageReference.NewImageSource(ctx, sys)
	if err != nil {
		return nil, err
	}
	return &watchedSource{ImageSource: src, w: r.w}, nil
}

type watchedSource struct {
	types.ImageSource
	w *pullWatch
}

func (s *watchedSource) GetManifest(ctx context.Context, instance *digest.Digest) ([]byte, string, error) {
	s.w.begin()
	defer s.w.end()
	b, mt, err := s.ImageSource.GetManifest(ctx, instance)
	s.w.bytes.Add(int64(len(b)))
	return b, mt, err
}

func (s *watchedSource) GetBlob(ctx context.Context, info types.BlobInfo, cache types.BlobInfoCache) (io.ReadCloser, int64, error) {
	s.w.begin()
	rc, size, err := s.ImageSource.GetBlob(ctx, info, cache)
	if err != nil {
		s.w.end()
		return nil, 0, err
	}
	return &watchedReader{rc: rc, w: s.w}, size, nil
}

// watchedReader counts bytes; the transfer closes at EOF or Close.
type watchedReader struct {
	rc   io.ReadCloser
	w    *pullWatch
	once sync.Once
}

func (r *watchedReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if n > 0 {
		r.w.bytes.Add(int64(n))
		r.w.touch()
	}
	if err == io.EOF {
		r.done()
	}
	return n, err
}

func (r *watchedReader) done() {
	r.once.Do(func() { r.w.blobs.Add(1); r.w.end() })
}

func (r *watchedReader) Close() error {
	r.done()
	return r.rc.Close()
}
