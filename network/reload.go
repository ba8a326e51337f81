package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/peapod-cri/peapod/durable"
)

// Reloadable is the daemon's pod network: the backend the `network` key
// chose (Choose) sets pods up; each pod is torn down through the backend
// that set it up (Pod.Backend), which is opened for teardown only when it
// is not the current one (teardown.go). Its CNI config can be read again on
// SIGHUP; moving between the built-in bridge and CNI needs a restart.
type Reloadable struct {
	cfg Config

	mu      sync.RWMutex
	kind    string  // BackendBuiltin or BackendCNI: what new pods get
	backend Backend // nil: network = cni and the config dir holds no config yet
	others  map[string]Backend
}

// OpenReloadable opens the backend cfg.Mode chooses. With network = cni
// and no CNI config yet the daemon still starts (pods it runs must stay
// managed) and Ready says what is missing, as containerd does until a CNI
// plugin's installer drops its config; the config is loaded once it is
// there.
func OpenReloadable(ctx context.Context, cfg Config) (*Reloadable, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	kind, file, err := Choose(cfg.Mode, cfg.CNIConfDir)
	if err != nil {
		return nil, err
	}
	r := &Reloadable{cfg: cfg, kind: kind, others: map[string]Backend{}}
	switch {
	case kind == BackendBuiltin:
		b, err := openBuiltin(ctx, cfg)
		if err != nil {
			return nil, err
		}
		r.backend = b
		msg := "pod network: built-in bridge"
		if file != "" {
			msg += " (network = builtin: the CNI config in cni_conf_dir is not used)"
		}
		cfg.Logger.Info(msg, "network", modeName(cfg.Mode), "bridge", cfg.Bridge, "pod_cidr", cfg.PodCIDR, "cni_conf_dir", cfg.CNIConfDir, "cni_config", file)
	case file == "":
		cfg.Logger.Warn("pod network: CNI, but no CNI config yet: pods cannot get a network until one is in cni_conf_dir",
			"network", modeName(cfg.Mode), "cni_conf_dir", cfg.CNIConfDir)
	default:
		c, err := openCNI(ctx, cfg)
		if err != nil {
			return nil, err
		}
		r.backend = c
		cfg.Logger.Info("pod network: CNI", "network", modeName(cfg.Mode), "config", c.file, "cni_network", c.list.Name)
		if err := c.Ready(); err != nil {
			cfg.Logger.Warn("pod network not ready", "err", err)
		}
	}
	if prev := swapLastBackend(cfg, kind); prev != "" && prev != kind {
		cfg.Logger.Warn("POD NETWORK BACKEND CHANGED since the last start: new pods get "+kind+", not "+prev+
			"; pods set up before keep their network and are torn down through "+prev,
			"network", modeName(cfg.Mode), "cni_conf_dir", cfg.CNIConfDir, "cni_config", file)
	}
	return r, nil
}

// swapLastBackend records kind as the backend of this start in
// <root>/network/backend and returns the one recorded before ("" on a first
// start), so that a change (network = auto following a conflist some
// package dropped) is logged even when no pod is running.
func swapLastBackend(cfg Config, kind string) string {
	path := filepath.Join(cfg.Root, "network", "backend")
	prev, _ := os.ReadFile(path)
	if string(prev) != kind {
		err := os.MkdirAll(filepath.Dir(path), 0o700)
		if err == nil {
			err = durable.WriteFile(path, []byte(kind), 0o600)
		}
		if err != nil {
			cfg.Logger.Warn("record the pod network backend", "err", err)
		}
	}
	return string(prev)
}

func modeName(mode string) string {
	if mode == "" {
		return ModeAuto
	}
	return mode
}

