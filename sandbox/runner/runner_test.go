package runner

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestReadSpecAndInitProcess(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadSpec(dir); err == nil {
		t.Fatal("ReadSpec of a bundle without config.json succeeded")
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSpec(dir); err == nil {
		t.Fatal("ReadSpec of a malformed config.json succeeded")
	}
	want := &specs.Spec{Process: &specs.Process{
		Args: []string{"sleep", "1"}, Env: []string{"A=1"}, Cwd: "/w",
		User: specs.User{UID: 7, GID: 8, AdditionalGids: []uint32{9, 10}},
	}}
	data, _ := json.Marshal(want)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	spec, err := ReadSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := InitProcess(spec)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Init || p.UID != 7 || p.GID != 8 || p.Cwd != "/w" || len(p.Args) != 2 || len(p.Env) != 1 ||
		len(p.AdditionalGroups) != 2 || p.AdditionalGroups[1] != 10 {
		t.Fatalf("init process %+v from %+v", p, want.Process)
	}
	if _, err := InitProcess(&specs.Spec{}); err == nil {
		t.Fatal("InitProcess of a spec without process succeeded")
	}
}

// Main refuses a bad command line before it touches anything.
func TestMainUsage(t *testing.T) {
	if code := Main([]string{"only-one"}); code != 2 {
		t.Fatalf("Main with one argument: exit %d, want 2", code)
	}
}
