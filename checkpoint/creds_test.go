package checkpoint

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v8/magic"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// coreImage is a CRIU core-<tid>.img as CRIU writes it: the common and
// CORE magics, one size-prefixed CoreEntry.
func coreImage(t *testing.T, core *criu_core.CoreEntry) []byte {
	t.Helper()
	body, err := proto.Marshal(core)
	if err != nil {
		t.Fatal(err)
	}
	m := magic.LoadMagic().ByName
	b := binary.LittleEndian.AppendUint32(nil, uint32(m["IMG_COMMON"]))
	b = binary.LittleEndian.AppendUint32(b, uint32(m["CORE"]))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

// dumpedCore is the core of a process dumped from a container with
// defaultCaps, no_new_privs and a seccomp filter: what a restore must take.
func dumpedCore() *criu_core.CoreEntry {
	// CAP_CHOWN(0), CAP_KILL(5), CAP_NET_BIND_SERVICE(10)
	caps := []uint32{1<<0 | 1<<5 | 1<<10, 0}
	return &criu_core.CoreEntry{
		Mtype: criu_core.CoreEntry_X86_64.Enum(),
		Tc: &criu_core.TaskCoreEntry{
			TaskState: proto.Uint32(1), ExitCode: proto.Uint32(0), Personality: proto.Uint32(0), Flags: proto.Uint32(0),
			BlkSigset: proto.Uint64(0), Comm: proto.String("sh"), OomScoreAdj: proto.Int32(0),
			Rlimits: &criu_core.TaskRlimitsEntry{Rlimits: []*rlimit.RlimitEntry{
				{Cur: proto.Uint64(^uint64(0)), Max: proto.Uint64(^uint64(0))}, // RLIMIT_CPU
			}},
		},
		ThreadCore: &criu_core.ThreadCoreEntry{
			FutexRla: proto.Uint64(0), FutexRlaLen: proto.Uint32(0),
			SeccompMode: criu_core.SeccompMode_filter.Enum(),
			Creds: &creds.CredsEntry{
				Uid: proto.Uint32(0), Gid: proto.Uint32(0), Euid: proto.Uint32(0), Egid: proto.Uint32(0),
				Suid: proto.Uint32(0), Sgid: proto.Uint32(0), Fsuid: proto.Uint32(0), Fsgid: proto.Uint32(0),
				Secbits: proto.Uint32(0), NoNewPrivs: proto.Uint32(1),
				CapBnd: caps, CapPrm: caps, CapEff: caps, CapInh: []uint32{0, 0}, CapAmb: []uint32{0, 0},
			},
		},
	}
}

func restoreSpec() *specs.Spec {
	caps := []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	return &specs.Spec{
		Process: &specs.Process{
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Permitted: caps, Effective: caps},
		},
		Root: &specs.Root{Path: "rootfs"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			{Destination: "/data", Type: "bind", Source: "/var/lib/kubelet/pods/x/volumes/secret", Options: []string{"rbind", "ro"}},
		},
		Linux: &specs.Linux{
			Seccomp:       &specs.LinuxSeccomp{DefaultAction: specs.ActErrno},
			ReadonlyPaths: []string{"/proc/sys", "/proc/sysrq-trigger"},
			MaskedPaths:   []string{"/proc/kcore", "/sys/firmware", "/proc/not-on-this-kernel"},
		},
	}
}

var testCeilings = Ceilings{MinOOMScoreAdj: -999, Hard: func(int) uint64 { return ^uint64(0) },
	Exists: func(p string) bool { return p != "/proc/not-on-this-kernel" }}

// mount is a CRIU mount entry.
func mount(id uint32, fstype mnt.Fstype, dst, root string, flags uint32) *mnt.MntEntry {
	return &mnt.MntEntry{
		Fstype: proto.Uint32(uint32(fstype)), MntId: proto.Uint32(id), RootDev: proto.Uint32(1), ParentMntId: proto.Uint32(1),
		Flags: proto.Uint32(flags), Root: proto.String(root), Mountpoint: proto.String(dst), Source: proto.String("none"), Options: proto.String(""),
	}
}

