// Package image is peapod's image store, the backend of the CRI
// ImageService.
//
// Layers live once in go.podman.io/storage (overlay driver) and are shared by
// images and by the copy-on-write root filesystems of containers. Pulls use
// go.podman.io/image/v5 (copy.Image from the docker transport into the
// containers-storage transport), honouring a containers-registries.conf(5)
// v2 file for mirrors, insecure (plain HTTP) registries and
// unqualified-search-registries, with drop-ins, short-name aliases and
// signature verification by a containers-policy.json(5) (trust.go).
//
// The package knows nothing of the CRI API types; the cri package translates.
//
// Programs using it must call reexec.Init() (go.podman.io/storage/pkg/reexec)
// first thing in main, as storage re-executes itself to apply layers.
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"go.podman.io/image/v5/docker/reference"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
	"go.podman.io/storage/pkg/idtools"
	storagetypes "go.podman.io/storage/types"
)

// Config says where the store keeps its data.
type Config struct {
	// Root is persistent; storage lives in Root/storage.
	Root string
	// RunRoot holds state lost on reboot (mount bookkeeping, locks).
	RunRoot string
	// ContainerRoot, when set and not Root, splits the store (KEP-4191):
	// containers and their writable layers live in ContainerRoot/storage,
	// images and their layers stay in Root/storage (c/storage's
	// "imagestore", as CRI-O splits it), so that each may be a filesystem
	// of its own.
	ContainerRoot string
	// RegistriesConf is a containers-registries.conf(5) v2 file; empty or
	// absent means no mirrors, HTTPS only, short names go to docker.io.
	RegistriesConf string
	// RegistriesConfDir holds registries.conf drop-ins (*.conf, read in
	// order after RegistriesConf, e.g. a shortnames.conf of [aliases]);
	// empty: none (the host's /etc/containers/registries.conf.d is not read).
	RegistriesConfDir string
	// RegistriesD is a containers-registries.d(5) directory: where
	// signatures are read from (lookaside, use-sigstore-attachments);
	// empty: none, signatures only from containers/image's default
	// lookaside /var/lib/containers/sigstore.
	RegistriesD string
	// SignaturePolicy is a containers-policy.json(5) file checked at every
	// pull; empty: accept any image (insecureAcceptAnything).
	SignaturePolicy string
	// AuthFile is a containers-auth.json(5) or docker config.json file
	// with registry credentials, used when a pull brings none; empty: none.
	AuthFile string
	// PullProgressTimeout cancels a pull that receives no bytes for this
	// long while a transfer is open; 0 disables it.
	PullProgressTimeout time.Duration
	// PinnedImages are references (tags, digests or IDs) reported as
	// pinned, so the kubelet never garbage-collects them.
	PinnedImages []string
	// Logger receives pull progress; nil: slog.Default().
	Logger *slog.Logger
	// Observer is told of every pull of one reference (metrics); nil: none.
	Observer PullObserver
}

// PullObserver receives the outcome of each pull of one fully qualified
// reference: the bytes received, the time taken and the error, if any.
type PullObserver interface {
	PullDone(bytes int64, elapsed time.Duration, err error)
}

// Auth is the credential for one pull.
type Auth struct {
	Username, Password string
	IdentityToken      string
	RegistryToken      string
}

// Image describes one stored image.
type Image struct {
	ID          string   // "sha256:<hex of the config digest>"
	RepoTags    []string // fully qualified, e.g. "docker.io/library/busybox:latest"
	RepoDigests []string // "<repo>@sha256:<manifest digest>"
	Size        uint64

	User, WorkingDir     string
	Entrypoint, Cmd, Env []string
	Labels               map[string]string
	StopSignal           string   // e.g. "SIGQUIT"; empty: the runtime's default (SIGTERM)
	Volumes              []string // the config's exposed volumes, sorted
	Pinned               bool     // named by Config.PinnedImages
	ConfigJSON           []byte   // raw OCI image config
}

