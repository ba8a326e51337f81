// Package network gives pods their network. For now that is a private
// network namespace with loopback up; the built-in bridge, IPAM, port
// mappings and CNI come with the networking issue behind the same two
// calls.
package network

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Loopback is the network a pod gets before a bridge exists.
type Loopback struct{}

// SetupPod brings up lo in the pod's network namespace.
func (Loopback) SetupPod(ctx context.Context, podID, netnsPath string) error {
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
		return fmt.Errorf("find lo in pod %s: %w", podID, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo in pod %s: %w", podID, err)
	}
	return nil
}

// TeardownPod has nothing to release: the namespace goes with the pause.
func (Loopback) TeardownPod(ctx context.Context, podID, netnsPath string) error { return nil }
