// Package network gives pods their network: the built-in bridge (Bridge)
// that works with no setup, or the operator's CNI plugins (CNI). The
// `network` config key picks one (Choose); each pod records the backend that
// set it up, and is torn down through that one (Reloadable).
package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// ErrPortConflict: a host port the pod asks for is mapped already, to
// another pod or twice in its own config; the message names which.
var ErrPortConflict = errors.New("host port already mapped")

// Pod is what the network needs to know of a pod.
type Pod struct {
	ID        string
	Name      string // kubelet's pod name, namespace and UID (CNI args)
	Namespace string
	UID       string
	NetNS     string // path of the pod's network namespace
	Ports     []PortMapping
	// Annotations of the pod's config: CNI reads the bandwidth ones
	// (kubernetes.io/ingress-bandwidth, kubernetes.io/egress-bandwidth).
	Annotations map[string]string
	// Backend set the pod up (Result.Backend, recorded with the pod):
	// BackendBuiltin or BackendCNI; "" for pods recorded before backends
	// were (Reloadable.TeardownPod).
	Backend string
}

// PortMapping is a hostPort of the pod's config.
type PortMapping struct {
	Protocol      string // "tcp", "udp" or "sctp"
	ContainerPort int32
	HostPort      int32
	HostIP        string
}

// Result is the network a pod got.
type Result struct {
	IPs     []net.IP // first is the pod's primary IP
	Backend string   // BackendBuiltin or BackendCNI: the one that set the pod up
}

// The backends, as the `network` config key and pod records name them.
const (
	BackendBuiltin = "builtin"
	BackendCNI     = "cni"
)

// Modes of the `network` config key: a backend, or ModeAuto.
const (
	ModeAuto    = "auto" // CNI when the CNI config dir holds a config, else built-in
	ModeBuiltin = BackendBuiltin
	ModeCNI     = BackendCNI
)

// Backend is a pod network.
type Backend interface {
	SetupPod(ctx context.Context, pod Pod) (Result, error)
	// TeardownPod releases what SetupPod took. It is idempotent, and works
	// when pod.NetNS is "" (the pod's namespace is gone).
	TeardownPod(ctx context.Context, pod Pod) error
	// DetachPod is TeardownPod for a pod that stops: what must be done
	// before the stop returns is done when it returns, and finish (nil if
	// nothing is left) does the rest, to be run once the pod's processes
	// are dead. Until finish returns, nothing the pod held is handed out
	// again; a daemon that dies before it does finishes it at the next
	// start (Reconcile, with the stopped pod not live).
	DetachPod(ctx context.Context, pod Pod) (finish func(context.Context) error, err error)
	// Reconcile releases what pods not in live still hold (after a crash).
	Reconcile(ctx context.Context, live []string) error
	// Ready says why pods cannot get a network now, or nil.
	Ready() error
}

// Config configures Open.
type Config struct {
	Mode       string   // ModeAuto, ModeBuiltin or ModeCNI; "" is ModeAuto
	Bridge     string   // built-in: bridge device
	PodCIDR    string   // built-in: IPv4 or "v4,v6" dual-stack pod range; CNI: the ipRanges capability (comma-separated)
	Root       string   // persistent state; the network keeps <Root>/network
	CNIConfDir string   // a config here selects CNI
	CNIBinDirs []string // CNI plugin binaries
	Logger     *slog.Logger
}

// Choose names the backend mode selects: for ModeAuto, CNI when
// cfg.CNIConfDir holds a config, else built-in. It also returns that config
// file ("" if none).
func Choose(mode, cniConfDir string) (backend, cniFile string, err error) {
	file, err := FindCNIConfig(cniConfDir)
	if err != nil {
		if mode == ModeBuiltin {
			return BackendBuiltin, "", nil // the dir does not matter then
		}
		return "", "", err
	}
	switch mode {
	case ModeBuiltin:
		return BackendBuiltin, file, nil
	case ModeCNI:
		return BackendCNI, file, nil
	case ModeAuto, "":
		if file != "" {
			return BackendCNI, file, nil
		}
		return BackendBuiltin, "", nil
	}
	return "", "", fmt.Errorf("network %q: must be auto, builtin or cni", mode)
}

func openBuiltin(ctx context.Context, cfg Config) (*Bridge, error) {
	return NewBridge(ctx, BridgeConfig{Name: cfg.Bridge, PodCIDR: cfg.PodCIDR,
		StateDir: bridgeStateDir(cfg), Logger: cfg.Logger})
}

func openCNI(ctx context.Context, cfg Config) (*CNI, error) {
	return NewCNI(ctx, CNIConfig{ConfDir: cfg.CNIConfDir, BinDirs: cfg.CNIBinDirs, PodCIDR: cfg.PodCIDR,
		CacheDir: cniCacheDir(cfg), Logger: cfg.Logger})
}

func bridgeStateDir(cfg Config) string { return filepath.Join(cfg.Root, "network", "ipam-"+cfg.Bridge) }
func cniCacheDir(cfg Config) string    { return filepath.Join(cfg.Root, "network", "cni-cache") }

// Loopback is the network a pod gets before a bridge exists.
type Loopback struct{}

// SetupPod brings up lo in the pod's network namespace.
func (Loopback) SetupPod(ctx context.Context, pod Pod) (Result, error) {
	return Result{}, LoopbackUp(pod.NetNS)
}

// TeardownPod has nothing to release: the namespace goes with the pause.
func (Loopback) TeardownPod(ctx context.Context, pod Pod) error { return nil }

// DetachPod has nothing to release.
func (Loopback) DetachPod(ctx context.Context, pod Pod) (func(context.Context) error, error) {
	return nil, nil
}

// Reconcile has nothing to release.
func (Loopback) Reconcile(ctx context.Context, live []string) error { return nil }

// Ready is always true: loopback needs nothing from the host.
func (Loopback) Ready() error { return nil }

// LoopbackUp brings up lo in the network namespace at netnsPath.
func LoopbackUp(netnsPath string) error {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", netnsPath, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo in %s: %w", netnsPath, err)
	}
	return nil
}