// dumpedMounts is the mount table runc gives restoreSpec's container.
func dumpedMounts() []*mnt.MntEntry {
	return []*mnt.MntEntry{
		mount(1, mnt.Fstype_OVERLAYFS, "/", "/", 0),
		mount(2, mnt.Fstype_PROC, "/proc", "/", unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_NODEV),
		mount(3, mnt.Fstype_TMPFS, "/dev", "/", unix.MS_NOSUID),
		mount(4, mnt.Fstype_SYSFS, "/sys", "/", unix.MS_RDONLY|unix.MS_NOSUID),
		mount(5, mnt.Fstype_TMPFS, "/sys/fs/cgroup", "/", unix.MS_RDONLY),
		mount(6, mnt.Fstype_CGROUP, "/sys/fs/cgroup/memory", "/kubepods/pod1/c1", unix.MS_RDONLY),
		{Fstype: proto.Uint32(uint32(mnt.Fstype_AUTO)), MntId: proto.Uint32(7), RootDev: proto.Uint32(9), ParentMntId: proto.Uint32(1),
			Flags: proto.Uint32(unix.MS_RDONLY), Root: proto.String("/"), Mountpoint: proto.String("/data"), Source: proto.String("/dev/sda1"),
			Options: proto.String(""), ExtKey: proto.String("/data")},
		mount(8, mnt.Fstype_PROC, "/proc/sys", "/sys", unix.MS_RDONLY),
		mount(9, mnt.Fstype_PROC, "/proc/sysrq-trigger", "/sysrq-trigger", unix.MS_RDONLY),
		mount(10, mnt.Fstype_TMPFS, "/proc/kcore", "/null", 0),
		mount(11, mnt.Fstype_TMPFS, "/sys/firmware", "/", unix.MS_RDONLY),
	}
}

