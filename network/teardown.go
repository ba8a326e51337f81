package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/containernetworking/cni/libcni"
)

// The teardown-only backends release the pods of a backend that is not the
// one pods get now (the `network` key or the CNI config dir changed since
// they were set up). They read what that backend recorded and never set
// anything up on the host: no bridge, no nftables table, no CNI ADD.

// openBridgeTeardown opens the built-in network's records for teardown, or
// returns nil when it has none (it never ran with this bridge).
func openBridgeTeardown(cfg Config) (*Bridge, error) {
	dir := bridgeStateDir(cfg)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	subnet, subnet6, err := ParsePodCIDRs(cfg.PodCIDR)
	if err != nil {
		// pod_cidr is now one the built-in network cannot use (it is
		// CNI's): the records alone say what to release.
		cfg.Logger.Warn("the built-in network's pods are released from their records only", "pod_cidr", cfg.PodCIDR, "err", err)
		subnet = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(32, 32)}
		subnet6 = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(128, 128)}
	}
	a, err := openIPAM(dir, subnet, subnet6, cfg.Logger.Warn)
	if err != nil {
		return nil, err
	}
	b := &Bridge{cfg: BridgeConfig{Name: cfg.Bridge, PodCIDR: cfg.PodCIDR, StateDir: dir, Logger: cfg.Logger},
		log: cfg.Logger, subnet: subnet, gateway: gatewayOf(subnet), subnet6: subnet6, ipam: a, teardownOnly: true}
	// Host ports are removed from the table that exists; a missing nft
	// leaves them to whoever deletes the table.
	if nat, err := newNATTable(cfg.Bridge, subnet); err == nil {
		b.nat = nat
	}
	if subnet6 != nil {
		if nat6, err := newNATTable(cfg.Bridge, subnet6); err == nil {
			b.nat6 = nat6
		}
	}
	return b, nil
}

// releaseGone tears down, without rebuilding anything, every allocation of
// a pod not in live.
func (b *Bridge) releaseGone(ctx context.Context, live map[string]bool) error {
	var errs []error
	for _, al := range b.ipam.allocations() {
		if !live[al.Pod] {
			b.log.Info("releasing the built-in network of a pod that is gone", "pod", al.Pod, "ip", al.IP)
			errs = append(errs, b.teardown(ctx, al.Pod))
		}
	}
	return errors.Join(errs...)
}

// cniCache tears down CNI pods from libcni's cache, which holds the network
// config each pod was added with: it works when the CNI config dir has
// changed or holds no config any more.
type cniCache struct {
	cni *libcni.CNIConfig
	log *slog.Logger
}

func openCNITeardown(cfg Config) *cniCache {
	return &cniCache{cni: libcni.NewCNIConfigWithCacheDir(cfg.CNIBinDirs, cniCacheDir(cfg), nil), log: cfg.Logger}
}

// SetupPod is never called: the backend is for teardown only.
func (c *cniCache) SetupPod(ctx context.Context, pod Pod) (Result, error) {
	return Result{}, fmt.Errorf("CNI is not the pod network now: it only tears down the pods it set up")
}

// TeardownPod runs DEL with the cached config of each attachment of the pod.
func (c *cniCache) TeardownPod(ctx context.Context, pod Pod) error {
	atts, err := c.cni.GetCachedAttachments(pod.ID)
	if err != nil {
		return fmt.Errorf("list CNI attachments of pod %s: %w", pod.ID, err)
	}
	var errs []error
	for _, a := range atts {
		errs = append(errs, c.del(ctx, a, pod.NetNS))
	}
	return errors.Join(errs...)
}

// DetachPod is TeardownPod: CNI DEL is synchronous (see CNI.DetachPod).
func (c *cniCache) DetachPod(ctx context.Context, pod Pod) (func(context.Context) error, error) {
	return nil, c.TeardownPod(ctx, pod)
}

func (c *cniCache) del(ctx context.Context, a *libcni.NetworkAttachment, netns string) error {
	list, err := libcni.ConfListFromBytes(a.Config)
	if err != nil {
		return fmt.Errorf("cached CNI config of pod %s: %w", a.ContainerID, err)
	}
	rt := &libcni.RuntimeConf{ContainerID: a.ContainerID, NetNS: netns, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs}
	if err := c.cni.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("CNI DEL (network %s) of pod %s: %w", list.Name, a.ContainerID, err)
	}
	return nil
}

// Reconcile runs DEL for every cached attachment of a pod not in live.
func (c *cniCache) Reconcile(ctx context.Context, live []string) error {
	atts, err := goneAttachments(c.cni, live)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range atts {
		c.log.Info("releasing the CNI network of a pod that is gone", "pod", a.ContainerID, "network", a.Network)
		errs = append(errs, c.del(ctx, a, ""))
	}
	return errors.Join(errs...)
}

// holds reports whether the cache has an attachment of pod.
func (c *cniCache) holds(podID string) bool {
	atts, err := c.cni.GetCachedAttachments(podID)
	return err == nil && len(atts) > 0
}

// Ready is nil: nothing is set up through it.
func (c *cniCache) Ready() error { return nil }
