// Package testenv provides real test fixtures shared by the tests of several
// peapod packages: a local OCI registry and small container images.
//
// Tests never use mocks for these. A mocked registry or hand-made image
// would only show that peapod agrees with the mock; the real Distribution
// registry (Debian's docker-registry package) speaks the exact HTTP protocol,
// content negotiation and error codes (MANIFEST_UNKNOWN, ...) that the image
// libraries meet in production.
//
// Images are built from Debian's DYNAMIC busybox package plus the glibc
// shared libraries it needs, taken from the libc6 .deb. The dynamic build is
// used on purpose: Debian's busybox-static runs applets in-process
// (FEATURE_SH_STANDALONE), so masking /bin/ls would have no effect, and it
// exercises the dynamic loader inside the container rootfs as real images do.
// Everything comes from apt, so the tests need nothing outside the repository
// and the Debian archive.
//
// The helpers need root (apt-get, dpkg-deb, ownership 0:0) and a Debian-like
// host.
package testenv

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// CacheDir holds downloaded .debs and built root filesystems, shared by all
// test processes (and reused across runs).
const CacheDir = "/var/cache/peapod-test"

// DefaultPath is the PATH set in images whose config has none.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const registryBin = "/usr/bin/docker-registry"

// Applets linked into /bin of the busybox rootfs.
var applets = []string{
	"sh", "echo", "cat", "sleep", "ls", "id", "hostname", "top", "ps", "env",
	"true", "false", "pwd", "mkdir", "rm", "touch", "wc", "head", "grep",
	"tail", "cp", "mv", "ln", "chmod", "chown", "kill", "mount", "umount",
	"stat", "test", "[", "printf", "sed", "tr", "cut", "uname", "whoami",
	"nproc", "date", "dd", "find", "xargs", "readlink", "nc", "wget", "vi",
	"ip", "ifconfig", "nslookup", "ping", "httpd", "tee", "seq", "sync", "df",
}

// ---------------------------------------------------------------- registry

// StartRegistry starts a private Distribution registry (Debian's
// docker-registry, installed with apt-get if missing) on a free 127.0.0.1
// port, storing blobs in a t.TempDir(), without auth, over plain HTTP. It
// returns "127.0.0.1:PORT". The process is killed (by its PID) and reaped in
// t.Cleanup. A registry the Debian package may have started on :5000 is left
// alone.
func StartRegistry(t testing.TB) (addr string) {
	t.Helper()
	if err := ensureRegistryInstalled(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return startRegistryWith(t, "")
}

// startRegistryWith starts a registry whose config has extra appended
// (top-level YAML sections).
func startRegistryWith(t testing.TB, extra string) (addr string) {
	t.Helper()
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := startRegistry(t, dir, attempt, extra)
		if err == nil {
			return addr
		}
		lastErr = err
	}
	t.Fatalf("testenv: start registry: %v", lastErr)
	return ""
}

