package durable

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteFile replaces the file whole, with its mode, and leaves no
// temporary file; a failed write leaves the old content.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rec")
	for _, content := range []string{"first", "second, longer"} {
		if err := WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("read back %q, %v; want %q", got, err, content)
		}
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %v, want only rec", ents)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "rec"), []byte("x"), 0o600); err == nil {
		t.Error("a write into a missing directory succeeded")
	}
	if got, _ := os.ReadFile(p); string(got) != "second, longer" {
		t.Errorf("content changed to %q", got)
	}
}
