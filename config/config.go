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
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/peapod-cri/peapod/network"
)

//go:embed peapod.toml
var defaultsTOML string

// Config is the daemon's configuration. Keys mirror the flags of cmd/peapod.
type Config struct {
	Socket string `toml:"socket"`
	// SocketGroup owns the socket (name or GID); empty: root.
	SocketGroup string `toml:"socket_group"`
	Root        string `toml:"root"`
	// ContainerRoot holds the containers' writable layers apart from the
	// images in Root (KEP-4191's split image filesystem); empty: in Root.
	ContainerRoot  string `toml:"container_root"`
	State          string `toml:"state"`
	LogLevel       string `toml:"log_level"`
	LogFormat      string `toml:"log_format"`
	CgroupDriver   string `toml:"cgroup_driver"`
	CgroupParent   string `toml:"cgroup_parent"`
	RegistriesConf string `toml:"registries_conf"`
	// RegistriesConfDir, RegistriesD and SignaturePolicy: image trust
	// (image/trust.go); empty: none.
	RegistriesConfDir string `toml:"registries_conf_dir"`
	RegistriesD       string `toml:"registries_d"`
	SignaturePolicy   string `toml:"signature_policy"`
	// Network picks the pod network: "builtin", "cni", or "auto" (CNI when
	// cni_conf_dir holds a config, else built-in).
	Network string `toml:"network"`
	Bridge  string `toml:"bridge"`
	PodCIDR string `toml:"pod_cidr"`

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

	// CDISpecDirs are searched for CDI device specs; empty: CDI devices
	// are refused.
	CDISpecDirs []string `toml:"cdi_spec_dirs"`

	// EnableNRI serves NRI (Node Resource Interface) plugins on NRISocket.
	EnableNRI bool   `toml:"enable_nri"`
	NRISocket string `toml:"nri_socket"`
	// A connecting NRI plugin must register within the first; each hook
	// call to a plugin must answer within the second.
	NRIPluginRegistrationTimeout time.Duration `toml:"nri_plugin_registration_timeout"`
	NRIPluginRequestTimeout      time.Duration `toml:"nri_plugin_request_timeout"`

	// EnableCRIUSupport allows CheckpointContainer and the restore of a
	// checkpoint archive (CreateContainer with an absolute path as its
	// image); off, both answer FailedPrecondition before anything is read.
	EnableCRIUSupport bool `toml:"enable_criu_support"`

	// RuntimeHandlers are the runtime handler names (RuntimeClass handler)
	// served besides the default one, each with what runs it.
	RuntimeHandlers map[string]RuntimeHandler `toml:"runtime_handlers"`
}

// RuntimeHandler is what runs the containers of one runtime handler.
type RuntimeHandler struct {
	// Runtime is "embedded" (runc's libcontainer built into peapod, as
	// for the default handler) or "oci" (the OCI runtime binary at Path,
	// e.g. crun or runc, driven through its command line).
	Runtime string `toml:"runtime"`
	// Path is the OCI runtime binary ("oci" only): absolute, executable
	// and owned by root, as it runs as root with the pods' specs.
	Path string `toml:"path"`
}

// The runtimes a handler may name.
const (
	RuntimeEmbedded = "embedded"
	RuntimeOCI      = "oci"
)

// handlerName is what Kubernetes accepts as a RuntimeClass handler: a
// DNS-1123 label.
var handlerName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

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
	if len(errs) > 0 && syntaxError(errs) {
		return errors.Join(errs...) // a file that does not parse has no values to check
	}
	// The keys that did not decode keep their defaults: what is checked
	// below is the rest of the file.
	for _, p := range append(append(c.problems(), c.missingFiles()...), c.hostConflicts()...) {
		errs = append(errs, atLine(path, keyLine(string(data), p.key), p.msg))
	}
	return errors.Join(errs...)
}

