// Command peapod is the CRI runtime daemon. main wires configuration to the
// services and the gRPC server, and nothing else.
//
// The same binary also runs as libcontainer's container init ("peapod init")
// and as the pod's keeper and pause process ("peapod pod-pause") and the
// exec helper ("peapod exec-enter"), all dispatched before main runs, and
// as the runner a keeper forks to start a container ("peapod
// container-start").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // joins namespaces in "peapod init"
	"go.podman.io/storage/pkg/reexec"
	"google.golang.org/grpc"

	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/config"
	"github.com/peapod-cri/peapod/cri"
	"github.com/peapod-cri/peapod/image"
	"github.com/peapod-cri/peapod/metrics"
	"github.com/peapod-cri/peapod/network"
	"github.com/peapod-cri/peapod/sandbox"
	_ "github.com/peapod-cri/peapod/sandbox/enter" // "peapod exec-enter" runs in a C constructor
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	_ "github.com/peapod-cri/peapod/sandbox/pause" // "peapod pod-pause" runs in a C constructor
	"github.com/peapod-cri/peapod/sandbox/runner"
)

// version is set by the Makefile from git.
var version = "dev"

func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		// libcontainer's container init, after nsenter's constructor ran.
		libcontainer.Init()
	}
}

func main() {
	if reexec.Init() { // helpers of the image store run as re-executions
		return
	}
	if len(os.Args) > 1 && os.Args[1] == runner.Command {
		// Forked by a pod's keeper to start one container.
		os.Exit(runner.Main(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == runner.ExternalCommand {
		// The same, for a container of an external OCI runtime.
		os.Exit(runner.ExternalMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == runner.SeccompCommand {
		// Run by the daemon to read a container's seccomp program (fastexec.go).
		os.Exit(runner.SeccompMain())
	}
	if len(os.Args) > 1 && os.Args[1] == "config" {
		// Operator commands: `peapod config default`, `peapod config check FILE`.
		if err := configCommand(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "peapod config:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "purge" {
		// `peapod purge`: remove what peapod made on this node.
		if err := purgeCommand(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "peapod purge:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "image" {
		// `peapod image import FILE...`: load OCI/docker archives into the store.
		if err := imageCommand(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "peapod image:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "peapod:", err)
		os.Exit(1)
	}
}

// loadWithFlags reads the config file at path (the defaults when empty)
// and applies the daemon flags fs set (values by flag name, as fs holds
// them), then validates the result: what the daemon would run with. The
// subcommands that act on the daemon's files (purge, image import) use it.
func loadWithFlags(path string, fs *flag.FlagSet, values map[string]*string) (config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return config.Config{}, err
	}
	fs.Visit(func(f *flag.Flag) {
		if field, ok := flagNames[f.Name]; ok && values[f.Name] != nil {
			*field(&cfg) = *values[f.Name]
		}
	})
	if err := cfg.Validate(); err != nil {
		return config.Config{}, err
	}
	return cfg, nil
}

// flagNames are the flags that override config keys; scripts depend on them.
var flagNames = map[string]func(*config.Config) *string{
	"socket":          func(c *config.Config) *string { return &c.Socket },
	"socket-group":    func(c *config.Config) *string { return &c.SocketGroup },
	"root":            func(c *config.Config) *string { return &c.Root },
	"container-root":  func(c *config.Config) *string { return &c.ContainerRoot },
	"state":           func(c *config.Config) *string { return &c.State },
	"log-level":       func(c *config.Config) *string { return &c.LogLevel },
	"log-format":      func(c *config.Config) *string { return &c.LogFormat },
	"metrics-address": func(c *config.Config) *string { return &c.MetricsAddress },
	"cgroup-parent":   func(c *config.Config) *string { return &c.CgroupParent },
	"registries-conf": func(c *config.Config) *string { return &c.RegistriesConf },
	"network":         func(c *config.Config) *string { return &c.Network },
	"bridge":          func(c *config.Config) *string { return &c.Bridge },
	"pod-cidr":        func(c *config.Config) *string { return &c.PodCIDR },
	"cni-conf-dir":    func(c *config.Config) *string { return &c.CNIConfDir },
	"stream-address":  func(c *config.Config) *string { return &c.StreamAddress },
	"nri-socket":      func(c *config.Config) *string { return &c.NRISocket },

	// image trust (image/trust.go)
	"registries-conf-dir": func(c *config.Config) *string { return &c.RegistriesConfDir },
	"registries-d":        func(c *config.Config) *string { return &c.RegistriesD },
	"signature-policy":    func(c *config.Config) *string { return &c.SignaturePolicy },
}

var flagUsage = map[string]string{
	"socket":          "CRI gRPC unix socket",
	"socket-group":    "group (name or GID) owning the socket, mode 0660 (empty: root)",
	"root":            "persistent state directory (metadata, images, container layers)",
	"container-root":  "directory for containers' writable layers apart from the images in root (empty: in root)",
	"state":           "runtime state directory (pod files, container state)",
	"log-level":       "debug, info, warn or error",
	"log-format":      "log format: text or json",
	"metrics-address": "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9465; empty: off)",
	"cgroup-parent":   "cgroup for pods that name none (relative: under peapod's own cgroup)",
	"registries-conf": "containers-registries.conf(5) file (mirrors, insecure registries, short names)",
	"network":         "pod network: builtin, cni, or auto (CNI when cni-conf-dir holds a config)",
	"bridge":          "bridge of the built-in pod network",
	"pod-cidr":        "pod address range of the built-in network: IPv4, or IPv4,IPv6 for dual-stack",
	"cni-conf-dir":    "CNI config dir (network cni or auto)",
	"stream-address":  "listen address of the exec/attach/port-forward server (port 0: any free port)",
	"nri-socket":      "unix socket NRI plugins connect to (with enable_nri)",

	"registries-conf-dir": "directory of registries.conf drop-ins, e.g. shortnames.conf (empty: none)",
	"registries-d":        "containers-registries.d(5) directory: where image signatures are read from (empty: none)",
	"signature-policy":    "containers-policy.json(5) file checked at every pull (empty: accept any image)",
}

// printUsage is peapod --help: the commands, then the daemon's flags.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `usage: peapod [flags]                 run the daemon (the CRI runtime)
       peapod config default         print the default config, a comment per key
       peapod config check FILE      check a config file: every error as FILE:LINE: message, exit 1
       peapod purge [--force] [...]  remove everything peapod made on this node (peapod purge --help)
       peapod --version

flags of the daemon (each sets the config key of the same name):
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// notBuiltYet are flags accepted now whose feature comes with a later issue.
var notBuiltYet = map[string]bool{}

func run(args []string) error {
	fs := flag.NewFlagSet("peapod", flag.ContinueOnError)
	configPath := fs.String("config", "", "TOML config file read on top of the embedded defaults")
	printConfig := fs.Bool("print-config", false, "print the embedded default config and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	values := map[string]*string{}
	for name, usage := range flagUsage {
		values[name] = fs.String(name, "", usage+" (overrides the config file)")
	}
	fs.SetOutput(io.Discard) // errors are returned, --help prints below
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		printUsage(os.Stdout, fs)
		return nil
	} else if err != nil {
		return fmt.Errorf("%w (peapod --help lists the flags)", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s (peapod --help lists the commands)", strings.Join(fs.Args(), " "))
	}
	if *printConfig {
		fmt.Print(config.DefaultsText())
		return nil
	}
	if *showVersion {
		fmt.Println("peapod", version)
		return nil
	}

	if err := closeInheritedOnExec(); err != nil {
		return err
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	setFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setFlags[f.Name] = true })
	for name, field := range flagNames {
		if setFlags[name] {
			*field(&cfg) = *values[name]
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	level := new(slog.LevelVar) // SIGHUP changes it
	l, _ := cfg.SlogLevel()
	level.Set(l)
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	if cfg.LogFormat == "json" {
		handler = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(handler)
	slog.SetDefault(log)
	for name := range setFlags {
		if notBuiltYet[name] {
			log.Warn("flag accepted, but its feature is not built yet", "flag", "--"+name, "value", *values[name])
		}
	}
	return serve(cfg, log, &reloader{path: *configPath, flags: setFlags, cfg: cfg, level: level, log: log})
}

// hostRegistriesConf is read when the config names no registries file, as
// other containers/image users (CRI-O, podman) do.
const hostRegistriesConf = "/etc/containers/registries.conf"

// gracefulStopTimeout bounds how long a shutdown waits for calls in flight.
const gracefulStopTimeout = 5 * time.Second

// hostAuthFiles are the node's registry credentials, first found wins,
// read when the config names no auth_file (CRI-O's and docker's places).
func hostAuthFiles() []string {
	files := []string{"/etc/containers/auth.json"}
	if home, err := os.UserHomeDir(); err == nil {
		files = append(files, filepath.Join(home, ".docker", "config.json"))
	}
	return files
}

func serve(cfg config.Config, log *slog.Logger, reload *reloader) error {
	// SIGHUP reloads (below, once serving); until then it must not kill us.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tuneGC(log)
	loadHelpers(log)
	m := metrics.New(nil) // the pod and container counts are added once the runtime is open
	startPprof(log)
	cfg = withHostFiles(cfg)
	if err := hostfs.EnsureDir(cfg.Root, hostfs.PrivateDirMode); err != nil {
		return fmt.Errorf("root %s: %w", cfg.Root, err)
	}
	if cfg.ContainerRoot != "" {
		if err := hostfs.EnsureDir(cfg.ContainerRoot, hostfs.PrivateDirMode); err != nil {
			return fmt.Errorf("container_root %s: %w", cfg.ContainerRoot, err)
		}
	}
	cleanStart, err := takeCleanStopMarker(cfg.Root)
	if err != nil {
		return err
	}
	// Runs last, after the runtime and the image store are closed: only a
	// stop after serving, where all of that went well, is clean.
	stopErr := errors.New("stopped before serving")
	defer func() {
		if stopErr == nil {
			if err := writeCleanStopMarker(cfg.Root); err != nil {
				log.Warn("the next start will repair storage as after a crash", "err", err)
			}
		}
	}()
	images, err := image.Open(image.Config{
		Root:                cfg.Root,
		ContainerRoot:       cfg.ContainerRoot,
		RunRoot:             cfg.State,
		RegistriesConf:      cfg.RegistriesConf,
		RegistriesConfDir:   cfg.RegistriesConfDir,
		RegistriesD:         cfg.RegistriesD,
		SignaturePolicy:     cfg.SignaturePolicy,
		AuthFile:            cfg.AuthFile,
		PullProgressTimeout: cfg.PullProgressTimeout,
		PinnedImages:        cfg.PinnedImages,
		Logger:              log,
		Observer:            m,
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := images.Close(); err != nil && stopErr == nil {
			stopErr = err
		}
	}()

	podNetwork, err := network.OpenReloadable(context.Background(), network.Config{
		Mode:       cfg.Network,
		Bridge:     cfg.Bridge,
		PodCIDR:    cfg.PodCIDR,
		Root:       cfg.Root,
		CNIConfDir: cfg.CNIConfDir,
		CNIBinDirs: cfg.CNIBinDirs,
		Logger:     log,
	})
	if err != nil {
		return fmt.Errorf("pod network: %w", err)
	}

	plugins, err := openNRI(cfg, log)
	if err != nil {
		return err
	}
	events := cri.NewEventBus(cri.DefaultEventQueue)
	rt, err := sandbox.Open(sandbox.Options{
		Root:         cfg.Root,
		State:        cfg.State,
		CgroupParent: cfg.CgroupParent,
		CgroupDriver: cfg.CgroupDriver,
		PidsLimit:    cfg.PidsLimit,
		CDISpecDirs:  cfg.CDISpecDirs,
		Handlers:     runtimeHandlers(cfg.RuntimeHandlers),
		Images:       images,
		Network:      metrics.Network{Backend: podNetwork, M: m},
		Events:       metrics.Events{Next: events, M: m},
		Plugins:      plugins.sandboxPlugins(),
		Logger:       log,
	})
	if err != nil {
		return err
	}
	plugins.start(rt, log)
	defer plugins.stop()
	defer func() {
		if err := rt.Close(); err != nil && stopErr == nil {
			stopErr = err
		}
	}()
	if !cleanStart || len(images.RecordsMovedAside()) > 0 {
		collectStorage(images, rt, log)
	}
	warnNetworkChange(log, cfg, podNetwork.Kind(), rt.Pods())

	streams, err := cri.NewStreamServer(cfg.StreamAddress, cfg.StreamTLSCert, cfg.StreamTLSKey, rt, log)
	if err != nil {
		return err
	}
	defer streams.Close()

	m.CountStates(stateCounts(rt))
	streams.UseMetrics(m)
	svc := cri.NewService(rt, images, streams, events, cri.Info{Version: version, CgroupDriver: cfg.CgroupDriver, NetworkReady: podNetwork.Ready,
		Verbose: func() map[string]any {
			now := reload.current()
			in := cfg // with the files found at start (auth file); the registries file as reloaded
			in.RegistriesConf = now.RegistriesConf
			in.RegistriesConfDir, in.RegistriesD, in.SignaturePolicy = now.RegistriesConfDir, now.RegistriesD, now.SignaturePolicy
			return map[string]any{"config": now.Values(), "runtime": runtimeInfo(in, podNetwork, streams.Addr())}
		}}, log)
	svc.UseMetrics(m)
	svc.SweepCheckpointLeftovers()
	if !cfg.EnableCRIUSupport {
		svc.DisableCRIU()
	}
	if cfg.MetricsAddress != "" {
		ms, err := m.Serve(cfg.MetricsAddress, log)
		if err != nil {
			return err
		}
		defer ms.Close()
		log.Info("serving metrics", "url", "http://"+ms.Addr()+"/metrics")
	}
	reload.images, reload.net = images, podNetwork
	lis, err := cri.Listen(cfg.Socket, cfg.SocketGroup)
	if err != nil {
		return err
	}
	srv := svc.NewGRPCServer()
	if cfg.CgroupDriver == "systemd" {
		log.Info("systemd cgroup driver", "how", cgroups.SystemdStatus())
	}
	log.Info("peapod serving", "socket", cfg.Socket, "streaming", streams.Addr(), "root", cfg.Root, "state", cfg.State,
		"cgroups", cgroups.Mode(), "cgroup_parent", cfg.CgroupParent, "version", version)
	stopErr = runServer(srv, lis, hup, reload, events, cfg.Socket, log)
	return stopErr
}

// withHostFiles fills in the host's registries.conf and auth file where
// the config names none and they exist.
func withHostFiles(cfg config.Config) config.Config {
	if cfg.RegistriesConf == "" {
		if _, err := os.Stat(hostRegistriesConf); err == nil {
			cfg.RegistriesConf = hostRegistriesConf
		}
	}
	if cfg.AuthFile == "" {
		for _, p := range hostAuthFiles() {
			if _, err := os.Stat(p); err == nil {
				cfg.AuthFile = p
				break
			}
		}
	}
	return cfg
}

// runServer serves gRPC on lis until SIGTERM or SIGINT, reloading on
// SIGHUP, then stops gracefully (but not for longer than
// gracefulStopTimeout) and removes the socket.
func runServer(srv *grpc.Server, lis net.Listener, hup <-chan os.Signal, reload *reloader, events *cri.EventBus, socket string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	for {
		select {
		case <-hup:
			reload.reload(ctx)
			continue
		case <-ctx.Done():
			log.Info("shutting down; pods and containers keep running")
			events.Close() // ends the event streams, which GracefulStop would wait for
			// GracefulStop waits for every call in flight; a caller still
			// waiting for a slow detached create must not hold the exit.
			stopped := make(chan struct{})
			go func() { srv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(gracefulStopTimeout):
				log.Warn("calls still in flight at shutdown are cut short", "waited", gracefulStopTimeout)
				srv.Stop()
				<-stopped
			}
			os.Remove(socket)
			return nil
		case err := <-errc:
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("serve: %w", err)
		}
	}
}

// runtimeHandlers are the configured handlers, sorted by name.
func runtimeHandlers(hs map[string]config.RuntimeHandler) []sandbox.Handler {
	var out []sandbox.Handler
	for _, name := range slices.Sorted(maps.Keys(hs)) {
		h := sandbox.Handler{Name: name}
		if hs[name].Runtime == config.RuntimeOCI {
			h.OCIPath = hs[name].Path
		}
		out = append(out, h)
	}
	return out
}
