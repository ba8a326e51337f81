package network

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A power cut can leave an address record empty or torn; the daemon must
// start anyway, with the record moved aside and its address free again.
func TestOpenIPAMUnreadableRecords(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.99.0.0/24")
	for name, content := range map[string]string{
		"empty":     "",
		"truncated": `{"pod":"p1","ip":"10.9`,
		"garbage":   "\x00\x01not json",
		"wrong pod": `{"pod":"other","ip":"10.99.0.2","veth":"pp0"}`,
		"no ip":     `{"pod":"p1","veth":"pp0"}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			good := `{"pod":"p2","ip":"10.99.0.3","veth":"pp2"}`
			if err := os.WriteFile(filepath.Join(dir, "p1"), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "p2"), []byte(good), 0o600); err != nil {
				t.Fatal(err)
			}
			var logged []string
			a, err := openIPAM(dir, subnet, nil, func(msg string, args ...any) { logged = append(logged, msg) })
			if err != nil {
				t.Fatalf("openIPAM refused to start: %v", err)
			}
			if _, ok := a.byPod["p1"]; ok {
				t.Errorf("unreadable record was loaded")
			}
			if a.byPod["p2"] == nil || a.byIP[ip4ToU32(net.ParseIP("10.99.0.3"))] != "p2" {
				t.Errorf("the good record was not loaded: %+v", a.byPod)
			}
			if len(a.lostRecords) != 1 || a.lostRecords[0] != "p1" || len(logged) != 1 {
				t.Errorf("lostRecords = %v, logged = %v; want p1 reported once", a.lostRecords, logged)
			}
			if _, err := os.Stat(filepath.Join(dir, "p1")); !os.IsNotExist(err) {
				t.Errorf("unreadable record still in place (err %v)", err)
			}
			moved, _ := os.ReadDir(filepath.Join(dir, quarantineDir))
			if len(moved) != 1 || !strings.HasPrefix(moved[0].Name(), "p1.") {
				t.Errorf("record not kept aside: %v", moved)
			}
			// The next open meets neither the record nor the quarantine.
			if _, err := openIPAM(dir, subnet, nil, nil); err != nil {
				t.Fatalf("second open: %v", err)
			}
			al, err := a.allocate("p3", "pp3", nil)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(dir, "p3"))
			if err != nil || !strings.Contains(string(data), al.IP) {
				t.Errorf("allocation not recorded: %q, %v", data, err)
			}
		})
	}
}
