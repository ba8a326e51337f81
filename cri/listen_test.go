package cri

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestListenSocketMode: the socket is 0660, owned by root and the
// configured group.
func TestListenSocketMode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	for group, wantGID := range map[string]uint32{"": 0, "4321": 4321, "root": 0} {
		path := filepath.Join(t.TempDir(), "sub", "peapod.sock")
		l, err := Listen(path, group)
		if err != nil {
			t.Fatalf("group %q: %v", group, err)
		}
		fi, err := os.Stat(path)
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o660 || st.Uid != 0 || st.Gid != wantGID {
			t.Errorf("group %q: mode %v owner %d:%d, want 0660 0:%d", group, fi.Mode().Perm(), st.Uid, st.Gid, wantGID)
		}
	}
	if _, err := Listen(filepath.Join(t.TempDir(), "s.sock"), "no-such-group-peapod"); err == nil {
		t.Error("unknown group accepted")
	}
}
