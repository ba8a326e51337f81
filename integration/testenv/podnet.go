package testenv

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// FreePodCIDR picks a <base>.X.0/24 with X in [first, first+span) that no
// route of the host uses, so test daemons each get a pod network of their
// own (base e.g. "10.199"; test packages use separate bases or halves).
func FreePodCIDR(t testing.TB, base string, first, span int) string {
	t.Helper()
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route: %v: %s", err, out)
	}
	for range 100 {
		b := make([]byte, 1)
		rand.Read(b)
		prefix := fmt.Sprintf("%s.%d.", base, first+int(b[0])%span)
		if !strings.Contains(string(out), prefix) {
			return prefix + "0/24"
		}
	}
	t.Fatalf("no free %s.X.0/24 for the pod network", base)
	return ""
}

// GuardBridge drops whatever bridge would forward to another interface,
// so that nothing a test pod sends leaves the machine. The nft table goes
// in the test's cleanup. Where the kernel has no nftables (the UML guest
// of make test-cgroupv2-full) the same rule goes into iptables' FORWARD
// chain instead.
func GuardBridge(t testing.TB, bridge string) {
	t.Helper()
	table := "ppt-guard-" + bridge
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`table ip %s {
  chain forward { type filter hook forward priority -10; iifname "%s" oifname != "%s" drop; }
}`, table, bridge, bridge))
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Cleanup(func() { exec.Command("nft", "delete", "table", "ip", table).Run() })
		return
	}
	if !strings.Contains(string(out), "Operation not supported") {
		t.Fatalf("nft guard table (apt-get install nftables): %v: %s", err, out)
	}
	rule := []string{"FORWARD", "-i", bridge, "!", "-o", bridge, "-j", "DROP"}
	if out, err := exec.Command("iptables", append([]string{"-w", "-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("no nftables in this kernel, and the iptables guard rule failed: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("iptables", append([]string{"-w", "-D"}, rule...)...).Run() })
}

// MountsUnder lists the mount points at or below dir, in mount order.
func MountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	return out
}