func startRegistry(t testing.TB, dir string, attempt int, extra string) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	root := filepath.Join(dir, fmt.Sprintf("data%d", attempt))
	conf := filepath.Join(dir, fmt.Sprintf("config%d.yml", attempt))
	logPath := filepath.Join(dir, fmt.Sprintf("registry%d.log", attempt))
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
%s`, root, addr, extra)
	if err := os.WriteFile(conf, []byte(config), 0o644); err != nil {
		return "", err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd := exec.Command(registryBin, "serve", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Keep the registry's environment free of REGISTRY_* overrides.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", registryBin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for stop
			out, _ := os.ReadFile(logPath)
			return "", fmt.Errorf("docker-registry exited: %v\n%s", err, out)
		default:
		}
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || extra != "" && resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			out, _ := os.ReadFile(logPath)
			return "", fmt.Errorf("docker-registry at %s did not answer /v2/ in time (last: %v)\n%s", addr, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(stop)
	return addr, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var installMu sync.Mutex

func ensureRegistryInstalled() error {
	installMu.Lock()
	defer installMu.Unlock()
	if _, err := os.Stat(registryBin); err == nil {
		return nil
	}
	return aptInstall("docker-registry")
}

// aptInstall installs packages, running apt-get update only if the first
// attempt fails (stale or missing package lists).
func aptInstall(pkgs ...string) error {
	args := append([]string{"-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends"}, pkgs...)
	out, err := aptGet(args...)
	if err == nil {
		return nil
	}
	if uout, uerr := aptGet("update"); uerr != nil {
		return fmt.Errorf("apt-get install %v: %v\n%s\napt-get update: %v\n%s", pkgs, err, out, uerr, uout)
	}
	if out, err = aptGet(args...); err != nil {
		return fmt.Errorf("apt-get install %v: %v\n%s", pkgs, err, out)
	}
	return nil
}

func aptGet(args ...string) ([]byte, error) {
	cmd := exec.Command("apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	return cmd.CombinedOutput()
}

// ---------------------------------------------------------------- rootfs

var (
	busyboxOnce sync.Once
	busyboxDir  string
	busyboxErr  error
)

// BusyboxRootfs returns a directory holding a minimal root filesystem:
// Debian's dynamic busybox as /bin/busybox with hard links for common applets
// in /bin, the dynamic loader and glibc libraries it needs, /etc/passwd
// (root 0, www-data 33, nobody 65534) and /etc/group. The directory is built
// once per Debian package version and cached under CacheDir; callers must
// treat it as read-only.
func BusyboxRootfs(t testing.TB) string {
	t.Helper()
	busyboxOnce.Do(func() { busyboxDir, busyboxErr = buildBusyboxRootfs() })
	if busyboxErr != nil {
		t.Fatalf("testenv: busybox rootfs: %v", busyboxErr)
	}
	return busyboxDir
}

func buildBusyboxRootfs() (string, error) {
	debs, err := fetchDebs("busybox", "libc6")
	if err != nil {
		return "", err
	}
	// The cache key covers the exact .deb files (name includes the version).
	h := sha256.New()
	for _, d := range debs {
		fmt.Fprintln(h, filepath.Base(d))
	}
	fmt.Fprintln(h, "layout-v1", strings.Join(applets, ","))
	final := filepath.Join(CacheDir, "rootfs", "busybox-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(final, "bin", "busybox")); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", err
	}
	work, err := os.MkdirTemp(filepath.Dir(final), ".build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)

	extracted := filepath.Join(work, "x")
	for _, d := range debs {
		if out, err := exec.Command("dpkg-deb", "-x", d, extracted).CombinedOutput(); err != nil {
			return "", fmt.Errorf("dpkg-deb -x %s: %v\n%s", d, err, out)
		}
	}
	root := filepath.Join(work, "rootfs")
	if err := populateRootfs(root, extracted); err != nil {
		return "", err
	}
	// Atomic publish; a concurrent process may have won the race.
	if err := os.Rename(root, final); err != nil {
		if _, serr := os.Stat(filepath.Join(final, "bin", "busybox")); serr == nil {
			return final, nil
		}
		return "", err
	}
	return final, nil
}

// FetchDebs returns the paths of the .debs of pkgs (the candidate versions),
// downloaded with apt-get download into CacheDir/debs once and reused from
// there.
func FetchDebs(t testing.TB, pkgs ...string) []string {
	t.Helper()
	paths, err := fetchDebs(pkgs...)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return paths
}

// ExtractDebs extracts the Debian packages pkgs (FetchDebs) into a new
// directory below dir and returns it.
func ExtractDebs(t testing.TB, dir string, pkgs ...string) string {
	t.Helper()
	x, err := os.MkdirTemp(dir, "debs-")
	if err != nil {
		t.Fatal(err)
	}
	for _, deb := range FetchDebs(t, pkgs...) {
		if out, err := exec.Command("dpkg-deb", "-x", deb, x).CombinedOutput(); err != nil {
			t.Fatalf("testenv: dpkg-deb -x %s: %v\n%s", deb, err, out)
		}
	}
	return x
}

// CopyLibs copies into root/lib/x86_64-linux-gnu every shared library that
// the ELF files bins need (DT_NEEDED, transitively) and that neither root
// nor the trees in have hold, taken from the library directories of libTree
// (a tree ExtractDebs made). have: lower layers of the same image.
func CopyLibs(root, libTree string, have []string, bins ...string) error {
	libDirs := []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"}
	lookup := func(tree, lib string) string {
		for _, d := range libDirs {
			if p := filepath.Join(tree, d, lib); fileExists(p) {
				return p
			}
		}
		return ""
	}
	queue := append([]string(nil), bins...)
	for len(queue) > 0 {
		_, needed, err := elfDeps(queue[0])
		if err != nil {
			return fmt.Errorf("read %s: %w", queue[0], err)
		}
		queue = queue[1:]
		for _, lib := range needed {
			if slices.ContainsFunc(append([]string{root}, have...), func(tree string) bool { return lookup(tree, lib) != "" }) {
				continue
			}
			src := lookup(libTree, lib)
			if src == "" {
				return fmt.Errorf("shared library %s: in neither %s nor %s", lib, root, libTree)
			}
			dst := filepath.Join(root, libDirs[0], lib)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			if err := copyFile(src, dst, 0o755); err != nil { // follows the .so symlink
				return err
			}
			queue = append(queue, dst)
		}
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// fetchDebs returns the paths of the candidate .debs of pkgs, downloading
// them into CacheDir/debs with apt-get download when not already there.
func fetchDebs(pkgs ...string) ([]string, error) {
	debDir := filepath.Join(CacheDir, "debs")
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, p := range pkgs {
		path, err := fetchDeb(debDir, p)
		if err != nil {
			return nil, err
		}
		paths = append(paths, path)
	}
	return paths, nil
}

func fetchDeb(debDir, pkg string) (string, error) {
	// Reuse any cached .deb of this package (newest name wins), so tests run
	// offline once the cache is warm.
	if m, _ := filepath.Glob(filepath.Join(debDir, pkg+"_*_*.deb")); len(m) > 0 {
		sort.Strings(m)
		return m[len(m)-1], nil
	}
	tmp, err := os.MkdirTemp(debDir, ".dl-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	download := func() ([]byte, error) {
		cmd := exec.Command("apt-get", "download", pkg)
		cmd.Dir = tmp
		return cmd.CombinedOutput()
	}
	if out, err := download(); err != nil {
		if uout, uerr := aptGet("update"); uerr != nil {
			return "", fmt.Errorf("apt-get download %s: %v\n%s\napt-get update: %v\n%s", pkg, err, out, uerr, uout)
		}
		if out, err := download(); err != nil {
			return "", fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, out)
		}
	}
	m, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(m) != 1 {
		return "", fmt.Errorf("apt-get download %s: got %v", pkg, m)
	}
	dst := filepath.Join(debDir, filepath.Base(m[0]))
	if err := os.Rename(m[0], dst); err != nil {
		return "", err
	}
	return dst, nil
}

const passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
`