// Store is the image store. Its methods are safe for concurrent use.
type Store struct {
	store storage.Store
	root  string // where images live: the graph root, or the image store when split
	// containerRoot is where containers' writable layers live: root,
	// or c/storage's graph root when the store is split.
	containerRoot string
	sysCtx        atomic.Pointer[types.SystemContext] // replaced whole by SetSources
	policy        atomic.Pointer[pullPolicy]          // replaced whole by SetSources

	log             *slog.Logger
	progressTimeout time.Duration
	pinned          map[string]bool // normalized references and "sha256:<id>"
	observer        PullObserver    // nil: none

	// pulls of the same reference with the same credentials share one
	// copy; they run under baseCtx, which Close cancels.
	flights    *flights
	baseCtx    context.Context
	cancelBase context.CancelFunc

	// layerGC: layers a failed pull committed are removed once no pull is
	// running (a running pull's committed layers are not yet referenced).
	gcMu      sync.Mutex
	gcIdle    *sync.Cond
	running   int
	gcPending bool
	gcRunning bool

	closeOnce sync.Once
	closeErr  error

	removeMu sync.Mutex
	commitMu sync.Mutex // fast pulls: layer commits and image records
	// noFastPull sends every pull through containers/image's copy (tests
	// compare both).
	noFastPull bool

	mu    sync.Mutex
	cache map[string]*configInfo // by storage image ID; image content is immutable

	movedAside []MovedAside // record files Open found unusable (repair.go)

	rw *rwLayers // containers' writable layers made by the driver directly (rwlayer.go)
}

type configInfo struct {
	size   uint64
	config imgspecv1.Image
	raw    []byte
}

// Open opens (creating if needed) the store: overlay storage in
// cfg.Root/storage and cfg.RunRoot/storage.
func Open(cfg Config) (*Store, error) {
	if cfg.Root == "" || cfg.RunRoot == "" {
		return nil, errors.New("image: Root and RunRoot are required")
	}
	imageRoot, runRoot := filepath.Join(cfg.Root, "storage"), filepath.Join(cfg.RunRoot, "storage")
	// Unsplit, the graph root holds both. Split, c/storage's graph root
	// holds the containers and the image store the images, which keep
	// the layout (and so the data) of an unsplit store's root.
	graphRoot, imageStore := imageRoot, ""
	if split := cfg.ContainerRoot != "" && filepath.Clean(cfg.ContainerRoot) != filepath.Clean(cfg.Root); split {
		graphRoot, imageStore = filepath.Join(cfg.ContainerRoot, "storage"), imageRoot
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	movedAside, err := repairRecords(graphRoot, runRoot, log)
	if err != nil {
		return nil, err
	}
	if imageStore != "" {
		more, err := repairRecords(imageStore, runRoot, log)
		if err != nil {
			return nil, err
		}
		movedAside = append(movedAside, more...)
	}
	st, err := storage.GetStore(storagetypes.StoreOptions{
		GraphRoot:       graphRoot,
		RunRoot:         runRoot,
		ImageStore:      imageStore,
		GraphDriverName: "overlay",
	})
	if err != nil {
		return nil, fmt.Errorf("image: open storage in %s: %w", graphRoot, err)
	}
	regConf := cfg.RegistriesConf
	if regConf == "" {
		// No mirrors, HTTPS only, short names on docker.io: an empty config
		// (containers/image refuses a configured path that does not exist).
		regConf = filepath.Join(cfg.Root, "registries.conf")
		if _, err := os.Stat(regConf); os.IsNotExist(err) {
			if err := os.WriteFile(regConf, []byte("# Written by peapod: registries_conf is empty and /etc/containers/registries.conf absent.\nunqualified-search-registries = [\"docker.io\"]\n"), 0o644); err != nil {
				st.Shutdown(true) //nolint:errcheck
				return nil, fmt.Errorf("image: write default registries config: %w", err)
			}
		}
	}
	src := Sources{
		RegistriesConf: regConf, RegistriesConfDir: cfg.RegistriesConfDir, RegistriesD: cfg.RegistriesD,
		SignaturePolicy: cfg.SignaturePolicy,
	}
	sys := systemContextFor(cfg.Root, src)
	if cfg.AuthFile != "" {
		sys.AuthFilePath = cfg.AuthFile
	}
	for _, d := range []string{sys.BigFilesTemporaryDir, sys.BlobInfoCacheDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			st.Shutdown(true) //nolint:errcheck
			return nil, err
		}
	}
	pinned := map[string]bool{}
	for _, p := range cfg.PinnedImages {
		if id := strings.TrimPrefix(p, "sha256:"); len(id) == 64 && hexID(id) {
			pinned["sha256:"+id] = true
			continue
		}
		n, err := Normalize(p)
		if err != nil {
			st.Shutdown(true) //nolint:errcheck
			return nil, fmt.Errorf("image: pinned image: %w", err)
		}
		pinned[n] = true
	}
	// Fail early on a malformed registries.conf, drop-in or policy.
	pol, err := checkSources(sys, src)
	if err != nil {
		st.Shutdown(true) //nolint:errcheck
		return nil, fmt.Errorf("image: %w", err)
	}
	removeStagingLeftovers(graphRoot, log)
	if imageStore != "" {
		removeStagingLeftovers(imageStore, log)
	}
	rw, rwMoved, err := loadRWLayers(graphRoot, log)
	if err != nil {
		st.Shutdown(true) //nolint:errcheck
		return nil, err
	}
	movedAside = append(movedAside, rwMoved...)
	s := &Store{
		store: st, root: imageRoot, containerRoot: graphRoot, cache: map[string]*configInfo{}, rw: rw,
		log: log, progressTimeout: cfg.PullProgressTimeout, pinned: pinned, observer: cfg.Observer,
		flights: &flights{m: map[string]*flight{}}, movedAside: movedAside,
	}
	s.sysCtx.Store(sys)
	s.policy.Store(pol)
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.gcIdle = sync.NewCond(&s.gcMu)
	return s, nil
}

