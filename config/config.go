// Package config holds peapod's configuration: one struct, defaults embedded
// from peapod.toml (which doubles as the documentation of every key), an
// optional operator file read on top, and flags on top of that.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

//go:embed peapod.toml
var defaultsTOML string

// Config is the daemon's configuration. Keys mirror the flags of cmd/peapod.
type Config struct {
	Socket string `toml:"socket"`
	// SocketGroup owns the socket (name or GID); empty: root.
	SocketGroup    string `toml:"socket_group"`
	Root           string `toml:"root"`
	State          string `toml:"state"`
	LogLevel       string `toml:"log_level"`
	LogFormat      string `toml:"log_format"`
	CgroupDriver   string `toml:"cgroup_driver"`
	CgroupParent   string `toml:"cgroup_parent"`
	RegistriesConf string `toml:"registries_conf"`
	Bridge         string `toml:"bridge"`
	PodCIDR        string `toml:"pod_cidr"`

	CNIConfDir string   `toml:"cni_conf_dir"`
	CNIBinDirs []string `toml:"cni_bin_dirs"`

	StreamAddress string `toml:"stream_address"`
	// TLS for the streaming server: both or neither.
	StreamTLSCert string `toml:"stream_tls_cert"`
	StreamTLSKey  string `toml:"stream_tls_key"`

	AuthFile            string        `toml:"auth_file"`
	PullProgressTimeout time.Duration `toml:"pull_progress_timeout"`
	PinnedImages        []string      `toml:"pinned_images"`

	// MetricsAddress serves Prometheus metrics at /metrics; empty: off.
	MetricsAddress string `toml:"metrics_address"`

	// PidsLimit is each container's default pids.max; 0: none.
	PidsLimit int64 `toml:"pids_limit"`
}

// Defaults returns the embedded default configuration.
func Defaults() Config {
	var c Config
	if _, err := toml.Decode(defaultsTOML, &c); err != nil {
		panic(fmt.Sprintf("embedded peapod.toml is invalid: %v", err)) // caught by the unit test
	}
	return c
}

// DefaultsText is the embedded defaults file, one comment per key, for
// `peapod config default` and `peapod --print-config`.
func DefaultsText() string { return defaultsTOML }

// Load reads the TOML file at path on top of the defaults. Unknown keys are
// an error, so that a typo does not silently leave a default in place.
// Errors name the file and line. Values are not validated (flags may still
// change them): see Validate and Check.
func Load(path string) (Config, error) {
	c := Defaults()
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	if errs := decode(path, string(data), &c); len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// Check reads the file at path on top of the defaults as Load does, and
// validates the result. It reports every problem it finds, one error per
// problem, each as "path:line: message" where the line is known.
func Check(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	c := Defaults()
	errs := decode(path, string(data), &c)
	if len(errs) > 0 {
		return errors.Join(errs...) // a file that does not decode has no values to check
	}
	for _, p := range append(c.problems(), c.missingFiles()...) {
		errs = append(errs, atLine(path, keyLine(string(data), p.key), p.msg))
	}
	return errors.Join(errs...)
}

// missingFiles reports files the config names that do not exist (Check
// only: the daemon reports them when it opens them).
func (c Config) missingFiles() []problem {
	var ps []problem
	for _, kv := range [][2]string{{"registries_conf", c.RegistriesConf}, {"auth_file", c.AuthFile},
		{"stream_tls_cert", c.StreamTLSCert}, {"stream_tls_key", c.StreamTLSKey}} {
		if kv[1] == "" {
			continue
		}
		if _, err := os.Stat(kv[1]); err != nil {
			ps = append(ps, problem{kv[0], fmt.Sprintf("%s: %v", kv[0], err)})
		}
	}
	return ps
}

// decode reads text into c and reports a syntax or type error, or every
// unknown key, with its line.
func decode(path, text string, c *Config) []error {
	md, err := toml.Decode(text, c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return []error{atLine(path, pe.Position.Line, pe.Message)}
		}
		// Type mismatches carry their line in the message ("toml: line 3 ...").
		return []error{fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "toml: "))}
	}
	var errs []error
	for _, k := range md.Undecoded() {
		errs = append(errs, atLine(path, keyLine(text, k.String()), fmt.Sprintf("unknown key %q", k.String())))
	}
	return errs
}

