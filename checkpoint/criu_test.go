package checkpoint

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeCRIU writes an executable "criu" into a new directory: criu's own
// --version line and, for "check", the given output and exit status.
func fakeCRIU(t *testing.T, checkOut string, checkExit int) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\n" +
		"if [ \"$1\" = --version ]; then echo 'Version: 9.9.9'; exit 0; fi\n" +
		"cat >&2 <<'OUT'\n" + checkOut + "\nOUT\n" +
		"exit " + strconv.Itoa(checkExit) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "criu"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The output of Debian's criu 3.17.1 `criu check` on Linux 6.18.
const vdsoFailure = `Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds
Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.
Error (criu/crtools.c:260): Could not initialize kernel features detection.`

func writeMaps(t *testing.T, vclock bool) string {
	t.Helper()
	maps := "7f6ff3780000-7f6ff3784000 r--p 00000000 00:00 0 [vvar]\n"
	if vclock {
		maps += "7f6ff3784000-7f6ff3786000 r--p 00000000 00:00 0 [vvar_vclock]\n"
	}
	maps += "7f6ff3786000-7f6ff3788000 r-xp 00000000 00:00 0 [vdso]\n"
	p := filepath.Join(t.TempDir(), "maps")
	if err := os.WriteFile(p, []byte(maps), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckCRIUMissing(t *testing.T) {
	empty := t.TempDir()
	err := Checker{PATH: empty}.Check(context.Background())
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "criu not found in PATH") {
		t.Fatalf("Check with no criu: %v, want ErrUnavailable naming the missing binary", err)
	}
}

func TestCheckPasses(t *testing.T) {
	dir := fakeCRIU(t, "Looks good.", 0)
	if err := (Checker{PATH: dir}).Check(context.Background()); err != nil {
		t.Fatalf("Check with a passing criu: %v", err)
	}
}

func TestCheckNamesFailingChecksAndVvarVclock(t *testing.T) {
	dir := fakeCRIU(t, "Warn (criu/net.c:1): harmless\n"+vdsoFailure, 1)
	err := Checker{PATH: dir, MapsFile: writeMaps(t, true)}.Check(context.Background())
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Check: %v, want ErrUnavailable", err)
	}
	for _, want := range []string{
		"criu 9.9.9 (" + filepath.Join(dir, "criu") + ")",
		"vdso: Unexpected rt vDSO area bounds; vdso: Failed to fill self vdso symtable; kerndat_vdso_fill_symtable failed when initializing kerndat;",
		"[vvar_vclock]", "criu#2539",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "harmless") {
		t.Errorf("message %q carries a warning line", err)
	}

	// Without the split mapping the cause is not claimed.
	err = Checker{PATH: dir, MapsFile: writeMaps(t, false)}.Check(context.Background())
	if !errors.Is(err, ErrUnavailable) || strings.Contains(err.Error(), "vvar_vclock") {
		t.Fatalf("Check on a kernel without [vvar_vclock]: %v", err)
	}
}

// TestCheckThisHost records what the installed criu says on this machine's
// kernel; it skips where criu is not installed.
func TestCheckThisHost(t *testing.T) {
	if _, err := exec.LookPath("criu"); err != nil {
		t.Skip("criu not installed")
	}
	err := Checker{}.Check(context.Background())
	t.Logf("criu check on this host: %v", err)
	if err != nil && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Check: %v, want nil or ErrUnavailable", err)
	}
}
