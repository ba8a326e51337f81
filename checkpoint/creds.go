package checkpoint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/magic"
	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// ErrPrivileges: the archive's CRIU images would restore a process with
// more privilege than the new container's spec grants.
var ErrPrivileges = errors.New("checkpoint restores more privilege than the container is given")

// Ceilings is what the restoring process itself may not exceed.
type Ceilings struct {
	// Hard is the hard limit of an rlimit resource of the process that
	// restores (the keeper's, the daemon's): nothing may be raised above.
	Hard func(resource int) uint64
	// MinOOMScoreAdj is the restoring process's own oom_score_adj: peapod
	// never gives a container less (it lacks CAP_SYS_RESOURCE's say on it).
	MinOOMScoreAdj int
	// Exists tells whether a path of the spec's masked and read-only
	// lists exists on this node (the restored /proc and /sys show this
	// kernel's files): each that does must be covered as the spec says.
	Exists func(path string) bool
}

// coreImageMax bounds a core-<tid>.img read into memory: one thread's
// registers, signal state and credentials take a few KiB.
const coreImageMax = 1 << 20

// CheckPrivileges refuses CRIU images (the directory ExtractImages wrote)
// whose processes CRIU would restore with more privilege than spec, the
// new container's final spec, gives. CRIU (root) restores each thread's
// credentials, seccomp mode, scheduling and rlimits as the images say, not
// as the spec does: an archive written by hand could otherwise bring back
// a process holding every capability, without its seccomp filter, at -1000
// oom_score_adj or real-time priority, into a container the caller
// configured unprivileged. The ceiling is what the container could reach
// by itself: its capability bounding set, its no_new_privs and seccomp,
// the node's floor of oom_score_adj and its hard rlimits or the spec's
// (Limits). What a seccomp filter allows is not compared (only that there
// is one), nor LSM labels (CRIU's business).
func CheckPrivileges(imagesDir string, spec *specs.Spec, lim Ceilings) error {
	if spec == nil || spec.Process == nil {
		return fmt.Errorf("%w: the container's spec has no process", ErrPrivileges)
	}
	entries, err := os.ReadDir(imagesDir)
	if err != nil {
		return fmt.Errorf("read CRIU images: %w", err)
	}
	cores := 0
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "creds-") {
			// CRIU's older layout keeps credentials beside the core, where
			// a core without them would send it.
			return fmt.Errorf("%w: %s: credentials outside the core images are not restored", ErrPrivileges, name)
		}
		if !strings.HasPrefix(name, "core-") || !strings.HasSuffix(name, ".img") {
			continue
		}
		cores++
		if err := checkCore(filepath.Join(imagesDir, name), spec, lim); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if cores == 0 {
		return fmt.Errorf("%w: no core images", ErrInvalidArchive)
	}
	return checkMounts(imagesDir, entries, spec, lim.Exists)
}

func checkCore(p string, spec *specs.Spec, lim Ceilings) error {
	core, err := readCore(p)
	if err != nil {
		return err
	}
	tc := core.GetThreadCore()
	cr := tc.GetCreds()
	if cr == nil {
		return fmt.Errorf("%w: the thread's credentials are missing", ErrPrivileges)
	}
	bounding := capSet(spec.Process.Capabilities)
	for _, set := range []struct {
		name  string
		words []uint32
	}{{"bounding", cr.GetCapBnd()}, {"permitted", cr.GetCapPrm()}, {"effective", cr.GetCapEff()}, {"inheritable", cr.GetCapInh()}, {"ambient", cr.GetCapAmb()}} {
		for c := 0; c < 32*len(set.words); c++ {
			if set.words[c/32]&(1<<(c%32)) != 0 && !bounding[c] {
				return fmt.Errorf("%w: its %s capabilities hold %s, outside the container's bounding set", ErrPrivileges, set.name, capName(c))
			}
		}
	}
	if spec.Process.NoNewPrivileges && cr.GetNoNewPrivs() == 0 {
		return fmt.Errorf("%w: no_new_privs is off, the container sets it", ErrPrivileges)
	}
	if spec.Linux != nil && spec.Linux.Seccomp != nil && tc.GetSeccompMode() != criu_core.SeccompMode_filter && tc.GetSeccompMode() != criu_core.SeccompMode_strict {
		return fmt.Errorf("%w: the thread has no seccomp filter, the container has one", ErrPrivileges)
	}
	if !bounding[unix.CAP_SYS_NICE] {
		if pol := tc.GetSchedPolicy(); pol != unix.SCHED_NORMAL && pol != unix.SCHED_BATCH && pol != unix.SCHED_IDLE {
			return fmt.Errorf("%w: scheduling policy %d (real-time) without CAP_SYS_NICE", ErrPrivileges, pol)
		}
		if tc.GetSchedNice() < 0 {
			return fmt.Errorf("%w: nice %d without CAP_SYS_NICE", ErrPrivileges, tc.GetSchedNice())
		}
	}
	task := core.GetTc()
	if task == nil {
		return nil // a thread other than a task's leader
	}
	if task.OomScoreAdj != nil && int(task.GetOomScoreAdj()) < lim.MinOOMScoreAdj {
		return fmt.Errorf("%w: oom_score_adj %d, below the node's floor %d", ErrPrivileges, task.GetOomScoreAdj(), lim.MinOOMScoreAdj)
	}
	for res, rl := range task.GetRlimits().GetRlimits() {
		ceiling := lim.Hard(res)
		for _, r := range spec.Process.Rlimits {
			if rlimitNumber[r.Type] == res && r.Hard > ceiling {
				ceiling = r.Hard
			}
		}
		if rl.GetCur() > ceiling || rl.GetMax() > ceiling {
			return fmt.Errorf("%w: rlimit %d is %d/%d, above %d", ErrPrivileges, res, rl.GetCur(), rl.GetMax(), ceiling)
		}
	}
	return nil
}