func atLine(path string, line int, msg string) error {
	if line <= 0 {
		return fmt.Errorf("%s: %s", path, msg)
	}
	return fmt.Errorf("%s:%d: %s", path, line, msg)
}

// keyLine finds the line (1-based) that sets key, or the header of the
// table it is in; 0 when it is not in text (the value is a default). The
// config is flat, so a line scan is enough.
func keyLine(text, key string) int {
	parts := strings.Split(key, ".")
	last, first := parts[len(parts)-1], parts[0]
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		l = strings.TrimSpace(l)
		name, _, ok := strings.Cut(l, "=")
		if ok && strings.Trim(strings.TrimSpace(name), `"'`) == last {
			return i + 1
		}
	}
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "[") && strings.Trim(l, "[] ") == first {
			return i + 1
		}
	}
	return 0
}

// Validate checks values that would otherwise fail late and obscurely.
func (c Config) Validate() error {
	var errs []error
	for _, p := range c.problems() {
		errs = append(errs, errors.New(p.msg))
	}
	return errors.Join(errs...)
}

// problem is a bad value and the key that holds it.
type problem struct{ key, msg string }

func (c Config) problems() []problem {
	var ps []problem
	add := func(key, format string, args ...any) { ps = append(ps, problem{key, fmt.Sprintf(format, args...)}) }
	if _, err := c.SlogLevel(); err != nil {
		add("log_level", "%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		add("log_format", "log_format %q: must be text or json", c.LogFormat)
	}
	switch c.CgroupDriver {
	case "cgroupfs", "systemd":
	default:
		add("cgroup_driver", "cgroup_driver %q: must be cgroupfs or systemd", c.CgroupDriver)
	}
	if c.PidsLimit < 0 {
		add("pids_limit", "pids_limit %d: must not be negative (0 turns it off)", c.PidsLimit)
	}
	if c.PullProgressTimeout < 0 {
		add("pull_progress_timeout", "pull_progress_timeout %s: must not be negative (0 turns it off)", c.PullProgressTimeout)
	}
	if (c.StreamTLSCert == "") != (c.StreamTLSKey == "") {
		add("stream_tls_cert", "stream_tls_cert and stream_tls_key must be set together")
	}
	for _, kv := range [][2]string{{"socket", c.Socket}, {"root", c.Root}, {"state", c.State}} {
		if kv[1] == "" {
			add(kv[0], "%s must not be empty", kv[0])
		}
	}
	for _, kv := range [][2]string{{"stream_address", c.StreamAddress}, {"metrics_address", c.MetricsAddress}} {
		if kv[1] == "" && kv[0] == "metrics_address" {
			continue // off
		}
		if _, _, err := net.SplitHostPort(kv[1]); err != nil {
			add(kv[0], "%s %q: must be host:port (e.g. 127.0.0.1:9090): %v", kv[0], kv[1], err)
		}
	}
	return ps
}

// Values is c as a flat map keyed by config key, values as TOML would
// write them (durations as strings): for the verbose CRI Status and for
// telling what a reload changed.
func (c Config) Values() map[string]any {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		panic(fmt.Sprintf("encode config: %v", err)) // only plain fields: cannot happen
	}
	m := map[string]any{}
	if _, err := toml.Decode(buf.String(), &m); err != nil {
		panic(fmt.Sprintf("decode encoded config: %v", err))
	}
	return m
}

// ReloadableKeys are the keys a running daemon applies on SIGHUP; the
// others need a restart.
var ReloadableKeys = []string{"log_level", "registries_conf", "cni_conf_dir"}

// Changed lists the keys whose values differ between a and b, sorted.
func Changed(a, b Config) []string {
	va, vb := a.Values(), b.Values()
	var keys []string
	for k, v := range va {
		if fmt.Sprint(v) != fmt.Sprint(vb[k]) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// SlogLevel maps log_level to a slog level.
func (c Config) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log_level %q: must be debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}