// missingFiles reports files the config names that do not exist (Check
// only: the daemon reports them when it opens them).
func (c Config) missingFiles() []problem {
	var ps []problem
	for _, kv := range [][2]string{{"registries_conf", c.RegistriesConf}, {"auth_file", c.AuthFile},
		{"registries_conf_dir", c.RegistriesConfDir}, {"registries_d", c.RegistriesD}, {"signature_policy", c.SignaturePolicy},
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

// hostConflicts reports what the daemon would refuse at start because of
// the host (Check only: the daemon finds it when it sets the network up):
// a built-in pod_cidr that overlaps a network of the host.
func (c Config) hostConflicts() []problem {
	backend, _, err := network.Choose(c.Network, c.CNIConfDir)
	if err != nil || backend != network.BackendBuiltin || network.CheckPodCIDR(backend, c.PodCIDR) != nil {
		return nil // reported by problems
	}
	if err := network.CheckHostOverlap(c.Bridge, c.PodCIDR); err != nil {
		return []problem{{"pod_cidr", err.Error()}}
	}
	return nil
}

// decode reads text into c, key by key, and reports every syntax error
// (the first: TOML stops there), unknown key, wrong type and integer
// duration, each with its line.
func decode(path, text string, c *Config) []error {
	var raw map[string]toml.Primitive
	md, err := toml.Decode(text, &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return []error{parseError{atLine(path, pe.Position.Line, pe.Message)}}
		}
		return []error{parseError{fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "toml: "))}}
	}
	fields := fieldsByKey(c)
	var errs []error
	seen := map[string]bool{}
	for _, k := range md.Keys() {
		// A key inside a table is decoded with its table, which may be
		// implicit ([runtime_handlers.x] alone): go by the first part.
		key := k[0]
		if seen[key] {
			continue
		}
		seen[key] = true
		line := keyLine(text, key)
		f, ok := fields[key]
		if !ok {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := suggestKey(key, fields); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			errs = append(errs, atLine(path, line, msg))
			continue
		}
		if f.Type() == durationType && md.Type(key) != "String" {
			errs = append(errs, atLine(path, line, fmt.Sprintf("%s: a duration is a string with a unit, e.g. \"5m\" or \"300s\" (a bare number would be nanoseconds)", key)))
			continue
		}
		if err := md.PrimitiveDecode(raw[key], f.Addr().Interface()); err != nil {
			msg := lineOfKey.ReplaceAllString(strings.TrimPrefix(err.Error(), "toml: "), "") // the line is given before
			errs = append(errs, atLine(path, line, fmt.Sprintf("%s: %s", key, msg)))
		}
	}
	// Keys inside a known table that no field took ([runtime_handlers.x]
	// binary = ...): unknown as well.
	for _, k := range md.Undecoded() {
		if _, known := fields[k[0]]; known && len(k) > 1 {
			errs = append(errs, atLine(path, keyLine(text, k[len(k)-1]), fmt.Sprintf("unknown key %q", k.String())))
		}
	}
	return errs
}

// parseError is a file that is not TOML: no key was read.
type parseError struct{ error }

func syntaxError(errs []error) bool {
	var pe parseError
	return len(errs) == 1 && errors.As(errs[0], &pe)
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	lineOfKey    = regexp.MustCompile(`^line \d+ \(last key "[^"]*"\): `)
)

// fieldsByKey maps each config key to its field in c.
func fieldsByKey(c *Config) map[string]reflect.Value {
	v := reflect.ValueOf(c).Elem()
	out := map[string]reflect.Value{}
	for i := 0; i < v.NumField(); i++ {
		if key := v.Type().Field(i).Tag.Get("toml"); key != "" {
			out[key] = v.Field(i)
		}
	}
	return out
}

