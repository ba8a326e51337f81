package sandbox

import (
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"os"
	"path/filepath"
	"testing"
)

// TestMakeStateDirsTightens: directories an older peapod made open to
// other users are closed at start.
func TestMakeStateDirsTightens(t *testing.T) {
	dir := t.TempDir()
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	for _, d := range []string{root, filepath.Join(state, "pods"), filepath.Join(state, "k"), hostfs.LegacyRootfsDir(state)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o755)
	}
	os.Chmod(state, 0o777)
	if err := makeStateDirs(root, state); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{hostfs.LegacyRootfsDir(state): hostfs.PrivateDirMode}
	for _, d := range stateDirs(root, state) {
		want[d.Path] = d.Mode
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
