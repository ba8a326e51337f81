package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The printed default (`peapod config default`) must parse back to exactly
// the embedded defaults, and validate.
func TestDefaultRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peapod.toml")
	if err := os.WriteFile(path, []byte(DefaultsText()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(path); err != nil {
		t.Fatalf("printed default does not check: %v", err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Defaults()) {
		t.Fatalf("printed default parses to\n%+v\nwant\n%+v", c, Defaults())
	}
	if len(Changed(c, Defaults())) != 0 {
		t.Fatalf("Changed reports %v for equal configs", Changed(c, Defaults()))
	}
}

// Every key of Config is set in the default file, below a comment.
func TestDefaultDocumentsEveryKey(t *testing.T) {
	lines := strings.Split(DefaultsText(), "\n")
	typ := reflect.TypeOf(Config{})
	for i := 0; i < typ.NumField(); i++ {
		key := typ.Field(i).Tag.Get("toml")
		n := keyLine(DefaultsText(), key)
		if n == 0 {
			t.Errorf("key %s is missing from peapod.toml", key)
			continue
		}
		// Walk up over the keys documented together with this one.
		j := n - 2
		for j >= 0 && strings.Contains(lines[j], "=") && !strings.HasPrefix(strings.TrimSpace(lines[j]), "#") {
			j--
		}
		if j < 0 || !strings.HasPrefix(strings.TrimSpace(lines[j]), "#") {
			t.Errorf("key %s (line %d) has no comment above it", key, n)
		}
	}
}

// A handler table is read into RuntimeHandlers and checks.
func TestRuntimeHandlers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peapod.toml")
	text := "[runtime_handlers.test-handler]\nruntime = \"embedded\"\n[runtime_handlers.second]\nruntime = \"embedded\"\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(path); err != nil {
		t.Fatalf("Check: %v", err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]RuntimeHandler{"test-handler": {Runtime: RuntimeEmbedded}, "second": {Runtime: RuntimeEmbedded}}
	if !reflect.DeepEqual(c.RuntimeHandlers, want) {
		t.Fatalf("RuntimeHandlers = %+v, want %+v", c.RuntimeHandlers, want)
	}
	if got := Changed(Defaults(), c); !reflect.DeepEqual(got, []string{"runtime_handlers"}) {
		t.Fatalf("Changed = %v, want [runtime_handlers]", got)
	}
}

func TestCheckRejects(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string // substrings of the error, all required
	}{
		{"unknown key", "root = \"/x\"\n\nlog_levle = \"debug\"\n", []string{`:3: unknown key "log_levle"`}},
		{"two unknown keys", "a = 1\nsocket = \"/s\"\nb = 2\n", []string{`:1: unknown key "a"`, `:3: unknown key "b"`}},
		{"unknown table", "root = \"/x\"\n[cri]\nx = 1\n", []string{`:2: unknown key "cri`}},
		{"bad level", "\nlog_level = \"loud\"\n", []string{`:2: log_level "loud": must be debug, info, warn or error`}},
		{"bad format", "log_format = \"xml\"\n", []string{`:1: log_format "xml": must be text or json`}},
		{"wrong type", "socket = \"/s\"\nroot = 5\n", []string{":2: root: ", "incompatible types"}},
		{"bad duration", "pull_progress_timeout = \"5x\"\n", []string{`:1: pull_progress_timeout: invalid duration: "5x"`}},
		// issue 23: 300 would be 300ns, and every pull would then time out
		{"integer duration", "pull_progress_timeout = 300\n", []string{`:1: pull_progress_timeout: a duration is a string with a unit, e.g. "5m"`}},
		{"invalid CIDR", "pod_cidr = \"10.88.0.0/33\"\n", []string{`:1: pod_cidr "10.88.0.0/33": not a CIDR`}},
		{"host bits", "pod_cidr = \"10.88.0.1/16\"\n", []string{`:1: pod_cidr "10.88.0.1/16" has host bits set: did you mean 10.88.0.0/16?`}},
		{"bad bridge", "bridge = \"a/b\"\n", []string{`:1: bridge "a/b": must be a device name`}},
		{"bad network", "network = \"podman\"\n", []string{`:1: network "podman": must be builtin, cni or auto`}},
		{"misspelled key", "metrics_adress = \"127.0.0.1:9465\"\n", []string{`:1: unknown key "metrics_adress" (did you mean "metrics_address"?)`}},
		{"dashed key", "cgroup-driver = \"systemd\"\n", []string{`:1: unknown key "cgroup-driver" (did you mean "cgroup_driver"?)`}},
		{"everything wrong at once", "metrics_adress = \"x\"\npull_progress_timeout = 300\nroot = 5\npod_cidr = \"10.88.0.0/33\"\nlog_level = \"loud\"\n",
			[]string{`:1: unknown key "metrics_adress" (did you mean "metrics_address"?)`, ":2: pull_progress_timeout: a duration", ":3: root: ", `:4: pod_cidr "10.88.0.0/33"`, `:5: log_level "loud"`}},
		{"syntax", "root =\n", []string{":1: expected value"}},
		{"negative timeout", "pull_progress_timeout = \"-1s\"\n", []string{":1: pull_progress_timeout -1s: must not be negative"}},
		{"negative pids limit", "pids_limit = -1\n", []string{":1: pids_limit -1: must not be negative"}},
		{"unknown driver", "cgroup_driver = \"openrc\"\n", []string{`:1: cgroup_driver "openrc": must be cgroupfs or systemd`}},
		{"metrics address", "metrics_address = \"9090\"\n", []string{`:1: metrics_address "9090": must be host:port`}},
		{"empty root", "root = \"\"\n", []string{":1: root must not be empty"}},
		{"missing file", "root = \"/x\"\nregistries_conf = \"/nonexistent/registries.conf\"\n", []string{`:2: registries_conf: stat /nonexistent/registries.conf: no such file or directory`}},
		{"two bad values", "log_level = \"x\"\ncgroup_driver = \"y\"\n", []string{":1: log_level", ":2: cgroup_driver"}},
		{"handler runtime", "[runtime_handlers.kata]\nruntime = \"kata\"\n", []string{`runtime_handlers.kata.runtime "kata": must be "embedded"`}},
		{"handler name", "[runtime_handlers.Test_Handler]\nruntime = \"embedded\"\n", []string{`runtime_handlers."Test_Handler": a handler name is a DNS label`}},
		{"handler runc", "[runtime_handlers.runc]\nruntime = \"embedded\"\n", []string{"runtime_handlers.runc: runc is the default handler's other name"}},
		{"oci handler relative path", "[runtime_handlers.crun]\nruntime = \"oci\"\npath = \"bin/crun\"\n", []string{`runtime_handlers.crun.path "bin/crun": must be an absolute path`}},
		{"oci handler no path", "[runtime_handlers.crun]\nruntime = \"oci\"\n", []string{`runtime_handlers.crun.path "": must be an absolute path`}},
		{"oci handler missing binary", "[runtime_handlers.crun]\nruntime = \"oci\"\npath = \"/nonexistent/crun\"\n", []string{"no such file or directory"}},
		{"oci handler not executable", "[runtime_handlers.crun]\nruntime = \"oci\"\npath = \"/etc/passwd\"\n", []string{`runtime_handlers.crun.path "/etc/passwd": not executable`}},
		{"oci handler directory", "[runtime_handlers.crun]\nruntime = \"oci\"\npath = \"/usr/bin\"\n", []string{"not a regular file"}},
		{"embedded handler with path", "[runtime_handlers.x]\nruntime = \"embedded\"\npath = \"/bin/sh\"\n", []string{`runtime_handlers.x.path: only an "oci" runtime has a path`}},
		{"handler unknown key", "[runtime_handlers.x]\nruntime = \"embedded\"\nbinary = \"/bin/x\"\n", []string{"runtime_handlers", "binary"}},
	} {
		path := filepath.Join(t.TempDir(), "bad.toml")
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		err := Check(path)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", tc.name, err, w)
			}
		}
		if !strings.HasPrefix(err.Error(), path) {
			t.Errorf("%s: error %q does not start with the file name", tc.name, err)
		}
	}
}