// Close unmounts everything storage mounted (container rootfs included)
// and releases the store.
// Close is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancelBase()
		s.flights.wait()
		rwErr := s.unmountAllRW()
		_, err := s.store.Shutdown(true)
		if errors.Is(err, storagetypes.ErrLayerUsedByContainer) {
			// Shutdown(force) unmounted the container layers but then
			// reports them and skips the driver cleanup (which unmounts the
			// overlay home); the second call finds nothing mounted.
			_, err = s.store.Shutdown(true)
		}
		s.closeErr = errors.Join(rwErr, err)
	})
	return s.closeErr
}

// ---------------------------------------------------------------- lookup

// Status returns the image ref names: name[:tag], name@digest, "sha256:<id>",
// the ID hex or a unique prefix of it. Errors wrap ErrNotFound when absent.
func (s *Store) Status(ctx context.Context, ref string) (*Image, error) {
	simg, err := s.lookup(ref)
	if err != nil {
		return nil, err
	}
	return s.describe(ctx, simg)
}

func (s *Store) lookup(ref string) (*storage.Image, error) {
	notFound := fmt.Errorf("image %q: %w", ref, ErrNotFound)
	id := strings.TrimPrefix(ref, "sha256:")
	if hexID(id) {
		if img, err := s.store.Image(id); err == nil && strings.HasPrefix(img.ID, id) {
			return img, nil
		}
		if id != ref { // "sha256:..." is only an ID
			return nil, notFound
		}
	}
	cands, err := s.candidates(ref)
	if err != nil {
		if hexID(id) {
			return nil, notFound
		}
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	for _, named := range cands {
		if img, err := s.store.Image(named.String()); err == nil {
			return img, nil
		}
		// repo@digest: any image of that repo with that manifest digest.
		if dn, ok := named.(reference.Digested); ok {
			imgs, err := s.store.ImagesByDigest(dn.Digest())
			if err != nil {
				continue
			}
			repo := named.Name()
			for _, img := range imgs {
				for _, n := range img.Names {
					if repoOf(n) == repo {
						return img, nil
					}
				}
			}
		}
	}
	return nil, notFound
}

// List returns all images, ordered by ID.
func (s *Store) List(ctx context.Context) ([]*Image, error) {
	imgs, err := s.store.Images()
	if err != nil {
		return nil, err
	}
	out := make([]*Image, 0, len(imgs))
	for i := range imgs {
		img, err := s.describe(ctx, &imgs[i])
		if err != nil {
			if errors.Is(err, storagetypes.ErrImageUnknown) {
				continue // removed meanwhile
			}
			return nil, err
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *Store) describe(ctx context.Context, simg *storage.Image) (*Image, error) {
	ci, err := s.configOf(ctx, simg)
	if err != nil {
		return nil, err
	}
	img := &Image{
		ID:         "sha256:" + simg.ID,
		Size:       ci.size,
		User:       ci.config.Config.User,
		WorkingDir: ci.config.Config.WorkingDir,
		Entrypoint: ci.config.Config.Entrypoint,
		Cmd:        ci.config.Config.Cmd,
		Env:        ci.config.Config.Env,
		Labels:     ci.config.Config.Labels,
		StopSignal: ci.config.Config.StopSignal,
		ConfigJSON: ci.raw,
	}
	for v := range ci.config.Config.Volumes {
		img.Volumes = append(img.Volumes, v)
	}
	sort.Strings(img.Volumes)
	img.RepoTags, img.RepoDigests = names(simg)
	img.Pinned = s.pinned[img.ID]
	for _, n := range append(append([]string(nil), img.RepoTags...), img.RepoDigests...) {
		img.Pinned = img.Pinned || s.pinned[n]
	}
	return img, nil
}

// names splits storage names into tags and repo digests: each repository
// the image is known under gets "<repo>@<manifest digest>".
func names(simg *storage.Image) (tags, digests []string) {
	seen := map[string]bool{}
	addDigest := func(d string) {
		if !seen[d] {
			seen[d] = true
			digests = append(digests, d)
		}
	}
	var ds []digest.Digest
	if simg.Digest != "" {
		ds = append(ds, simg.Digest)
	}
	ds = append(ds, simg.Digests...)
	for _, n := range simg.Names {
		if strings.Contains(n, "@") {
			addDigest(n)
		} else {
			tags = append(tags, n)
		}
	}
	for _, n := range simg.Names {
		repo := repoOf(n)
		for _, d := range ds {
			addDigest(repo + "@" + d.String())
		}
	}
	return tags, digests
}

func (s *Store) configOf(ctx context.Context, simg *storage.Image) (*configInfo, error) {
	s.mu.Lock()
	ci := s.cache[simg.ID]
	s.mu.Unlock()
	if ci != nil {
		return ci, nil
	}
	ref, err := istorage.Transport.NewStoreReference(s.store, nil, simg.ID)
	if err != nil {
		return nil, err
	}
	src, err := ref.NewImage(ctx, s.systemContext())
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", simg.ID, err)
	}
	defer src.Close()
	raw, err := src.ConfigBlob(ctx)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", simg.ID, err)
	}
	ci = &configInfo{raw: raw}
	if err := json.Unmarshal(raw, &ci.config); err != nil {
		return nil, fmt.Errorf("image %s: parse config: %w", simg.ID, err)
	}
	if size, err := src.Size(); err == nil && size > 0 {
		ci.size = uint64(size)
	}
	s.mu.Lock()
	s.cache[simg.ID] = ci
	s.mu.Unlock()
	return ci, nil
}

// ---------------------------------------------------------------- remove

// Remove removes ref. A tag of an image that has other tags is only
// untagged; an ID, a digest reference or an image's last tag removes the
// image. An absent image is not an error. An image whose layers containers
// still use is not removed (the error names it).
func (s *Store) Remove(ctx context.Context, ref string) error {
	// Removals are serialised: storage's DeleteImage is not safe against a
	// concurrent delete of the same image (critest removes in parallel).
	s.removeMu.Lock()
	defer s.removeMu.Unlock()
	simg, err := s.lookup(ref)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	byTag := ""
	if id := strings.TrimPrefix(ref, "sha256:"); !(hexID(id) && strings.HasPrefix(simg.ID, id)) {
		for _, n := range simg.Names {
			if !strings.Contains(n, "@") {
				if cands, err := s.candidates(ref); err == nil {
					for _, c := range cands {
						if c.String() == n {
							byTag = n
						}
					}
				}
			}
		}
	}
	if byTag != "" {
		others := 0
		for _, n := range simg.Names {
			if n != byTag && !strings.Contains(n, "@") {
				others++
			}
		}
		if others > 0 {
			if err := s.store.RemoveNames(simg.ID, []string{byTag}); err != nil {
				return fmt.Errorf("untag %s from image %s: %w", byTag, simg.ID, err)
			}
			return nil
		}
	}
	// No writable layer may be made on it while it goes (createRW).
	s.rw.use.Lock()
	defer s.rw.use.Unlock()
	if s.rw.imageInUse(simg.ID) {
		return fmt.Errorf("image %q (%s): remove the containers that use it first: %w", ref, simg.ID, ErrInUse)
	}
	if _, err := s.store.DeleteImage(simg.ID, true); err != nil {
		if errors.Is(err, storagetypes.ErrImageUnknown) || errors.Is(err, storagetypes.ErrNotAnImage) {
			return nil // removed meanwhile (by another peapod call or tool)
		}
		if errors.Is(err, storagetypes.ErrImageUsedByContainer) {
			return fmt.Errorf("image %q (%s): remove the containers that use it first: %w: %w", ref, simg.ID, ErrInUse, err)
		}
		return fmt.Errorf("remove image %q (%s): %w", ref, simg.ID, err)
	}
	s.mu.Lock()
	delete(s.cache, simg.ID)
	s.mu.Unlock()
	return nil
}

// ---------------------------------------------------------------- fs info

// FsInfo reports the image filesystem: its mountpoint (the storage root) and
// the bytes and inodes used under it (mounted container rootfs are not
// counted twice: other filesystems are skipped).
func (s *Store) FsInfo() (mountpoint string, usedBytes, inodesUsed uint64, err error) {
	return fsUsage(s.root)
}

// Split reports whether containers' writable layers live apart from the
// images (Config.ContainerRoot).
func (s *Store) Split() bool { return s.containerRoot != s.root }

// ContainerFsInfo is FsInfo for the containers' writable layers: the
// same as FsInfo unless the store is split.
func (s *Store) ContainerFsInfo() (mountpoint string, usedBytes, inodesUsed uint64, err error) {
	return fsUsage(s.containerRoot)
}

// fsUsage is the bytes and inodes used below root on root's filesystem.
func fsUsage(root string) (mountpoint string, usedBytes, inodesUsed uint64, err error) {
	var rootDev uint64
	var st syscall.Stat_t
	if err := syscall.Stat(root, &st); err != nil {
		return "", 0, 0, err
	}
	rootDev = st.Dev
	seen := map[uint64]bool{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return nil
		}
		if st.Dev != rootDev {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		inodesUsed++
		usedBytes += uint64(st.Blocks) * 512
		return nil
	})
	if err != nil {
		return "", 0, 0, err
	}
	return root, usedBytes, inodesUsed, nil
}