const group = `root:x:0:
daemon:x:1:
bin:x:2:
tty:x:5:
www-data:x:33:
users:x:100:
nogroup:x:65534:
`

func populateRootfs(root, extracted string) error {
	for _, d := range []string{"bin", "sbin", "dev", "etc", "proc", "sys", "run", "var", "var/run", "var/www", "usr", "usr/bin", "usr/sbin", "lib", "lib64", "lib/x86_64-linux-gnu", "home"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(root, "root"), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(root, "tmp"), 0o755); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		return err
	}

	src := ""
	for _, p := range []string{"bin/busybox", "usr/bin/busybox"} {
		if _, err := os.Stat(filepath.Join(extracted, p)); err == nil {
			src = filepath.Join(extracted, p)
			break
		}
	}
	if src == "" {
		return errors.New("busybox binary not found in the busybox .deb")
	}
	bb := filepath.Join(root, "bin", "busybox")
	if err := copyFile(src, bb, 0o755); err != nil {
		return err
	}
	for _, a := range applets {
		if err := os.Link(bb, filepath.Join(root, "bin", a)); err != nil {
			return err
		}
	}

	// Shared libraries: the ELF interpreter and the transitive DT_NEEDED
	// closure, looked up in the extracted libc6 tree.
	libDirs := []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib"}
	find := func(base string) (string, error) {
		for _, d := range libDirs {
			p := filepath.Join(extracted, d, base)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("shared library %s not found in the libc6 .deb", base)
	}
	interp, needed, err := elfDeps(src)
	if err != nil {
		return err
	}
	if interp == "" {
		return fmt.Errorf("%s is static; expected Debian's dynamic busybox", src)
	}
	queue := append([]string{filepath.Base(interp)}, needed...)
	seen := map[string]bool{}
	for len(queue) > 0 {
		lib := queue[0]
		queue = queue[1:]
		if seen[lib] {
			continue
		}
		seen[lib] = true
		p, err := find(lib)
		if err != nil {
			return err
		}
		if err := copyFile(p, filepath.Join(root, "lib/x86_64-linux-gnu", lib), 0o755); err != nil {
			return err
		}
		if _, more, err := elfDeps(p); err == nil {
			queue = append(queue, more...)
		}
	}
	// The interpreter path written into the binary (/lib64/ld-linux-x86-64.so.2).
	ip := filepath.Join(root, interp)
	if _, err := os.Lstat(ip); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(ip), 0o755); err != nil {
			return err
		}
		rel, _ := filepath.Rel(filepath.Dir(interp), "/lib/x86_64-linux-gnu/"+filepath.Base(interp))
		if err := os.Symlink(rel, ip); err != nil {
			return err
		}
	}

	files := map[string]string{"etc/passwd": passwd, "etc/group": group,
		"etc/shadow":   "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
		"etc/hostname": "localhost\n", "etc/hosts": "127.0.0.1 localhost\n", "etc/resolv.conf": ""}
	for p, c := range files {
		mode := fs.FileMode(0o644)
		if p == "etc/shadow" {
			mode = 0o640
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), mode); err != nil {
			return err
		}
	}
	return nil
}