// suggestKey is the known key closest to key (dashes for underscores, a
// typo of up to two letters), or "".
func suggestKey(key string, fields map[string]reflect.Value) string {
	norm := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	best, bestDist := "", 3
	for k := range fields {
		if d := editDistance(norm, k); d < bestDist || (d == bestDist && k < best) {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
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
	switch c.Network {
	case network.ModeAuto, network.ModeBuiltin, network.ModeCNI:
		// pod_cidr is read as the backend that will use it reads it
		backend, _, err := network.Choose(c.Network, c.CNIConfDir)
		if err != nil {
			add("cni_conf_dir", "%v", err)
		} else if err := network.CheckPodCIDR(backend, c.PodCIDR); err != nil {
			add("pod_cidr", "%v", err)
		}
		if backend == network.BackendBuiltin {
			if err := network.CheckBridgeName(c.Bridge); err != nil {
				add("bridge", "%v", err)
			}
		}
	default:
		add("network", "network %q: must be builtin, cni or auto", c.Network)
	}
	if c.ContainerRoot != "" {
		if !filepath.IsAbs(c.ContainerRoot) {
			add("container_root", "container_root %q: must be an absolute path (empty: container layers stay in root)", c.ContainerRoot)
		} else if filepath.Clean(c.ContainerRoot) == filepath.Clean(c.Root) {
			add("container_root", "container_root %q: is root; leave it empty to keep container layers in root", c.ContainerRoot)
		}
	}
	if c.PidsLimit < 0 {
		add("pids_limit", "pids_limit %d: must not be negative (0 turns it off)", c.PidsLimit)
	}
	for _, name := range sortedKeys(c.RuntimeHandlers) {
		switch h := c.RuntimeHandlers[name]; {
		case name == "runc":
			add("runtime_handlers", "runtime_handlers.%s: runc is the default handler's other name; it needs no entry", name)
		case !handlerName.MatchString(name):
			add("runtime_handlers", "runtime_handlers.%q: a handler name is a DNS label (lower-case letters, digits and '-', at most 63)", name)
		case h.Runtime == RuntimeEmbedded:
			if h.Path != "" {
				add("runtime_handlers", "runtime_handlers.%s.path: only an %q runtime has a path", name, RuntimeOCI)
			}
		case h.Runtime == RuntimeOCI:
			if err := checkRuntimeBinary(h.Path); err != nil {
				add("runtime_handlers", "runtime_handlers.%s.path %q: %v", name, h.Path, err)
			}
		default:
			add("runtime_handlers", "runtime_handlers.%s.runtime %q: must be %q (the runtime built into peapod) or %q (an OCI runtime binary at path)", name, h.Runtime, RuntimeEmbedded, RuntimeOCI)
		}
	}
	if c.EnableNRI {
		if !filepath.IsAbs(c.NRISocket) {
			add("nri_socket", "nri_socket %q: must be an absolute path", c.NRISocket)
		} else if len(c.NRISocket) > 107 {
			add("nri_socket", "nri_socket %q: longer than a unix socket path may be (107 bytes)", c.NRISocket)
		}
		if c.NRIPluginRegistrationTimeout <= 0 || c.NRIPluginRequestTimeout <= 0 {
			add("nri_plugin_request_timeout", "nri_plugin_registration_timeout and nri_plugin_request_timeout must be positive")
		}
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

// checkRuntimeBinary refuses an OCI runtime binary that is not an
// absolute path to a regular executable file owned by root: peapod runs
// it as root, so whoever may write it may run anything as root.
func checkRuntimeBinary(path string) error {
	if !filepath.IsAbs(path) {
		return errors.New("must be an absolute path")
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	switch {
	case !st.Mode().IsRegular():
		return errors.New("not a regular file")
	case st.Mode()&0o111 == 0:
		return errors.New("not executable")
	case !ok || sys.Uid != 0:
		return errors.New("not owned by root")
	case st.Mode()&0o022 != 0:
		return errors.New("writable by group or others")
	}
	return nil
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
var ReloadableKeys = []string{"log_level", "registries_conf", "registries_conf_dir", "registries_d", "signature_policy", "cni_conf_dir"}

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

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
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
