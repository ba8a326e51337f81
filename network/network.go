// Package network gives pods their network. For now that is a private
// network namespace with loopback up; the built-in bridge, IPAM, port
// mappings and CNI come with the networking issue behind the same two
// calls.
package network

import (
	"context"
	"fmt"
	"net"

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

// Loopback is the network a pod gets before a bridge exists.
type Loopback struct{}

// SetupPod brings up lo in the pod's network namespace.
func (Loopback) SetupPod(ctx context.Context, pod Pod) (Result, error) {
	return Result{}, LoopbackUp(pod.NetNS)
}

// TeardownPod has nothing to release: the namespace goes with the pause.
func (Loopback) TeardownPod(ctx context.Context, pod Pod) error { return nil }

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
