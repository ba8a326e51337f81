package network

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestRemoveEmptiedAllocations: host-local files a power cut emptied (empty,
// older than this boot) are removed; an empty file of this boot (an ADD in
// progress), a file naming its owner and host-local's own files stay.
func TestRemoveEmptiedAllocations(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "ipam")
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"pc","plugins":[{"type":"bridge",
  "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.1.0.0/24"}]]}}]}`, data)
	os.WriteFile(filepath.Join(dir, "10.conflist"), []byte(conf), 0o644)
	c, err := NewCNI(context.Background(), CNIConfig{ConfDir: dir, CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	net := filepath.Join(data, "pc")
	os.MkdirAll(net, 0o755)
	boot, err := bootTime()
	if err != nil {
		t.Fatal(err)
	}
	before := boot.Add(-time.Hour)
	files := []struct {
		name, content string
		mtime         time.Time
		stays         bool
	}{
		{"10.1.0.2", "", before, false},                  // emptied by a power cut
		{"10.1.0.3", "", time.Now(), true},               // an ADD of this boot
		{"10.1.0.4", "abc\r\neth0", before, true},        // names its owner
		{"last_reserved_ip.0", "10.1.0.4", before, true}, // host-local's own
		{"lock", "", before, true},                       // host-local's own
		{"fd00::2", "", before, false},                   // IPv6 too
	}
	for _, f := range files {
		p := filepath.Join(net, f.name)
		if err := os.WriteFile(p, []byte(f.content), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, f.mtime, f.mtime)
	}
	removed, err := c.removeEmptiedAllocations()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		_, statErr := os.Stat(filepath.Join(net, f.name))
		if stays := statErr == nil; stays != f.stays {
			t.Errorf("%s: stays=%v, want %v", f.name, stays, f.stays)
		}
		if gone := slices.Contains(removed, filepath.Join(net, f.name)); gone == f.stays {
			t.Errorf("%s: reported removed=%v", f.name, gone)
		}
	}
	// syncRecords finds both directories (the cache one may not exist yet).
	if err := c.syncRecords(); err != nil {
		t.Fatal(err)
	}
}