// ---------------------------------------------------------------- rootfs

// CreateRootfs creates (or reuses) the writable copy-on-write layer of
// container containerID on top of image imageID (anything Status accepts)
// and mounts it. It returns the mount path. Calling it again for the same
// container returns the same mount.
func (s *Store) CreateRootfs(ctx context.Context, containerID, imageID string) (mountPath string, err error) {
	return s.CreateRootfsMapped(ctx, containerID, imageID, nil, nil)
}

// CreateRootfsMapped is CreateRootfs for a container in a user namespace
// with these mappings: the image's layers are mounted idmapped (or, where
// the kernel cannot, copied with shifted owners) and the container's layer
// is owned by the mapped root. No mappings is CreateRootfs.
func (s *Store) CreateRootfsMapped(ctx context.Context, containerID, imageID string, uids, gids []specs.LinuxIDMapping) (mountPath string, err error) {
	if containerID == "" {
		return "", errors.New("image: empty container ID")
	}
	if _, ok := s.rw.get(containerID); ok {
		d, err := s.driver()
		if err != nil {
			return "", err
		}
		return s.mountRW(d, containerID)
	}
	if c, err := s.store.Container(containerID); err == nil {
		// Mounting again returns the same path; the extra mount count is
		// dropped by RemoveRootfs' forced unmount.
		return s.store.Mount(c.ID, "")
	}
	simg, err := s.lookup(imageID)
	if err != nil {
		return "", err
	}
	// Most containers' layers are the driver's, recorded by peapod
	// (rwlayer.go); a mapped one (user namespace) needs c/storage's ID
	// mapping and is a c/storage container.
	if len(uids) == 0 && len(gids) == 0 && rwLayerID(containerID) {
		return s.createRW(containerID, simg)
	}
	// Volatile: c/storage records the container and its layer without an
	// fsync (it fsyncs containers.json and layers.json, each rewritten
	// whole, for every other container): two syncs fewer on
	// CreateContainer and as many on removal. A daemon crash loses nothing
	// (the page cache survives it); only a power loss can lose the record
	// of a container created just before it, and then the node restarts
	// every pod anyway. The daemon's own metadata stays synced
	// (sandbox/store/metadata.go), and RemoveRootfs accepts an unknown container.
	// PEAPOD_DURABLE_ROOTFS=1 syncs them as other c/storage users do (make
	// bench runs so, to do the anchors' work; docs/performance.md).
	opts := &storage.ContainerOptions{Volatile: !durableRootfs}
	if len(uids) > 0 || len(gids) > 0 {
		opts.IDMappingOptions = storagetypes.IDMappingOptions{
			UIDMap: storageIDMap(uids), GIDMap: storageIDMap(gids),
		}
	}
	c, err := s.store.CreateContainer(containerID, nil, simg.ID, "", "", opts)
	if err != nil {
		return "", fmt.Errorf("create rootfs of container %s (image %s): %w", containerID, simg.ID, err)
	}
	mp, err := s.store.Mount(c.ID, "")
	if err != nil {
		_ = s.store.DeleteContainer(c.ID)
		return "", fmt.Errorf("mount rootfs of container %s: %w", containerID, err)
	}
	return mp, nil
}