// An OCI runtime binary must be root's alone: a binary others may write
// would run their code as root.
func TestOCIRuntimeBinary(t *testing.T) {
	if err := checkRuntimeBinary("/bin/sh"); err != nil && os.Getuid() == 0 {
		t.Errorf("/bin/sh refused: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "runtime")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o777); err != nil {
		t.Fatal(err)
	}
	want := "writable by group or others"
	if os.Getuid() != 0 {
		want = "not owned by root"
	}
	if err := checkRuntimeBinary(bin); err == nil || err.Error() != want {
		t.Errorf("world-writable runtime: got %v, want %q", err, want)
	}
	if os.Getuid() == 0 {
		if err := os.Chown(bin, 65534, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := checkRuntimeBinary(bin); err == nil || err.Error() != "not owned by root" {
			t.Errorf("runtime owned by 65534: got %v", err)
		}
	}
}

func TestChanged(t *testing.T) {
	a, b := Defaults(), Defaults()
	b.LogLevel, b.Root, b.PinnedImages = "debug", "/r", []string{"busybox"}
	got := Changed(a, b)
	if want := []string{"log_level", "pinned_images", "root"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Changed = %v, want %v", got, want)
	}
	if v := a.Values(); v["pull_progress_timeout"] == nil || v["socket"] != "/run/peapod/peapod.sock" {
		t.Fatalf("Values: %v", v)
	}
}
