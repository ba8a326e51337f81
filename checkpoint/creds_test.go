package checkpoint

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
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
		Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}},
	}
}

var testCeilings = Ceilings{MinOOMScoreAdj: -999, Hard: func(int) uint64 { return ^uint64(0) }}

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
			os.WriteFile(filepath.Join(dir, "core-7.img"), content, 0o600)
			if err := CheckPrivileges(dir, restoreSpec(), testCeilings); !errors.Is(err, ErrInvalidArchive) {
				t.Fatalf("CheckPrivileges = %v, want ErrInvalidArchive", err)
			}
		})
	}
	if err := CheckPrivileges(t.TempDir(), restoreSpec(), testCeilings); !errors.Is(err, ErrInvalidArchive) {
		t.Fatalf("no core image: %v, want ErrInvalidArchive", err)
	}
}
