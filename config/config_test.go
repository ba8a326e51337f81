package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	c := Defaults()
	if c.Socket != "/run/peapod/peapod.sock" || c.Root != "/var/lib/peapod" || c.State != "/run/peapod" ||
		c.LogLevel != "info" || c.CgroupDriver != "cgroupfs" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestLoadOverridesAndRejectsUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte("root = \"/x\"\nlog_level = \"debug\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != "/x" || c.LogLevel != "debug" || c.Socket != Defaults().Socket {
		t.Fatalf("merge wrong: %+v", c)
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("roott = \"/x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil {
		t.Fatal("unknown key accepted")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"bad level", func(c *Config) { c.LogLevel = "loud" }, false},
		{"systemd", func(c *Config) { c.CgroupDriver = "systemd" }, true},
		{"bad driver", func(c *Config) { c.CgroupDriver = "x" }, false},
		{"empty root", func(c *Config) { c.Root = "" }, false},
	} {
		c := Defaults()
		tc.mod(&c)
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestImageKeys(t *testing.T) {
	c := Defaults()
	if c.PullProgressTimeout != 5*time.Minute || c.AuthFile != "" || len(c.PinnedImages) != 0 {
		t.Fatalf("image defaults: %+v", c)
	}
	path := filepath.Join(t.TempDir(), "img.toml")
	data := "pull_progress_timeout = \"90s\"\nauth_file = \"/tmp/a.json\"\npinned_images = [\"busybox\", \"sha256:" +
		strings.Repeat("a", 64) + "\"]\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.PullProgressTimeout != 90*time.Second || c.AuthFile != "/tmp/a.json" || len(c.PinnedImages) != 2 {
		t.Fatalf("loaded: %+v", c)
	}
	c.PullProgressTimeout = -time.Second
	if err := c.Validate(); err == nil {
		t.Fatal("negative pull_progress_timeout accepted")
	}
}