// durableRootfs turns volatile container records off (PEAPOD_DURABLE_ROOTFS=1):
// c/storage's, and the fsync of peapod's records of writable layers
// (rwLayers.save) and the overlay's "volatile" mount option with them.
var durableRootfs = os.Getenv("PEAPOD_DURABLE_ROOTFS") == "1"

func storageIDMap(list []specs.LinuxIDMapping) []idtools.IDMap {
	out := make([]idtools.IDMap, 0, len(list))
	for _, m := range list {
		out = append(out, idtools.IDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)})
	}
	return out
}

// RemoveRootfs unmounts and deletes the container's layer. An absent
// container is not an error.
func (s *Store) RemoveRootfs(ctx context.Context, containerID string) error {
	if _, ok := s.rw.get(containerID); ok {
		return s.removeRW(containerID)
	}
	c, err := s.store.Container(containerID)
	if err != nil {
		if errors.Is(err, storagetypes.ErrContainerUnknown) {
			return s.removeUnrecordedRW(containerID)
		}
		return err
	}
	if _, err := s.store.Unmount(c.ID, true); err != nil && !errors.Is(err, storagetypes.ErrLayerNotMounted) {
		return fmt.Errorf("unmount rootfs of container %s: %w", containerID, err)
	}
	if err := s.store.DeleteContainer(c.ID); err != nil && !errors.Is(err, storagetypes.ErrContainerUnknown) {
		return fmt.Errorf("delete rootfs of container %s: %w", containerID, err)
	}
	return nil
}

