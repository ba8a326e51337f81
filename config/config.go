// Package config holds peapod's configuration: one struct, defaults embedded
// from peapod.toml (which doubles as the documentation of every key), an
// optional operator file read on top, and flags on top of that.
package config

import (
	_ "embed"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

//go:embed peapod.toml
var defaultsTOML string

// Config is the daemon's configuration. Keys mirror the flags of cmd/peapod.
type Config struct {
	Socket         string `toml:"socket"`
	Root           string `toml:"root"`
	State          string `toml:"state"`
	LogLevel       string `toml:"log_level"`
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
}

// Defaults returns the embedded default configuration.
func Defaults() Config {
	var c Config
	if _, err := toml.Decode(defaultsTOML, &c); err != nil {
		panic(fmt.Sprintf("embedded peapod.toml is invalid: %v", err)) // caught by the unit test
	}
	return c
}

// DefaultsText is the embedded defaults file, for `peapod --print-config`.
func DefaultsText() string { return defaultsTOML }

// Load reads the TOML file at path on top of the defaults. Unknown keys are
// an error, so that a typo does not silently leave a default in place.
func Load(path string) (Config, error) {
	c := Defaults()
	if path == "" {
		return c, nil
	}
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return Config{}, fmt.Errorf("read config %s: %w", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return Config{}, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	return c, nil
}

// Validate checks values that would otherwise fail late and obscurely.
func (c Config) Validate() error {
	if _, err := c.SlogLevel(); err != nil {
		return err
	}
	switch c.CgroupDriver {
	case "cgroupfs":
	case "systemd":
		return fmt.Errorf("cgroup_driver %q is not supported yet; use cgroupfs", c.CgroupDriver)
	default:
		return fmt.Errorf("cgroup_driver %q: must be cgroupfs or systemd", c.CgroupDriver)
	}
	if c.PullProgressTimeout < 0 {
		return fmt.Errorf("pull_progress_timeout %s: must not be negative (0 turns it off)", c.PullProgressTimeout)
	}
	if (c.StreamTLSCert == "") != (c.StreamTLSKey == "") {
		return fmt.Errorf("stream_tls_cert and stream_tls_key must be set together")
	}
	for name, v := range map[string]string{"socket": c.Socket, "root": c.Root, "state": c.State} {
		if v == "" {
			return fmt.Errorf("%s must not be empty", name)
		}
	}
	return nil
}

// SlogLevel maps log_level to a slog level.
func (c Config) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log_level %q: must be debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}
