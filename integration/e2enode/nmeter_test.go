package e2enode

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// The suite's use of nmeter, run through a shell as the container does:
// it must yield an RFC 3339 time with milliseconds (the spec parses it).
func TestNmeter(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc")
	}
	dir := t.TempDir()
	bin := filepath.Join(nmeterTree(t, dir), "bin")
	cmd := exec.Command("sh", "-c", "date -u +%FT$(nmeter -d0 '%3t' | head -n1)Z")
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "TZ=UTC"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	s := string(out)
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\n$`).MatchString(s) {
		t.Fatalf("got %q, want 2006-01-02T15:04:05.000Z", s)
	}
	ts, err := time.Parse(time.RFC3339, s[:len(s)-1])
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(ts); d < 0 || d > time.Minute {
		t.Errorf("time %v is %v from now", ts, d)
	}
}
