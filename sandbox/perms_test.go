package sandbox

import (
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestMakeStateDirsTightens: directories an older peapod made open to
// other users are closed at start.
func TestMakeStateDirsTightens(t *testing.T) {
	dir := t.TempDir()
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	for _, d := range []string{root, filepath.Join(state, "pods"), filepath.Join(state, "k"), legacyRootfsDir(state)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o755)
	}
	os.Chmod(state, 0o777)
	if err := makeStateDirs(root, state); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{legacyRootfsDir(state): privateDirMode}
	for _, d := range stateDirs(root, state) {
		want[d.path] = d.mode
	}
	for p, mode := range want {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), mode)
		}
		if st.Mode().Perm()&0o006 != 0 {
			t.Errorf("%s: other users may list or write", p)
		}
	}
}

func TestDefaultPidsLimit(t *testing.T) {
	spec := func(unified map[string]string) *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{Unified: unified}}}
	}
	s := spec(nil)
	setDefaultPidsLimit(s, 0)
	if s.Linux.Resources.Pids != nil {
		t.Errorf("pids_limit 0 set a limit: %v", *s.Linux.Resources.Pids.Limit)
	}
	setDefaultPidsLimit(s, 50)
	if s.Linux.Resources.Pids == nil || *s.Linux.Resources.Pids.Limit != 50 {
		t.Errorf("pids_limit 50: %+v", s.Linux.Resources.Pids)
	}
	s = spec(map[string]string{"pids.max": "80"})
	setDefaultPidsLimit(s, 50)
	if s.Linux.Resources.Pids != nil {
		t.Errorf("the default replaced the container's own pids.max")
	}
}