func writeMounts(t *testing.T, dir string, ms []*mnt.MntEntry) {
	t.Helper()
	m := magic.LoadMagic().ByName
	b := binary.LittleEndian.AppendUint32(nil, uint32(m["IMG_COMMON"]))
	b = binary.LittleEndian.AppendUint32(b, uint32(m["MNTS"]))
	for _, e := range ms {
		body, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
		b = append(b, body...)
	}
	if err := os.WriteFile(filepath.Join(dir, "mountpoints-13.img"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCheckPrivilegesRefusesForgedMounts: CRIU remakes the container's
// mount namespace from the archive's mountpoints image; a table written
// by hand must not be weaker than the spec's.
func TestCheckPrivilegesRefusesForgedMounts(t *testing.T) {
	without := func(dst string) func([]*mnt.MntEntry) []*mnt.MntEntry {
		return func(ms []*mnt.MntEntry) []*mnt.MntEntry {
			var out []*mnt.MntEntry
			for _, m := range ms {
				if m.GetMountpoint() != dst {
					out = append(out, m)
				}
			}
			return out
		}
	}
	writable := func(dst string) func([]*mnt.MntEntry) []*mnt.MntEntry {
		return func(ms []*mnt.MntEntry) []*mnt.MntEntry {
			for _, m := range ms {
				if m.GetMountpoint() == dst {
					m.Flags = proto.Uint32(m.GetFlags() &^ unix.MS_RDONLY)
				}
			}
			return ms
		}
	}
	add := func(e *mnt.MntEntry) func([]*mnt.MntEntry) []*mnt.MntEntry {
		return func(ms []*mnt.MntEntry) []*mnt.MntEntry { return append(ms, e) }
	}
	cases := []struct {
		name   string
		forge  func([]*mnt.MntEntry) []*mnt.MntEntry
		spec   func(*specs.Spec)
		files  []string // regular files in files.img
		wantOK bool
	}{
		{name: "as dumped", forge: func(ms []*mnt.MntEntry) []*mnt.MntEntry { return ms }, wantOK: true},
		{name: "dot-prefixed mount points", forge: func(ms []*mnt.MntEntry) []*mnt.MntEntry {
			for _, m := range ms {
				m.Mountpoint = proto.String("." + m.GetMountpoint())
			}
			return ms
		}, wantOK: true},
		{name: "/proc/sys writable", forge: writable("/proc/sys")},
		{name: "/proc/sys not remounted", forge: without("/proc/sys")},
		{name: "/proc/kcore unmasked", forge: without("/proc/kcore")},
		{name: "/sys writable", forge: writable("/sys")},
		{name: "cgroup hierarchy writable", forge: writable("/sys/fs/cgroup/memory")},
		{name: "read-only volume writable", forge: writable("/data")},
		{name: "cgroup hierarchy as a writable external bind", forge: add(&mnt.MntEntry{Fstype: proto.Uint32(uint32(mnt.Fstype_CGROUP)), MntId: proto.Uint32(20),
			RootDev: proto.Uint32(3), ParentMntId: proto.Uint32(5), Flags: proto.Uint32(0), Root: proto.String("/"), Mountpoint: proto.String("/sys/fs/cgroup/pids"),
			Source: proto.String("cgroup"), Options: proto.String(""), ExtKey: proto.String("/sys/fs/cgroup/pids")})},
		{name: "root writable under readOnlyRootFilesystem", forge: writable("/"), spec: func(s *specs.Spec) { s.Root.Readonly = true }},
		{name: "a second proc at /host-proc", forge: add(mount(20, mnt.Fstype_PROC, "/host-proc", "/", 0))},
		{name: "debugfs", forge: add(mount(20, mnt.Fstype_DEBUGFS, "/sys/kernel/debug", "/", 0))},
		{name: "the host's devtmpfs", forge: add(mount(20, mnt.Fstype_DEVTMPFS, "/hostdev", "/", 0))},
		{name: "a block device's filesystem", forge: add(mount(20, mnt.Fstype_AUTO, "/hostroot", "/", 0))},
		{name: "binfmt_misc", forge: add(mount(20, mnt.Fstype_BINFMT_MISC, "/proc/sys/fs/binfmt_misc", "/", 0))},
		{name: "no mount image", forge: func([]*mnt.MntEntry) []*mnt.MntEntry { return nil }},
		{name: "a file reopened above the root", forge: func(ms []*mnt.MntEntry) []*mnt.MntEntry { return ms }, files: []string{"/tmp/count", "/../../../etc/shadow"}},
		{name: "files with dots in names", forge: func(ms []*mnt.MntEntry) []*mnt.MntEntry { return ms }, files: []string{"/tmp/a..b", "/..hidden/x", "/dev/null"}, wantOK: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "core-1.img"), coreImage(t, dumpedCore()), 0o600); err != nil {
				t.Fatal(err)
			}
			if ms := tc.forge(dumpedMounts()); ms != nil {
				writeMounts(t, dir, ms)
			}
			if tc.files != nil {
				writeFiles(t, dir, tc.files)
			}
			spec := restoreSpec()
			if tc.spec != nil {
				tc.spec(spec)
			}
			err := CheckPrivileges(dir, spec, testCeilings)
			if tc.wantOK {
				if err != nil {
					t.Fatalf("CheckPrivileges = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrPrivileges) && !errors.Is(err, ErrInvalidArchive) {
				t.Fatalf("CheckPrivileges = %v, want a refusal", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestCheckPrivilegesRefusesForgedCredentials: CRIU restores a thread's
// credentials, seccomp mode, scheduling, oom_score_adj and rlimits from
// the archive's core images, whatever the new container's spec says; an
// archive made by hand must not bring back more than the spec allows.
func TestCheckPrivilegesRefusesForgedCredentials(t *testing.T) {
	cases := []struct {
		name   string
		forge  func(*criu_core.CoreEntry)
		extra  string // another file in the images directory
		wantOK bool
	}{
		{name: "as dumped", forge: func(*criu_core.CoreEntry) {}, wantOK: true},
		{name: "every capability", forge: func(c *criu_core.CoreEntry) {
			all := []uint32{^uint32(0), 0x1ff}
			cr := c.ThreadCore.Creds
			cr.CapBnd, cr.CapPrm, cr.CapEff = all, all, all
		}},
		{name: "CAP_SYS_ADMIN effective only", forge: func(c *criu_core.CoreEntry) {
			c.ThreadCore.Creds.CapEff = []uint32{1 << unix.CAP_SYS_ADMIN, 0}
		}},
		{name: "ambient CAP_SYS_PTRACE", forge: func(c *criu_core.CoreEntry) {
			c.ThreadCore.Creds.CapAmb = []uint32{1 << unix.CAP_SYS_PTRACE, 0}
		}},
		{name: "CAP_BPF in the high word", forge: func(c *criu_core.CoreEntry) {
			c.ThreadCore.Creds.CapPrm = []uint32{0, 1 << (unix.CAP_BPF - 32)}
		}},
		{name: "seccomp off", forge: func(c *criu_core.CoreEntry) {
			c.ThreadCore.SeccompMode = criu_core.SeccompMode_disabled.Enum()
		}},
		{name: "no_new_privs off", forge: func(c *criu_core.CoreEntry) { c.ThreadCore.Creds.NoNewPrivs = proto.Uint32(0) }},
		{name: "no credentials (CRIU would read creds-N.img)", forge: func(c *criu_core.CoreEntry) { c.ThreadCore.Creds = nil }},
		{name: "creds image beside", forge: func(*criu_core.CoreEntry) {}, extra: "creds-1.img"},
		{name: "SCHED_FIFO", forge: func(c *criu_core.CoreEntry) { c.ThreadCore.SchedPolicy = proto.Uint32(unix.SCHED_FIFO) }},
		{name: "nice -20", forge: func(c *criu_core.CoreEntry) { c.ThreadCore.SchedNice = proto.Int32(-20) }},
		{name: "oom_score_adj -1000", forge: func(c *criu_core.CoreEntry) { c.Tc.OomScoreAdj = proto.Int32(-1000) }},
		{name: "RLIMIT_NPROC above the hard limit", forge: func(c *criu_core.CoreEntry) {
			rl := make([]*rlimit.RlimitEntry, unix.RLIMIT_NPROC+1)
			for i := range rl {
				rl[i] = &rlimit.RlimitEntry{Cur: proto.Uint64(10), Max: proto.Uint64(10)}
			}
			rl[unix.RLIMIT_NPROC].Max = proto.Uint64(1 << 40)
			c.Tc.Rlimits.Rlimits = rl
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			core := dumpedCore()
			tc.forge(core)
			if err := os.WriteFile(filepath.Join(dir, "core-1.img"), coreImage(t, core), 0o600); err != nil {
				t.Fatal(err)
			}
			writeMounts(t, dir, dumpedMounts())
			if tc.extra != "" {
				os.WriteFile(filepath.Join(dir, tc.extra), nil, 0o600)
			}
			lim := testCeilings
			if tc.name == "RLIMIT_NPROC above the hard limit" {
				lim.Hard = func(int) uint64 { return 4096 }
			}
			err := CheckPrivileges(dir, restoreSpec(), lim)
			if tc.wantOK {
				if err != nil {
					t.Fatalf("CheckPrivileges = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrPrivileges) {
				t.Fatalf("CheckPrivileges = %v, want ErrPrivileges", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestCheckPrivilegesMalformedCores(t *testing.T) {
	for name, content := range map[string][]byte{
		"empty":     nil,
		"not CRIU":  []byte("hello world, not an image"),
		"truncated": coreImage(t, dumpedCore())[:20],
		"huge":      make([]byte, coreImageMax+1),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeMounts(t, dir, dumpedMounts())
			os.WriteFile(filepath.Join(dir, "core-7.img"), content, 0o600)
			if err := CheckPrivileges(dir, restoreSpec(), testCeilings); !errors.Is(err, ErrInvalidArchive) {
				t.Fatalf("CheckPrivileges = %v, want ErrInvalidArchive", err)
			}
		})
	}
	noCore := t.TempDir()
	writeMounts(t, noCore, dumpedMounts())
	if err := CheckPrivileges(noCore, restoreSpec(), testCeilings); !errors.Is(err, ErrInvalidArchive) {
		t.Fatalf("no core image: %v, want ErrInvalidArchive", err)
	}
}

// writeFiles writes files.img with a regular-file entry for each name.
func writeFiles(t *testing.T, dir string, names []string) {
	t.Helper()
	m := magic.LoadMagic().ByName
	b := binary.LittleEndian.AppendUint32(nil, uint32(m["IMG_COMMON"]))
	b = binary.LittleEndian.AppendUint32(b, uint32(m["FILES"]))
	for i, n := range names {
		e := &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(uint32(i + 1)), Reg: &regfile.RegFileEntry{
			Id: proto.Uint32(uint32(i + 1)), Flags: proto.Uint32(0), Pos: proto.Uint64(0), Name: proto.String(n), MntId: proto.Int32(1),
			Fown: &fown.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0)}}}
		body, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
		b = append(b, body...)
	}
	if err := os.WriteFile(filepath.Join(dir, "files.img"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}
