package checkpoint

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"github.com/checkpoint-restore/go-criu/v8/magic"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// mountsImageMax bounds a mountpoints-<id>.img read into memory: a
// container's few dozen mounts take a few KiB.
const mountsImageMax = 4 << 20

// checkMounts refuses CRIU mount images that would restore a mount table
// weaker than the spec's. CRIU remakes the container's mount namespace
// from the images, not from the spec: an archive written by hand could
// otherwise leave /proc/sys or /sys writable (as host root outside a user
// namespace: core_pattern, uevent_helper — the host), unmask /proc/kcore,
// mount a whole cgroup v1 hierarchy writable (release_agent), debugfs, a
// devtmpfs, or make a volume the caller gave read-only writable. Each
// mount of a kernel filesystem must be one the spec makes (at its
// destination or, for cgroup hierarchies, below it), a mount where the
// spec's is read-only must be read-only, and the spec's read-only and
// masked paths that exist here must be mounts (read-only ones).
func checkMounts(imagesDir string, entries []os.DirEntry, spec *specs.Spec, exists func(string) bool) error {
	var mounts []*mnt.MntEntry
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "mountpoints-") || !strings.HasSuffix(e.Name(), ".img") {
			continue
		}
		ms, err := readMounts(filepath.Join(imagesDir, e.Name()))
		if err != nil {
			return fmt.Errorf("%s: %w", e.Name(), err)
		}
		mounts = append(mounts, ms...)
	}
	if len(mounts) == 0 {
		return fmt.Errorf("%w: no mount images (mountpoints-*.img)", ErrInvalidArchive)
	}
	if err := checkFilePaths(imagesDir, entries); err != nil {
		return err
	}
	specAt := map[string]specs.Mount{}
	for _, m := range spec.Mounts {
		specAt[path.Clean(m.Destination)] = m
	}
	readOnly := func(m *mnt.MntEntry) bool {
		return m.GetFlags()&unix.MS_RDONLY != 0 || m.GetSbFlags()&unix.MS_RDONLY != 0
	}
	at := map[string][]*mnt.MntEntry{}
	for _, m := range mounts {
		dst := mountpoint(m)
		at[dst] = append(at[dst], m)
		if dst == "/" {
			if spec.Root != nil && spec.Root.Readonly && !readOnly(m) {
				return fmt.Errorf("%w: the root filesystem is restored writable, the container's is read-only", ErrPrivileges)
			}
			continue
		}
		sm, ok := specAt[dst]
		if above, found := specMountAbove(specAt, dst); !ok && found && (above.Type == "cgroup" || above.Type == "cgroup2") {
			// libcontainer dumps a cgroup v1 hierarchy's mount as an
			// external bind of the container's own cgroup: writable, the
			// container would set its own limits.
			sm, ok = above, true
		}
		if ok && slices.Contains(sm.Options, "ro") && !readOnly(m) {
			return fmt.Errorf("%w: %s is restored writable, the container mounts it read-only", ErrPrivileges, dst)
		}
		if m.GetExtMount() || m.GetExtKey() != "" {
			continue // the caller's bind, mapped by destination from the spec
		}
		switch mnt.Fstype(m.GetFstype()) {
		case mnt.Fstype_TMPFS, mnt.Fstype_DEVPTS, mnt.Fstype_MQUEUE:
			// nothing of the host's in them
		case mnt.Fstype_DEVTMPFS:
			// runc binds single device nodes from the host's /dev; the
			// whole devtmpfs is every device of the host.
			if r := path.Clean("/" + m.GetRoot()); r == "/" {
				return fmt.Errorf("%w: %s: the host's whole devtmpfs", ErrPrivileges, dst)
			}
		case mnt.Fstype_PROC, mnt.Fstype_SYSFS, mnt.Fstype_CGROUP, mnt.Fstype_CGROUP2:
			sm, ok := specMountAbove(specAt, dst)
			if !ok {
				return fmt.Errorf("%w: %s: a %s mount the container's spec does not make", ErrPrivileges, dst, fstypeName(m))
			}
			if slices.Contains(sm.Options, "ro") && !readOnly(m) {
				return fmt.Errorf("%w: %s: a writable %s mount, the container's %s is read-only", ErrPrivileges, dst, fstypeName(m), sm.Destination)
			}
		default:
			return fmt.Errorf("%w: %s: a %s mount, which a restore does not make", ErrPrivileges, dst, fstypeName(m))
		}
	}
	if spec.Linux != nil {
		for _, p := range spec.Linux.ReadonlyPaths {
			if !exists(p) {
				continue
			}
			if !slices.ContainsFunc(at[path.Clean(p)], readOnly) {
				return fmt.Errorf("%w: %s is not restored read-only, as the container's spec has it", ErrPrivileges, p)
			}
		}
		for _, p := range spec.Linux.MaskedPaths {
			if exists(p) && len(at[path.Clean(p)]) == 0 {
				return fmt.Errorf("%w: %s is not restored masked, as the container's spec has it", ErrPrivileges, p)
			}
		}
	}
	return nil
}

