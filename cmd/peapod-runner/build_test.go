package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The runner runs twice per container start (runner, then container init),
// so what it links is paid at every start: each package's initialisation,
// the binary's pages, the dynamic loader.

// TestRunnerLinksNoCheckpointCode: CRIU's image decoders and protobuf's
// runtime initialise ~140 packages at every start (~2 ms a process on the
// test machine); the restore check that needs them runs in the daemon.
func TestRunnerLinksNoCheckpointCode(t *testing.T) {
	tags, err := os.ReadFile("../../build-tags.txt")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "list", "-tags", strings.TrimSpace(string(tags)), "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/peapod-cri/peapod/checkpoint", "github.com/checkpoint-restore/go-criu/v8/crit", "google.golang.org/protobuf/"} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("peapod-runner links %s", pkg)
			}
		}
	}
}

// TestRunnerBuildIsStatic: build.sh links the runner statically, so no
// dynamic loader runs before its main.
func TestRunnerBuildIsStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the runner")
	}
	bin := filepath.Join(t.TempDir(), "peapod-runner")
	if out, err := exec.Command("./build.sh", bin).CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("peapod-runner has a %v segment: dynamically linked", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) != 0 {
		t.Errorf("peapod-runner needs %v", libs)
	}
}
