package network

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
)

// Reloadable is the Backend Open picked, whose CNI config can be read again
// on SIGHUP. Only CNI to CNI is reloaded (a new dir, or a changed config in
// the same one): pods set up by the built-in bridge must be torn down by it,
// so moving between the bridge and CNI needs a restart.
type Reloadable struct {
	cfg Config

	mu      sync.RWMutex
	backend Backend
}

// OpenReloadable opens the backend as Open does.
func OpenReloadable(ctx context.Context, cfg Config) (*Reloadable, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b, err := Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Reloadable{cfg: cfg, backend: b}, nil
}

func (r *Reloadable) current() Backend {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.backend
}

// SetupPod implements Backend.
func (r *Reloadable) SetupPod(ctx context.Context, pod Pod) (Result, error) {
	return r.current().SetupPod(ctx, pod)
}

// TeardownPod implements Backend.
func (r *Reloadable) TeardownPod(ctx context.Context, pod Pod) error {
	return r.current().TeardownPod(ctx, pod)
}

// Reconcile implements Backend.
func (r *Reloadable) Reconcile(ctx context.Context, live []string) error {
	return r.current().Reconcile(ctx, live)
}

// Ready implements Backend.
func (r *Reloadable) Ready() error { return r.current().Ready() }

// Kind is "cni" or "bridge".
func (r *Reloadable) Kind() string {
	if _, ok := r.current().(*CNI); ok {
		return "cni"
	}
	return "bridge"
}

// ReloadCNIConfDir reads the CNI config of dir and uses it for the pods set
// up or torn down from now on. It refuses (and keeps the current network)
// when that would move between the built-in bridge and CNI, or when the
// new config does not load.
func (r *Reloadable) ReloadCNIConfDir(ctx context.Context, dir string) error {
	file, err := FindCNIConfig(dir)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, isCNI := r.backend.(*CNI)
	switch {
	case !isCNI && file != "":
		return fmt.Errorf("%s holds CNI config %s, but pods are on the built-in bridge: switching to CNI needs a restart", dir, filepath.Base(file))
	case !isCNI:
		r.cfg.CNIConfDir = dir // still no CNI config: nothing to load
		return nil
	case file == "":
		return fmt.Errorf("%s holds no CNI config: switching to the built-in bridge needs a restart", dir)
	}
	cfg := r.cfg
	cfg.CNIConfDir = dir
	c, err := NewCNI(ctx, CNIConfig{ConfDir: dir, BinDirs: cfg.CNIBinDirs, PodCIDR: cfg.PodCIDR,
		CacheDir: filepath.Join(cfg.Root, "network", "cni-cache")})
	if err != nil {
		return err
	}
	if err := c.Ready(); err != nil {
		cfg.Logger.Warn("pod network not ready", "err", err)
	}
	r.cfg, r.backend = cfg, c
	return nil
}