// mountpoint is an entry's mount point in the container, clean and
// absolute (CRIU writes them from its "./"-prefixed dump paths).
func mountpoint(m *mnt.MntEntry) string {
	return path.Clean("/" + strings.TrimPrefix(m.GetMountpoint(), "."))
}

// specMountAbove is the spec's mount at dst or, failing that, the nearest
// one above it but the root (cgroup v1 hierarchies below /sys/fs/cgroup).
func specMountAbove(specAt map[string]specs.Mount, dst string) (specs.Mount, bool) {
	for d := dst; d != "/"; d = path.Dir(d) {
		if m, ok := specAt[d]; ok {
			return m, true
		}
	}
	return specs.Mount{}, false
}

func fstypeName(m *mnt.MntEntry) string {
	if n := m.GetFsname(); n != "" {
		return n
	}
	return strings.ToLower(mnt.Fstype(m.GetFstype()).String())
}

// readMounts decodes a CRIU mountpoints image: the common and MNTS
// magics, then size-prefixed MntEntry records.
func readMounts(p string) ([]*mnt.MntEntry, error) {
	recs, err := readImage(p, "MNTS", mountsImageMax)
	if err != nil {
		return nil, err
	}
	var out []*mnt.MntEntry
	for _, rec := range recs {
		e := new(mnt.MntEntry)
		if err := proto.Unmarshal(rec, e); err != nil {
			return nil, fmt.Errorf("%w: mountpoints image: %v", ErrInvalidArchive, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// checkFilePaths refuses regular-file entries of files.img whose path has
// a ".." component: CRIU reopens each by that path below the mount it
// names, as root, and a canonical path (what a dump reads from
// /proc/PID/fd) never climbs; one written by hand could aim above the
// container's root if it were resolved from outside the restored tasks.
func checkFilePaths(imagesDir string, entries []os.DirEntry) error {
	for _, e := range entries {
		var kind string
		switch e.Name() {
		case "files.img":
			kind = "FILES"
		case "reg-files.img": // CRIU's older layout
			kind = "REG_FILES"
		default:
			continue
		}
		recs, err := readImage(filepath.Join(imagesDir, e.Name()), kind, filesImageMax)
		if err != nil {
			return fmt.Errorf("%s: %w", e.Name(), err)
		}
		for _, rec := range recs {
			reg := new(regfile.RegFileEntry)
			if kind == "FILES" {
				f := new(fdinfo.FileEntry)
				err = proto.Unmarshal(rec, f)
				reg = f.GetReg()
			} else {
				err = proto.Unmarshal(rec, reg)
			}
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrInvalidArchive, e.Name(), err)
			}
			if name := reg.GetName(); slices.Contains(strings.Split(name, "/"), "..") {
				return fmt.Errorf("%w: %s: file %q climbs with \"..\"", ErrPrivileges, e.Name(), name)
			}
		}
	}
	return nil
}

// filesImageMax bounds files.img read into memory (a few hundred bytes a
// descriptor).
const filesImageMax = 64 << 20

// readImage returns the size-prefixed records of a CRIU image whose magic
// is want, at most max bytes.
func readImage(p, want string, max int) ([][]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrInvalidArchive, max)
	}
	m := magic.LoadMagic().ByName
	if len(b) < 8 || uint64(binary.LittleEndian.Uint32(b)) != m["IMG_COMMON"] || uint64(binary.LittleEndian.Uint32(b[4:])) != m[want] {
		return nil, fmt.Errorf("%w: not a CRIU %s image", ErrInvalidArchive, want)
	}
	var out [][]byte
	for b = b[8:]; len(b) > 0; {
		if len(b) < 4 {
			return nil, fmt.Errorf("%w: truncated %s image", ErrInvalidArchive, want)
		}
		n := binary.LittleEndian.Uint32(b)
		if uint64(n) > uint64(len(b)-4) {
			return nil, fmt.Errorf("%w: truncated %s image", ErrInvalidArchive, want)
		}
		out = append(out, b[4:4+n])
		b = b[4+n:]
	}
	return out, nil
}
