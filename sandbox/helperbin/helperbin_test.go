package helperbin

import (
	"os"
	"os/exec"
	"testing"
)

// TestLoad: an embedded helper runs from its Path (/proc/<pid>/fd/N, which
// another process of the host can execute too), and a second Load keeps the
// first memfd, which keepers may already run from.
func TestLoad(t *testing.T) {
	if Path(Runner) != "" || File(Pause) != nil {
		t.Fatal("a helper is there before any Load")
	}
	data, err := os.ReadFile("/bin/echo")
	if err != nil {
		t.Skip("no /bin/echo:", err)
	}
	if err := Load(Runner, string(data)); err != nil {
		t.Fatal(err)
	}
	first := Path(Runner)
	out, err := exec.Command(first, "ran").Output()
	if err != nil || string(out) != "ran\n" {
		t.Fatalf("run %s: %q, %v", first, out, err)
	}
	if err := Load(Runner, "other"); err != nil || Path(Runner) != first {
		t.Fatalf("a second Load: %v, path %s, want %s", err, Path(Runner), first)
	}
	if Path(Pause) != "" {
		t.Errorf("Pause has a path without a Load: %s", Path(Pause))
	}
}