// readCore decodes a CRIU core image: the common and CORE magics, then
// one size-prefixed CoreEntry.
func readCore(p string) (*criu_core.CoreEntry, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, coreImageMax+1))
	if err != nil {
		return nil, err
	}
	if len(b) > coreImageMax {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrInvalidArchive, coreImageMax)
	}
	m := magic.LoadMagic().ByName
	if len(b) < 12 || uint64(binary.LittleEndian.Uint32(b)) != m["IMG_COMMON"] || uint64(binary.LittleEndian.Uint32(b[4:])) != m["CORE"] {
		return nil, fmt.Errorf("%w: not a CRIU core image", ErrInvalidArchive)
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if uint64(n) > uint64(len(b)-12) {
		return nil, fmt.Errorf("%w: truncated core image", ErrInvalidArchive)
	}
	core := new(criu_core.CoreEntry)
	if err := proto.Unmarshal(b[12:12+n], core); err != nil {
		return nil, fmt.Errorf("%w: core image: %v", ErrInvalidArchive, err)
	}
	return core, nil
}

// capSet is the spec's bounding set by capability number.
func capSet(c *specs.LinuxCapabilities) map[int]bool {
	set := map[int]bool{}
	if c == nil {
		return set
	}
	byName := map[string]int{}
	for _, k := range capability.ListKnown() {
		byName["CAP_"+strings.ToUpper(k.String())] = int(k)
	}
	for _, n := range c.Bounding {
		if v, ok := byName[n]; ok {
			set[v] = true
		}
	}
	return set
}

func capName(c int) string {
	for _, k := range capability.ListKnown() {
		if int(k) == c {
			return "CAP_" + strings.ToUpper(k.String())
		}
	}
	return fmt.Sprintf("capability %d", c)
}

// rlimitNumber maps the spec's rlimit names to CRIU's index (the
// kernel's resource number).
var rlimitNumber = map[string]int{
	"RLIMIT_CPU": unix.RLIMIT_CPU, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_DATA": unix.RLIMIT_DATA,
	"RLIMIT_STACK": unix.RLIMIT_STACK, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK,
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12,
	"RLIMIT_NICE": 13, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": 15,
}

// HostCeilings are the calling process's own hard rlimits and
// oom_score_adj.
func HostCeilings() (Ceilings, error) {
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return Ceilings{}, err
	}
	var oom int
	if _, err := fmt.Sscan(string(b), &oom); err != nil {
		return Ceilings{}, fmt.Errorf("parse oom_score_adj %q: %w", b, err)
	}
	return Ceilings{MinOOMScoreAdj: oom, Exists: func(p string) bool {
		_, err := os.Lstat(p)
		return err == nil
	}, Hard: func(res int) uint64 {
		var rl unix.Rlimit
		if unix.Getrlimit(res, &rl) != nil {
			return 0
		}
		return rl.Max
	}}, nil
}