// UnmountRootfs unmounts the container's layer and keeps it: an exited
// container's files stay for RemoveContainer, but its mount goes, as
// containerd and CRI-O unmount an exited container's. A node keeps the
// kubelet's exited containers for a long time, and every mount is a line
// of the mount table that each runc, runner and container init reads.
// Not mounted, or no longer there, is not an error.
func (s *Store) UnmountRootfs(ctx context.Context, containerID string) error {
	if _, ok := s.rw.get(containerID); ok {
		d, err := s.driver()
		if err != nil {
			return err
		}
		return s.unmountRW(d, containerID)
	}
	_, err := s.store.Unmount(containerID, true)
	if err != nil && !errors.Is(err, storagetypes.ErrLayerNotMounted) && !errors.Is(err, storagetypes.ErrContainerUnknown) &&
		!errors.Is(err, storagetypes.ErrLayerUnknown) && !errors.Is(err, storagetypes.ErrNotAContainer) {
		return fmt.Errorf("unmount rootfs of container %s: %w", containerID, err)
	}
	return nil
}

// removeStagingLeftovers removes the layers a fast pull was unpacking when
// the daemon died: no pull runs while the store opens, and storage itself
// prunes its staging directory only at a clean shutdown.
func removeStagingLeftovers(graphRoot string, log *slog.Logger) {
	dir := filepath.Join(graphRoot, "overlay", "staging")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			log.Warn("removing a layer left half-unpacked", "dir", filepath.Join(dir, e.Name()), "error", err)
		}
	}
}