// current is the backend new pods get; it loads the CNI config when
// network = cni was waiting for one.
func (r *Reloadable) current() (Backend, error) {
	r.mu.RLock()
	b := r.backend
	r.mu.RUnlock()
	if b != nil {
		return b, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.backend != nil {
		return r.backend, nil
	}
	file, err := FindCNIConfig(r.cfg.CNIConfDir)
	if err != nil {
		return nil, err
	}
	if file == "" {
		return nil, fmt.Errorf("network = cni, but %s holds no CNI config (.conflist, .conf)", r.cfg.CNIConfDir)
	}
	c, err := openCNI(context.Background(), r.cfg)
	if err != nil {
		return nil, err
	}
	r.cfg.Logger.Info("pod network: CNI config found", "config", c.file, "cni_network", c.list.Name)
	r.backend = c
	return c, nil
}

// other opens (once) the backend of kind for tearing down the pods it set
// up; nil when kind has nothing recorded.
func (r *Reloadable) other(kind string) (Backend, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.others[kind]; ok {
		return b, nil
	}
	var b Backend
	switch kind {
	case BackendBuiltin:
		br, err := openBridgeTeardown(r.cfg)
		if err != nil {
			return nil, fmt.Errorf("open the built-in network's records: %w", err)
		}
		if br != nil { // a nil *Bridge in b would not be a nil Backend
			b = br
		}
	case BackendCNI:
		b = openCNITeardown(r.cfg)
	default:
		return nil, fmt.Errorf("unknown network backend %q in the pod's record", kind)
	}
	r.others[kind] = b
	return b, nil
}

// teardownBackend is the backend that tears down pods of kind.
func (r *Reloadable) teardownBackend(kind string) (Backend, error) {
	r.mu.RLock()
	cur, b := r.kind, r.backend
	r.mu.RUnlock()
	if kind == cur && b != nil {
		return b, nil
	}
	return r.other(kind)
}

// SetupPod implements Backend.
func (r *Reloadable) SetupPod(ctx context.Context, pod Pod) (Result, error) {
	b, err := r.current()
	if err != nil {
		return Result{}, err
	}
	return b.SetupPod(ctx, pod)
}

// TeardownPod tears the pod down through the backend that set it up. A pod
// recorded before backends were ("") goes through the current backend, and
// through the other one too when that one holds something of it, as the
// old daemon may have used either.
func (r *Reloadable) TeardownPod(ctx context.Context, pod Pod) error {
	kinds := []string{pod.Backend}
	if pod.Backend == "" {
		kinds = []string{r.Kind(), otherKind(r.Kind())}
	}
	var errs []error
	for _, kind := range kinds {
		b, err := r.teardownBackend(kind)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if b == nil {
			continue // never ran on this node: holds nothing
		}
		if pod.Backend == "" && kind != r.Kind() && !holds(b, pod.ID) {
			continue
		}
		if err := b.TeardownPod(ctx, pod); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DetachPod detaches the pod through the backend that set it up. A pod
// recorded before backends were is torn down at once (TeardownPod).
func (r *Reloadable) DetachPod(ctx context.Context, pod Pod) (func(context.Context) error, error) {
	if pod.Backend == "" {
		return nil, r.TeardownPod(ctx, pod)
	}
	b, err := r.teardownBackend(pod.Backend)
	if err != nil || b == nil {
		return nil, err // nil: never ran on this node, holds nothing
	}
	return b.DetachPod(ctx, pod)
}

func otherKind(kind string) string {
	if kind == BackendCNI {
		return BackendBuiltin
	}
	return BackendCNI
}

// holds reports whether a teardown-only backend has a record of the pod.
func holds(b Backend, podID string) bool {
	switch b := b.(type) {
	case *Bridge:
		b.mu.Lock()
		defer b.mu.Unlock()
		_, ok := b.ipam.byPod[podID]
		return ok
	case *cniCache:
		return b.holds(podID)
	}
	return true
}

// Reconcile releases what pods not in live hold, in both backends: the
// current one and, if it has records here, the other.
func (r *Reloadable) Reconcile(ctx context.Context, live []string) error {
	var errs []error
	if b, err := r.current(); err == nil {
		errs = append(errs, b.Reconcile(ctx, live))
	}
	other, err := r.other(otherKind(r.Kind()))
	if err != nil {
		errs = append(errs, err)
	} else if other != nil {
		errs = append(errs, other.Reconcile(ctx, live))
	}
	return errors.Join(errs...)
}

// Ready implements Backend.
func (r *Reloadable) Ready() error {
	b, err := r.current()
	if err != nil {
		return err
	}
	return b.Ready()
}

// Kind is BackendBuiltin or BackendCNI: the backend new pods get.
func (r *Reloadable) Kind() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.kind
}

// ReloadCNIConfDir reads the CNI config of dir and uses it for the pods set
// up from now on. It refuses (and keeps the current network) when that
// would move between the built-in bridge and CNI, or when the new config
// does not load.
func (r *Reloadable) ReloadCNIConfDir(ctx context.Context, dir string) error {
	file, err := FindCNIConfig(dir)
	if err != nil && r.cfg.Mode != ModeBuiltin {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	isCNI := r.kind == BackendCNI
	switch {
	case !isCNI && r.cfg.Mode == ModeBuiltin:
		r.cfg.CNIConfDir = dir // network = builtin: the dir is not used
		return nil
	case !isCNI && file != "":
		return fmt.Errorf("%s holds CNI config %s, but pods are on the built-in bridge: switching to CNI needs a restart", dir, filepath.Base(file))
	case !isCNI:
		r.cfg.CNIConfDir = dir // still no CNI config: nothing to load
		return nil
	case file == "" && r.cfg.Mode == ModeCNI:
		return fmt.Errorf("%s holds no CNI config: network = cni needs one", dir)
	case file == "":
		return fmt.Errorf("%s holds no CNI config: switching to the built-in bridge needs a restart", dir)
	}
	cfg := r.cfg
	cfg.CNIConfDir = dir
	c, err := openCNI(ctx, cfg)
	if err != nil {
		return err
	}
	if err := c.Ready(); err != nil {
		cfg.Logger.Warn("pod network not ready", "err", err)
	}
	r.cfg, r.backend = cfg, c
	return nil
}
