package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The node the suites' daemons are configured as, from the environment.
// make test-cgroupv2-full (integration/cgroupv2-full.sh) runs critest and
// the kubelet e2e inside the cgroup v2 guest with systemd as PID 1, where a
// node uses the systemd driver, and on its UML backend, whose kernel has no
// nftables, with the CNI network instead of the built-in one:
//
//	PEAPOD_TEST_CGROUP_DRIVER=systemd  cgroup_driver = "systemd"; the
//	                                   daemon's default parent a slice of its own
//	PEAPOD_TEST_CNI_BIN=DIR            network = "cni": bridge + host-local +
//	                                   portmap (iptables) from DIR
//
// Unset, the daemons are the host's: cgroupfs and the built-in network.
const (
	envCgroupDriver = "PEAPOD_TEST_CGROUP_DRIVER"
	envCNIBin       = "PEAPOD_TEST_CNI_BIN"
)

// NodeCgroupDriver is the cgroup driver the suites run with: "systemd" or
// "cgroupfs".
func NodeCgroupDriver() string {
	if os.Getenv(envCgroupDriver) == "systemd" {
		return "systemd"
	}
	return "cgroupfs"
}

// NodeCNIBin is the CNI plugin directory when the suites run peapod with
// the CNI network, else "".
func NodeCNIBin() string { return os.Getenv(envCNIBin) }

// WithNodeEnv returns o configured for the node the environment names
// (above): the peapod.toml lines and, under the systemd driver, a slice of
// the daemon's own as its cgroup parent (unless the caller chose one).
func (o DaemonOptions) WithNodeEnv() DaemonOptions {
	// Top-level keys, so they go before o.Config's: after a [table] header
	// TOML would read them as that table's.
	var node string
	if NodeCgroupDriver() == "systemd" {
		node += "cgroup_driver = \"systemd\"\n"
		if o.CgroupParent == "" {
			// A top-level slice: a name without dashes expands to /<name>.
			o.CgroupParent = strings.ReplaceAll(o.Name, "-", "") + RandomSuffix() + ".slice"
		}
	}
	if bin := NodeCNIBin(); bin != "" {
		node += fmt.Sprintf("network = \"cni\"\ncni_bin_dirs = [%q]\n", bin)
		o.Network = ""
		o.cni = true
	}
	o.Config = node + o.Config
	return o
}

// cniConflist is the network of a daemon in CNI mode: Debian's bridge
// (no masquerade: nothing leaves the machine), host-local over the
// daemon's pod range with its allocations in the daemon's directory, and
// portmap for host ports.
func (d *Daemon) cniConflist() string {
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "peapod-test", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}`,
		d.Bridge, filepath.Join(d.Dir, "cni-ipam"), d.PodCIDR)
}

// sliceCgroup is the cgroupfs path of a top-level systemd slice name
// ("x.slice" → "/x.slice"); other parents are returned as they are.
func sliceCgroup(parent string) string {
	if strings.HasSuffix(parent, ".slice") && !strings.Contains(parent, "/") && !strings.Contains(parent, "-") {
		return "/" + parent
	}
	return parent
}

// stopSlice stops a slice unit under a running systemd (its scopes with it);
// without systemd it does nothing.
func stopSlice(parent string) {
	if !strings.HasSuffix(parent, ".slice") {
		return
	}
	if fi, err := os.Stat("/run/systemd/system"); err != nil || !fi.IsDir() {
		return
	}
	exec.Command("systemctl", "stop", filepath.Base(parent)).Run()
}
