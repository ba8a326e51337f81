package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/image"
	"github.com/peapod-cri/peapod/network"
	"github.com/peapod-cri/peapod/sandbox"
)

// defaultCrictlConfig is where `make install` puts crictl's config.
const defaultCrictlConfig = "/etc/crictl.yaml"

// purgeCommand runs `peapod purge`: it removes what peapod made on this
// node, as the config (file and flags) names it: its pods and containers
// (through the runtime, so each pod's network is released by its backend),
// the image store, root and state, the built-in bridge and its nftables
// tables, the cgroup parent, and crictl's config when it points at
// peapod's socket. It refuses while the daemon runs, and while pods run
// unless --force. It never touches what the config does not name.
func purgeCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("peapod purge", flag.ContinueOnError)
	fs.SetOutput(stdout)
	configPath := fs.String("config", "", "the daemon's config file (e.g. /etc/peapod/peapod.toml)")
	force := fs.Bool("force", false, "also stop and remove running pods")
	crictlConfig := fs.String("crictl-config", defaultCrictlConfig, "crictl's config: removed when it points at peapod's socket")
	values := map[string]*string{}
	for name, usage := range flagUsage {
		values[name] = fs.String(name, "", usage+" (overrides the config file)")
	}
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: peapod purge [--config FILE] [--force] [--crictl-config FILE] [daemon flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil // fs.Usage printed it
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	cfg, err := loadWithFlags(*configPath, fs, values)
	if err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }

	if conn, err := net.DialTimeout("unix", cfg.Socket, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("peapod is running (%s answers): stop it first (systemctl stop peapod)", cfg.Socket)
	}
	for _, d := range [][2]string{{cfg.Root, "metadata.db"}, {cfg.State, "pods"}} {
		if err := looksLikeOurs(d[0], d[1]); err != nil {
			return err
		}
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	images, err := image.Open(image.Config{Root: cfg.Root, ContainerRoot: cfg.ContainerRoot, RunRoot: cfg.State, Logger: log})
	if err != nil {
		return fmt.Errorf("open the image store: %w", err)
	}
	defer images.Close()
	var podNetwork sandbox.Network
	if n, err := network.OpenReloadable(ctx, network.Config{Mode: cfg.Network, Bridge: cfg.Bridge, PodCIDR: cfg.PodCIDR,
		Root: cfg.Root, CNIConfDir: cfg.CNIConfDir, CNIBinDirs: cfg.CNIBinDirs, Logger: log}); err != nil {
		say("warning: pod network: %v (pods' veths go with their namespaces; CNI plugins' own IP records stay)", err)
	} else {
		podNetwork = n
	}
	rt, err := sandbox.Open(sandbox.Options{Root: cfg.Root, State: cfg.State, CgroupParent: cfg.CgroupParent,
		CgroupDriver: cfg.CgroupDriver, Images: images, Network: podNetwork, Logger: log})
	if err != nil {
		return fmt.Errorf("open peapod's pods: %w", err)
	}
	var running []string
	for _, p := range rt.Pods() {
		if p.State == sandbox.PodReady {
			m := p.Config.GetMetadata()
			running = append(running, fmt.Sprintf("%s/%s (%.13s)", m.GetNamespace(), m.GetName(), p.ID))
		}
	}
	if len(running) > 0 && !*force {
		rt.Close()
		return fmt.Errorf("%d pods are running: %s; remove them first (crictl rmp -af) or purge with --force",
			len(running), strings.Join(running, ", "))
	}
	var errs []error
	for _, p := range rt.Pods() {
		if err := rt.RemovePod(ctx, p.ID); err != nil {
			errs = append(errs, fmt.Errorf("remove pod %s: %w", p.ID, err))
		} else {
			say("removed pod %s/%s", p.Config.GetMetadata().GetNamespace(), p.Config.GetMetadata().GetName())
		}
	}
	rt.Close()
	if err := images.Close(); err != nil { // unmounts the layers
		errs = append(errs, fmt.Errorf("close the image store: %w", err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("nothing else removed: %w", errors.Join(errs...))
	}

	if link, err := exec.Command("ip", "-d", "link", "show", cfg.Bridge).Output(); err == nil && strings.Contains(string(link), "bridge ") {
		errs = append(errs, runCommand(say, "ip", "link", "del", cfg.Bridge))
	}
	for _, family := range []string{"ip", "ip6", "bridge"} {
		table := "peapod-" + cfg.Bridge
		if exec.Command("nft", "list", "table", family, table).Run() == nil {
			errs = append(errs, runCommand(say, "nft", "delete", "table", family, table))
		}
	}
	for _, dir := range []string{cfg.State, cfg.Root} {
		errs = append(errs, removeTree(say, dir))
	}
	if cfg.ContainerRoot != "" {
		// Its storage only: the directory may be a mount point of its own.
		errs = append(errs, removeTree(say, filepath.Join(cfg.ContainerRoot, "storage")))
	}
	if err := os.Remove(cfg.Socket); err == nil {
		say("removed %s", cfg.Socket)
	}
	errs = append(errs, removeCgroupParent(say, cfg.CgroupParent))
	errs = append(errs, removeCrictlConfig(say, *crictlConfig, cfg.Socket))
	say("left as they are: net.ipv4.ip_forward (and net.ipv6.conf.all.forwarding with a dual-stack pod_cidr), " +
		"which peapod turned on and other software may rely on; the config file and the binaries (make uninstall)")
	return errors.Join(errs...)
}

// looksLikeOurs refuses to purge a directory that exists, is not empty and
// lacks what peapod keeps there (marker): a config pointing root at /var
// must not delete /var.
func looksLikeOurs(dir, marker string) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
		return fmt.Errorf("%s: not removing a directory that is not an absolute path below /", dir)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
		return fmt.Errorf("%s does not look like peapod's (no %s): not removing it", dir, marker)
	}
	return nil
}

func runCommand(say func(string, ...any), name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	say("%s %s", name, strings.Join(args, " "))
	return nil
}

// removeTree unmounts what is mounted below dir (deepest first), then
// removes it.
func removeTree(say func(string, ...any), dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	mounts, err := mountsBelow(dir)
	if err != nil {
		return err
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", mounts[i], err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	say("removed %s", dir)
	return nil
}

func mountsBelow(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			mp := unescapeMount(fields[4])
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				out = append(out, mp)
			}
		}
	}
	return out, sc.Err()
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// removeCgroupParent removes the cgroup that holds peapod's pods, in each
// hierarchy; it refuses one that still has processes. A systemd slice is
// the kubelet's (or systemd's), not peapod's.
func removeCgroupParent(say func(string, ...any), parent string) error {
	if parent == "" || parent == "/" || cgroups.IsSystemdSlice(parent) {
		return nil
	}
	paths, err := cgroups.Paths(parent)
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", parent, err)
	}
	var errs []error
	seen := map[string]bool{}
	for _, dir := range paths {
		if seen[dir] {
			continue
		}
		seen[dir] = true
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		var dirs []string
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs))) // children first
		for _, d := range dirs {
			if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
		if len(errs) == 0 {
			say("removed cgroup %s", dir)
		}
	}
	return errors.Join(errs...)
}

// removeCrictlConfig removes crictl's config if it points at socket, and
// only then.
func removeCrictlConfig(say func(string, ...any), path, socket string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	endpoint := ""
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "runtime-endpoint" {
			endpoint = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	if strings.TrimPrefix(endpoint, "unix://") != socket {
		say("kept %s: it points at %q, not at peapod's %s", path, endpoint, socket)
		return nil
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	say("removed %s", path)
	return nil
}
