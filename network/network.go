// Package network gives pods their network: the built-in bridge (Bridge)
// that works with no setup, or the operator's CNI plugins (CNI) when the CNI
// config dir holds a config. Open picks one.
package network

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

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
	IPs []net.IP // first is the pod's primary IP
}

// Backend is a pod network.
type Backend interface {
	SetupPod(ctx context.Context, pod Pod) (Result, error)
	// TeardownPod releases what SetupPod took. It is idempotent, and works
	// when pod.NetNS is "" (the pod's namespace is gone).
	TeardownPod(ctx context.Context, pod Pod) error
	// Reconcile releases what pods not in live still hold (after a crash).
	Reconcile(ctx context.Context, live []string) error
	// Ready says why pods cannot get a network now, or nil.
	Ready() error
}

// Config configures Open.
type Config struct {
	Bridge     string   // built-in: bridge device
	PodCIDR    string   // built-in: IPv4 or "v4,v6" dual-stack pod range; CNI: the ipRanges capability (comma-separated)
	Root       string   // persistent state; the network keeps <Root>/network
	CNIConfDir string   // a config here selects CNI
	CNIBinDirs []string // CNI plugin binaries
	Logger     *slog.Logger
}

// Open returns CNI when cfg.CNIConfDir holds a config, else the built-in
// bridge. Errors are config errors; a host that is not ready yet (a plugin
// or nft missing) is reported by Ready instead.
func Open(ctx context.Context, cfg Config) (Backend, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	file, err := FindCNIConfig(cfg.CNIConfDir)
	if err != nil {
		return nil, err
	}
	if file != "" {
		c, err := NewCNI(ctx, CNIConfig{ConfDir: cfg.CNIConfDir, BinDirs: cfg.CNIBinDirs, PodCIDR: cfg.PodCIDR,
			CacheDir: filepath.Join(cfg.Root, "network", "cni-cache")})
		if err != nil {
			return nil, err
		}
		cfg.Logger.Info("pod network: CNI", "config", c.file, "network", c.list.Name)
		if err := c.Ready(); err != nil {
			cfg.Logger.Warn("pod network not ready", "err", err)
		}
		return c, nil
	}
	b, err := NewBridge(ctx, BridgeConfig{Name: cfg.Bridge, PodCIDR: cfg.PodCIDR,
		StateDir: filepath.Join(cfg.Root, "network", "ipam-"+cfg.Bridge), Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("pod network: built-in bridge", "bridge", cfg.Bridge, "pod_cidr", cfg.PodCIDR, "cni_conf_dir", cfg.CNIConfDir+" (empty)")
	return b, nil
}

// Loopback is the network a pod gets before a bridge exists.
type Loopback struct{}

// SetupPod brings up lo in the pod's network namespace.
func (Loopback) SetupPod(ctx context.Context, pod Pod) (Result, error) {
	return Result{}, LoopbackUp(pod.NetNS)
}

// TeardownPod has nothing to release: the namespace goes with the pause.
func (Loopback) TeardownPod(ctx context.Context, pod Pod) error { return nil }

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