// elfDeps returns the ELF interpreter (empty for static) and DT_NEEDED names.
func elfDeps(path string) (interp string, needed []string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return "", nil, err
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	needed, err = f.ImportedLibraries()
	return interp, needed, err
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

// ---------------------------------------------------------------- images

// ImageConfig is the runtime configuration written into a pushed image.
type ImageConfig struct {
	Entrypoint []string
	Cmd        []string
	// Env defaults to DefaultPath; a PATH is added when Env has none.
	Env        []string
	WorkingDir string
	User       string
	Labels     map[string]string
	StopSignal string
	Volumes    []string // exposed volumes, e.g. "/data"
}

// config is c as an image config.
func (c ImageConfig) config() v1.Config {
	env := append([]string(nil), c.Env...)
	hasPath := false
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			hasPath = true
		}
	}
	if !hasPath {
		env = append([]string{DefaultPath}, env...)
	}
	vc := v1.Config{
		Entrypoint: c.Entrypoint,
		Cmd:        c.Cmd,
		Env:        env,
		WorkingDir: c.WorkingDir,
		User:       c.User,
		Labels:     c.Labels,
		StopSignal: c.StopSignal,
	}
	for _, v := range c.Volumes {
		if vc.Volumes == nil {
			vc.Volumes = map[string]struct{}{}
		}
		vc.Volumes[v] = struct{}{}
	}
	return vc
}

// layerEpoch is the mtime of every layer entry, so equal inputs give equal
// digests.
var layerEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// PushImage builds a single-layer image (docker v2s2 media types, as
// go-containerregistry's defaults) from rootfsDir and pushes it over plain
// HTTP to addr/repoAndTag (e.g. "library/busybox:1.0"). The layer keeps
// modes, symlinks and hard links; every entry is owned by 0:0. It returns the
// manifest digest ("sha256:...").
func PushImage(t testing.TB, addr, repoAndTag string, rootfsDir string, cfg ImageConfig) (digest string) {
	t.Helper()
	img, err := BuildImage(rootfsDir, cfg)
	if err != nil {
		t.Fatalf("testenv: build image from %s: %v", rootfsDir, err)
	}
	ref, err := name.ParseReference(addr+"/"+repoAndTag, name.Insecure)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("testenv: push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return d.String()
}

// BuildImage builds the single-layer image that PushImage pushes.
func BuildImage(rootfsDir string, cfg ImageConfig) (v1.Image, error) {
	layerTar, err := tarDir(rootfsDir)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, err
	}
	cf := &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: layerEpoch},
		Config:       cfg.config(),
		RootFS:       v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: layerEpoch}, CreatedBy: "peapod testenv: " + filepath.Base(rootfsDir)},
	})
}

// LayerFromDir returns an uncompressed layer of dir's contents, built as
// PushImage builds its single layer (owned by 0:0, fixed mtimes).
func LayerFromDir(dir string) (v1.Layer, error) {
	layerTar, err := tarDir(dir)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
}

// tarDir returns an uncompressed tar of dir's contents (paths relative to
// dir, parents before children, sorted), owned by 0:0, with hard links
// recorded as such.
func tarDir(dir string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		var target string
		if fi.Mode()&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = layerEpoch, time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := links[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[key] = hdr.Name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
