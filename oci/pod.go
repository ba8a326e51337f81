package oci

import (
	"errors"
	"fmt"
	"os"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The pod's own config: what is refused before anything is made, and what
// the pod's files and namespaces are made from.

func ValidatePod(cfg *runtimeapi.PodSandboxConfig) error {
	if cfg == nil {
		return fmt.Errorf("pod sandbox config is missing: %w", ErrInvalidArgument)
	}
	m := cfg.GetMetadata()
	if m == nil || m.Name == "" || m.Namespace == "" || m.Uid == "" {
		return fmt.Errorf("pod metadata needs name, namespace and uid (got %v): %w", m, ErrInvalidArgument)
	}
	if len(cfg.Hostname) > 64 {
		return fmt.Errorf("Hostname %q is longer than the kernel's 64 characters: %w", cfg.Hostname, ErrInvalidArgument)
	}
	if err := ValidateUserns(cfg); err != nil {
		return err
	}
	return validateSysctls(cfg)
}

// validateSysctls accepts only namespaced sysctls, and only when their
// namespace is the pod's own: written in the host's namespace they would
// change the node (as runc refuses too). Keys in slashed form are not
// namespaced ones to the checks below and are refused.
func validateSysctls(cfg *runtimeapi.PodSandboxConfig) error {
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	for key := range cfg.GetLinux().GetSysctls() {
		switch {
		case strings.HasPrefix(key, "net."):
			if ns.GetNetwork() == runtimeapi.NamespaceMode_NODE {
				return fmt.Errorf("sysctl %s cannot be set on a pod that uses the host network: %w", key, ErrInvalidArgument)
			}
		case isIPCSysctl(key):
			if ns.GetIpc() == runtimeapi.NamespaceMode_NODE {
				return fmt.Errorf("sysctl %s cannot be set on a pod that uses the host IPC namespace: %w", key, ErrInvalidArgument)
			}
		case isUTSSysctl(key):
			// The UTS namespace follows the network one (the pause).
			if HostNetwork(cfg) {
				return fmt.Errorf("sysctl %s cannot be set on a pod that uses the host network: "+
					"its UTS namespace is the host's, so it would set the node's own name: %w", key, ErrInvalidArgument)
			}
		default:
			return fmt.Errorf("sysctl %s is not namespaced (or not in dotted form): %w", key, ErrInvalidArgument)
		}
	}
	return nil
}

func isUTSSysctl(key string) bool { return key == "kernel.hostname" || key == "kernel.domainname" }

func isIPCSysctl(key string) bool {
	return strings.HasPrefix(key, "fs.mqueue.") || strings.HasPrefix(key, "kernel.msg") ||
		strings.HasPrefix(key, "kernel.shm") || key == "kernel.sem"
}

func HostNetwork(cfg *runtimeapi.PodSandboxConfig) bool {
	return cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
}

// Hostname is the pod's Hostname: the configured one, else the node's (as
// containerd does; kubelet always sets one).
func Hostname(cfg *runtimeapi.PodSandboxConfig) string {
	if cfg.Hostname != "" {
		return cfg.Hostname
	}
	h, _ := os.Hostname()
	return h
}

// ResolvConf renders DNSConfig; with none, the host's resolv.conf is used,
// as kubelet expects for dnsPolicy Default.
func ResolvConf(dns *runtimeapi.DNSConfig) ([]byte, error) {
	if dns == nil || len(dns.Servers)+len(dns.Searches)+len(dns.Options) == 0 {
		data, err := os.ReadFile("/etc/resolv.conf")
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return data, err
	}
	var b strings.Builder
	if len(dns.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
	}
	for _, s := range dns.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(dns.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return []byte(b.String()), nil
}

// ValidateUserns accepts what containerd accepts: the host's user namespace
// (mode NODE, or no options), or a pod user namespace with exactly one uid
// and one gid range that maps container ID 0, and no host network, IPC or
// PID namespace (which the kubelet forbids with hostUsers: false too).
func ValidateUserns(cfg *runtimeapi.PodSandboxConfig) error {
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	u := ns.GetUsernsOptions()
	if u == nil {
		return nil
	}
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		if len(u.GetUids())+len(u.GetGids()) > 0 {
			return fmt.Errorf("user namespace mode NODE takes no mappings: %w", ErrInvalidArgument)
		}
		return nil
	case runtimeapi.NamespaceMode_POD:
	default:
		return fmt.Errorf("user namespace mode %s is not supported (only NODE and POD): %w", u.GetMode(), ErrInvalidArgument)
	}
	if ns.GetNetwork() == runtimeapi.NamespaceMode_NODE || ns.GetIpc() == runtimeapi.NamespaceMode_NODE ||
		ns.GetPid() == runtimeapi.NamespaceMode_NODE {
		return fmt.Errorf("a pod in its own user namespace cannot use the host's network, IPC or PID namespace: %w", ErrInvalidArgument)
	}
	for _, m := range []struct {
		kind string
		list []*runtimeapi.IDMapping
	}{{"uid", u.GetUids()}, {"gid", u.GetGids()}} {
		if len(m.list) != 1 {
			return fmt.Errorf("user namespace needs exactly one %s mapping, got %d: %w", m.kind, len(m.list), ErrInvalidArgument)
		}
		id := m.list[0]
		if id.GetContainerId() != 0 {
			return fmt.Errorf("user namespace %s mapping must map container ID 0 (got %d): %w", m.kind, id.GetContainerId(), ErrInvalidArgument)
		}
		if id.GetLength() == 0 || uint64(id.GetHostId())+uint64(id.GetLength()) > 1<<32-1 {
			return fmt.Errorf("user namespace %s mapping %d+%d is empty or beyond the 32-bit ID space: %w", m.kind, id.GetHostId(), id.GetLength(), ErrInvalidArgument)
		}
		if id.GetHostId() == 0 {
			return fmt.Errorf("user namespace %s mapping must not map the host's root: %w", m.kind, ErrInvalidArgument)
		}
	}
	return nil
}

// IDMapLines renders mappings as /proc/<pid>/uid_map lines.
func IDMapLines(list []*runtimeapi.IDMapping) string {
	var b strings.Builder
	for _, m := range list {
		fmt.Fprintf(&b, "%d %d %d\n", m.GetContainerId(), m.GetHostId(), m.GetLength())
	}
	return b.String()
}
