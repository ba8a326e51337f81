package keeper

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

func TestReplies(t *testing.T) {
	for _, tc := range []struct {
		line, rest string
		ok         bool
	}{
		{"ok", "", true},
		{"ok 1234", "1234", true},
		{"error no such container", "", false},
		{"okay", "", false},
	} {
		rest, err := okReply(tc.line)
		if (err == nil) != tc.ok || rest != tc.rest {
			t.Errorf("%q: %q, %v", tc.line, rest, err)
		}
	}
	for _, tc := range []struct {
		s    string
		want Exit
		ok   bool
	}{
		{"0 1700000000000000000", Exit{0, 1700000000000000000}, true},
		{"137 5", Exit{137, 5}, true},
		{"137", Exit{}, false},
		{"x 5", Exit{}, false},
		{"1 2 3", Exit{}, false},
	} {
		got, err := parseExit(tc.s)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("exit %q: %+v, %v", tc.s, got, err)
		}
	}
	for _, tc := range []struct {
		line string
		want LogState
		ok   bool
	}{
		{"log-ok 3", LogState{Dropped: 3}, true},
		{"log-error 7 ENOSPC", LogState{Failing: true, Dropped: 7, Reason: "ENOSPC"}, true},
		{"log-ok x", LogState{}, false},
		{"exited 0 1", LogState{}, false},
	} {
		got, ok := parseLogState(tc.line)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("log state %q: %+v, %v", tc.line, got, ok)
		}
	}
}

// TestGone: no keeper is ErrGone, which the daemon reads as "the pod was
// killed" rather than as a failed request.
func TestGone(t *testing.T) {
	k := Client{Socket: filepath.Join(t.TempDir(), "none.sock")}
	if err := k.Forget(context.Background(), "c"); !errors.Is(err, ErrGone) {
		t.Errorf("no keeper: %v, want ErrGone", err)
	}
}
