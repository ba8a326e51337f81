package orphans

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/peapod-cri/peapod/sandbox/runner"
)

func testDirs(t *testing.T) Dirs {
	root := t.TempDir()
	d := Dirs{Keepers: filepath.Join(root, "k"), Pods: filepath.Join(root, "pods"),
		Bundles: filepath.Join(root, "containers"), Libcontainer: filepath.Join(root, "runc")}
	for _, dir := range []string{d.Keepers, d.Pods, d.Bundles, d.Libcontainer} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// Pod dirs no record names and sockets of keepers that are gone go; the
// known pod's dir and the live keeper's socket stay.
func TestRemovePodFiles(t *testing.T) {
	d := testDirs(t)
	for _, p := range []string{filepath.Join(d.Pods, "known", "hostname"), filepath.Join(d.Pods, "lost", "hostname"),
		filepath.Join(d.Keepers, "live"), filepath.Join(d.Keepers, "gone")} {
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	RemovePodFiles(d, func(id string) bool { return id == "known" }, map[string]bool{"live": true})
	for p, want := range map[string]bool{
		filepath.Join(d.Pods, "known"): true, filepath.Join(d.Pods, "lost"): false,
		filepath.Join(d.Keepers, "live"): true, filepath.Join(d.Keepers, "gone"): false,
	} {
		if exists(p) != want {
			t.Errorf("%s: exists %v, want %v", p, !want, want)
		}
	}
}

// A bundle no record names goes once its root filesystem is removed; one
// whose root filesystem could not be removed stays for the next start.
func TestRemoveBundles(t *testing.T) {
	d := testDirs(t)
	for _, id := range []string{"known", "lost", "stuck"} {
		os.MkdirAll(filepath.Join(d.Bundles, id), 0o700)
	}
	var removed []string
	removeRootfs := func(_ context.Context, id string) error {
		removed = append(removed, id)
		if id == "stuck" {
			return errors.New("busy")
		}
		return nil
	}
	RemoveBundles(context.Background(), d, func(id string) bool { return id == "known" }, removeRootfs, quiet)
	if !exists(filepath.Join(d.Bundles, "known")) || exists(filepath.Join(d.Bundles, "lost")) || !exists(filepath.Join(d.Bundles, "stuck")) {
		t.Errorf("bundles left: known %v lost %v stuck %v; want true false true",
			exists(filepath.Join(d.Bundles, "known")), exists(filepath.Join(d.Bundles, "lost")), exists(filepath.Join(d.Bundles, "stuck")))
	}
	if strings.Join(removed, ",") != "lost,stuck" {
		t.Errorf("root filesystems removed: %v", removed)
	}
}

// An unreadable spec is renamed aside; a good one and a missing one are
// left alone.
func TestMoveAsideBadSpecs(t *testing.T) {
	d := testDirs(t)
	good, bad, none := filepath.Join(d.Bundles, "good"), filepath.Join(d.Bundles, "bad"), filepath.Join(d.Bundles, "none")
	for _, b := range []string{good, bad, none} {
		os.MkdirAll(b, 0o700)
	}
	if err := runner.WriteSpec(good, &specs.Spec{Version: specs.Version}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bad, "config.json"), []byte(`{"ociVersion": "1.`), 0o600)
	MoveAsideBadSpecs(map[string]string{"good": good, "bad": bad, "none": none}, quiet)
	if !exists(filepath.Join(good, "config.json")) {
		t.Error("the good spec was moved")
	}
	if exists(filepath.Join(bad, "config.json")) {
		t.Error("the unreadable spec is still in place")
	}
	if m, _ := filepath.Glob(filepath.Join(bad, "config.json.unreadable-*")); len(m) != 1 {
		t.Errorf("unreadable spec kept aside as %v", m)
	}
	if entries, _ := os.ReadDir(none); len(entries) != 0 {
		t.Errorf("a bundle without a spec got %v", entries)
	}
}
