package exec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/peapod-cri/peapod/sandbox/helperbin"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/runner"
	"github.com/peapod-cri/peapod/sandbox/seal"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/sys/capability"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/sandbox/enter"
)

// fastPlan is what the C exec helper (package enter) needs for every exec
// into one container, worked out once per container from libcontainer's
// view of it, so that an exec gets the same namespaces, cgroups and
// security settings as libcontainer's setns init would give it.
type fastPlan struct {
	static    []byte // the helper's configuration without the command
	initPid   int
	initStart uint64
	bpf       []byte // the container's seccomp program, nil without one
	apparmor  bool   // an AppArmor profile: the exec process needs a private procfs
}

// fastExecOff turns the fast path off (PEAPOD_EXEC_PATH=libcontainer):
// every exec goes through libcontainer, as the differential test needs.
var fastExecOff = os.Getenv("PEAPOD_EXEC_PATH") == "libcontainer"

// planFastExec returns the container's plan, or the reason why its execs
// must go through libcontainer: what the helper does not implement. spec is
// the container's OCI spec: its process's AppArmor profile is the execs'
// (runc 1.5's specconv no longer puts it into the container's config).
func planFastExec(lc *libcontainer.Container, spec *specs.Spec) (*fastPlan, string) {
	if fastExecOff {
		return nil, "PEAPOD_EXEC_PATH=libcontainer"
	}
	cfg := lc.Config()
	st, err := lc.State()
	if err != nil {
		return nil, "state: " + err.Error()
	}
	switch {
	case cfg.RootlessEUID || cfg.RootlessCgroups:
		return nil, "rootless"
	case cfg.Namespaces.Contains(configs.NEWUSER) || len(cfg.UIDMappings) > 0:
		return nil, "user namespace"
	case cfg.ProcessLabel != "":
		return nil, "SELinux label"
	case cfg.Scheduler != nil || cfg.IOPriority != nil || cfg.Personality != nil || cfg.MemoryPolicy != nil || cfg.ExecCPUAffinity != nil:
		return nil, "scheduler, I/O priority, personality, memory policy or CPU affinity"
	case cfg.IntelRdt != nil || st.IntelRdtPath != "":
		return nil, "Intel RDT"
	case st.InitProcessPid <= 0:
		return nil, "no init process"
	}

	var b bytes.Buffer
	add := func(k, v string) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
		b.WriteByte(0)
	}
	add("id", lc.ID())
	add("keyring", boolDigit(!cfg.NoNewKeyring))
	// The profile libcontainer's exec path applies (runner.InitProcess):
	// an exec the helper started without it ran unconfined beside a
	// confined init.
	profile := cfg.AppArmorProfile
	if spec != nil && spec.Process != nil && spec.Process.ApparmorProfile != "" {
		profile = spec.Process.ApparmorProfile
	}
	if profile != "" {
		add("apparmor", profile)
	}
	ns := 0
	for _, n := range cfg.Namespaces {
		flag, ok := cloneFlag[n.Type]
		if !ok {
			return nil, "namespace " + string(n.Type)
		}
		ns |= flag
	}
	add("ns", strconv.Itoa(ns))
	var dirs []string
	var v2 string // the unified hierarchy: cgroup v2's only one, or a hybrid host's
	for _, dir := range st.CgroupPaths {
		if dir == "" || slices.Contains(dirs, dir) || dir == v2 {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "tasks")); err == nil {
			dirs = append(dirs, dir)
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil || v2 != "" {
			return nil, "cgroup " + dir + " is neither v1 nor the one v2 directory"
		}
		v2 = dir
	}
	slices.Sort(dirs)
	for _, d := range dirs {
		add("cg", d)
	}
	if v2 != "" {
		add("cg2", v2)
	}
	if cfg.OomScoreAdj != nil {
		add("oom", strconv.Itoa(*cfg.OomScoreAdj))
	}
	for _, rl := range cfg.Rlimits {
		add("rlimit", fmt.Sprintf("%d:%d:%d", rl.Type, rl.Soft, rl.Hard))
	}
	if cfg.Umask != nil {
		add("umask", strconv.FormatUint(uint64(*cfg.Umask), 10))
	}
	if cfg.Capabilities != nil {
		for _, set := range []struct {
			key   string
			names []string
		}{
			{"capb", cfg.Capabilities.Bounding}, {"cape", cfg.Capabilities.Effective},
			{"capp", cfg.Capabilities.Permitted}, {"capi", cfg.Capabilities.Inheritable},
			{"capa", cfg.Capabilities.Ambient},
		} {
			add(set.key, strconv.FormatUint(capMask(set.names), 16))
		}
	} else {
		// No capabilities in the config: libcontainer leaves them as they
		// are, the daemon's (root's) full sets.
		return nil, "no capabilities in the config"
	}
	add("nnp", boolDigit(cfg.NoNewPrivileges))
	var bpf []byte
	if cfg.Seccomp != nil {
		flags, ok := seccompFlags(cfg.Seccomp)
		if !ok {
			return nil, "seccomp notify or flags"
		}
		if bpf, err = exportSeccomp(cfg.Seccomp); err != nil {
			return nil, "seccomp: " + err.Error()
		}
		add("bpf", strconv.FormatUint(uint64(flags), 10))
	}
	return &fastPlan{static: b.Bytes(), initPid: st.InitProcessPid, initStart: st.InitProcessStartTime, bpf: bpf, apparmor: profile != ""}, ""
}

var cloneFlag = map[configs.NamespaceType]int{
	configs.NEWNET:    unix.CLONE_NEWNET,
	configs.NEWPID:    unix.CLONE_NEWPID,
	configs.NEWNS:     unix.CLONE_NEWNS,
	configs.NEWUTS:    unix.CLONE_NEWUTS,
	configs.NEWIPC:    unix.CLONE_NEWIPC,
	configs.NEWCGROUP: unix.CLONE_NEWCGROUP,
	configs.NEWTIME:   unix.CLONE_NEWTIME,
}

func boolDigit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

var (
	capBitsOnce sync.Once
	capBits     map[string]uint
)

// capMask is the bit mask of the named capabilities the kernel knows;
// libcontainer ignores the others too.
func capMask(names []string) uint64 {
	capBitsOnce.Do(func() {
		capBits = map[string]uint{}
		last, _ := capability.LastCap()
		for _, c := range capability.ListKnown() {
			if c <= last {
				capBits["CAP_"+strings.ToUpper(c.String())] = uint(c)
			}
		}
	})
	var m uint64
	for _, n := range names {
		if bit, ok := capBits[n]; ok && bit < 64 {
			m |= 1 << bit
		}
	}
	return m
}

// execHelper is the sealed handle of the binary the daemon runs as the exec
// helper: the runner binary (or peapod's own) through a read-only overlayfs,
// as libcontainer seals its init, so that a container process cannot write
// to the host's binary through /proc/<pid>/exe. Made once, shared by every
// exec: it cannot be written.
type execHelper struct {
	once sync.Once
	file *os.File // nil: no helper, execs go through libcontainer
	bad  bool     // the helper does not speak exec-enter (an older runner)
	// noProcfs: the exec process could not mount a private procfs (a
	// seccomp filter or user namespace refusing the new mount API), which
	// it needs to set an AppArmor profile: such execs go through
	// libcontainer.
	noProcfs bool
	mu       sync.Mutex
}

func (e *Executor) helper() *os.File {
	h := &e.execHelper
	h.once.Do(func() {
		if f := helperbin.File(helperbin.Runner); f != nil {
			h.file = f // the embedded runner's memfd: sealed already
			return
		}
		exe := runner.Exe()
		if exe == "/proc/self/exe" {
			return
		}
		f, err := seal.Binary(exe, e.sealDir)
		if err != nil {
			e.log.Info("execs go through libcontainer: no sealed exec helper", "binary", exe, "err", err)
			return
		}
		h.file = f
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bad {
		return nil
	}
	return h.file
}

// noPrivateProcfs says whether execs with an AppArmor profile go through
// libcontainer (execHelper.noProcfs).
func (e *Executor) noPrivateProcfs() bool {
	e.execHelper.mu.Lock()
	defer e.execHelper.mu.Unlock()
	return e.execHelper.noProcfs
}

// errFallBack says the fast path did not start the command: the exec is to
// go through libcontainer.
var errFallBack = errors.New("exec through libcontainer")

// fastExec runs cmd in the container through the C helper. It returns
// errFallBack (wrapped) when the command was not started and libcontainer
// should try; otherwise it has the semantics of Exec.
func (e *Executor) fastExec(ctx context.Context, h *Target, cmd []string, s Streams) (int32, error) {
	plan := h.fast
	helper := e.helper()
	if plan == nil || helper == nil || s.TTY || plan.apparmor && e.noPrivateProcfs() {
		return 0, errFallBack
	}
	pidf, err := openInit(plan)
	if err != nil {
		return 0, err
	}
	defer pidf.Close()
	cfg, err := helperConfig(plan, h.spec.Process, cmd)
	if err != nil {
		return 0, err
	}
	stdio, files, err := execFiles(s)
	if err != nil {
		return 0, err
	}
	defer stdio.close()
	run, err := startHelper(helper, plan, cfg, files, pidf)
	if err != nil {
		return 0, err
	}
	defer run.close()
	rep, err := run.report(ctx)
	if err != nil {
		return 0, err
	}
	if rep.pid <= 0 || rep.err != "" || run.werr != nil {
		return e.failedStart(rep, run, s, cmd, h.lc.ID())
	}
	e.log.Debug("exec through the helper", "container", h.lc.ID(), "pid", rep.pid)
	copied, err := stdio.started(s)
	if err != nil {
		killReap(rep.pid)
		return 0, err
	}
	return waitExecProcess(ctx, rep.pid, copied)
}

// openInit opens a pidfd of the container's init, through which the helper
// joins its namespaces, once the init is known to be the one planned for.
func openInit(plan *fastPlan) (*os.File, error) {
	pidfd, err := unix.PidfdOpen(plan.initPid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd of init %d: %v: %w", plan.initPid, err, errFallBack)
	}
	pidf := os.NewFile(uintptr(pidfd), "pidfd")
	if !proc.Alive(plan.initPid, plan.initStart) {
		pidf.Close()
		return nil, fmt.Errorf("init %d is gone: %w", plan.initPid, errFallBack)
	}
	return pidf, nil
}

// helperConfig is the helper's configuration for one exec: the plan's
// static part, then the process's user, groups, directory, command and
// environment, as NUL-terminated key=value fields.
func helperConfig(plan *fastPlan, p *specs.Process, cmd []string) ([]byte, error) {
	var b bytes.Buffer
	b.Write(plan.static)
	add := func(k, v string) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
		b.WriteByte(0)
	}
	add("uid", strconv.FormatUint(uint64(p.User.UID), 10))
	add("gid", strconv.FormatUint(uint64(p.User.GID), 10))
	for _, g := range p.User.AdditionalGids {
		add("group", strconv.FormatUint(uint64(g), 10))
	}
	add("cwd", p.Cwd)
	for _, a := range cmd {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, fmt.Errorf("exec argument %q contains a NUL byte: %w", a, ErrBadCommand)
		}
		add("arg", a)
	}
	for _, e := range p.Env {
		if strings.IndexByte(e, 0) >= 0 {
			return nil, errFallBack // libcontainer words the error
		}
		add("env", e)
	}
	return b.Bytes(), nil
}

// helperRun is one started helper: its process, the read end of its
// report pipe, and the daemon's ends of its pipes, closed when the exec
// ends.
type helperRun struct {
	proc  *os.Process
	rep   *os.File
	files []*os.File
	werr  error            // writing the configuration failed
	ps    *os.ProcessState // the helper's exit, once reported
}

func (h *helperRun) close() {
	for _, f := range h.files {
		f.Close()
	}
}

// startHelper starts the sealed helper with the exec's stdio, its
// configuration and report pipes, the init's pidfd and, with a seccomp
// filter, a pipe for the filter; then writes the configuration.
func startHelper(helper *os.File, plan *fastPlan, cfg []byte, stdio [3]*os.File, pidf *os.File) (_ *helperRun, retErr error) {
	run := &helperRun{}
	defer func() {
		if retErr != nil {
			run.close()
		}
	}()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	run.files = append(run.files, cfgR, cfgW)
	repR, repW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	run.files = append(run.files, repR, repW)
	run.rep = repR
	procFiles := []*os.File{stdio[0], stdio[1], stdio[2], cfgR, repW, pidf}
	var bpfR, bpfW *os.File
	if plan.bpf != nil {
		if bpfR, bpfW, err = os.Pipe(); err != nil {
			return nil, err
		}
		run.files = append(run.files, bpfR, bpfW)
		procFiles = append(procFiles, bpfR)
	}
	// The daemon's fd, named through its PID: the child resolves the path
	// after it has moved procFiles onto its fds 0-N, which may include the
	// helper's own number (/proc/self/fd/N then names another file).
	run.proc, err = os.StartProcess("/proc/"+strconv.Itoa(os.Getpid())+"/fd/"+strconv.Itoa(int(helper.Fd())), []string{"peapod", enter.Command},
		&os.ProcAttr{Env: []string{}, Files: procFiles})
	if err != nil {
		return nil, fmt.Errorf("start exec helper: %v: %w", err, errFallBack)
	}
	cfgR.Close()
	repW.Close()
	pidf.Close()
	if bpfW != nil {
		bpfR.Close()
		go func() {
			bpfW.Write(plan.bpf) // the helper reads it after the configuration
			bpfW.Close()
		}()
	}
	_, run.werr = cfgW.Write(cfg)
	cfgW.Close()
	return run, nil
}

// helperReport is what the helper reports: the command's PID, or why it
// could not run it.
type helperReport struct {
	pid int
	err string
}

// report reads the helper's report: "pid N", then EOF when the command is
// executed (the pipe is close-on-exec), or an error line; then reaps the
// helper. When ctx ends first, the helper and the command it forked are
// killed and ctx's error is returned.
func (h *helperRun) report(ctx context.Context) (helperReport, error) {
	pidCh := make(chan int, 1)
	got := make(chan helperReport, 1)
	go func() {
		var rep helperReport
		sc := bufio.NewScanner(h.rep)
		sc.Buffer(make([]byte, 0, 8192), 64<<10)
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "pid "); ok && rep.pid == 0 {
				rep.pid, _ = strconv.Atoi(v)
				pidCh <- rep.pid
			} else if v, ok := strings.CutPrefix(line, "error "); ok && rep.err == "" {
				rep.err = v
			}
		}
		got <- rep
	}()
	var rep helperReport
	select {
	case rep = <-got:
	case <-ctx.Done():
		// The helper reports the command's PID, if it forked it, and
		// exits in a moment: killed at once, it could leave a command
		// forked but not named. It is killed only when it hangs.
		pid := 0
		select {
		case pid = <-pidCh:
		case rep = <-got:
			pid = rep.pid
		case <-time.After(time.Second):
		}
		h.proc.Kill()
		h.proc.Wait()
		if pid == 0 {
			select {
			case pid = <-pidCh:
			default:
			}
		}
		if pid > 0 {
			killReap(pid)
		}
		return helperReport{}, ctx.Err()
	}
	h.ps, _ = h.proc.Wait()
	return rep, nil
}

// failedStart answers an exec the helper did not start cleanly: a helper
// that cannot work here is not tried again, a failure of the command's
// lookup or execve is answered as libcontainer would (exit code 126/127),
// and anything else falls back to libcontainer.
func (e *Executor) failedStart(rep helperReport, run *helperRun, s Streams, cmd []string, id string) (int32, error) {
	if rep.pid <= 0 {
		if (rep.err == "" && run.ps != nil && run.ps.ExitCode() == 2) || strings.Contains(rep.err, "namespaces of the container's init: invalid argument") ||
			strings.HasPrefix(rep.err, "clone3 unavailable") {
			// An older runner binary without exec-enter, a kernel
			// without setns through a pidfd (before 5.8) or without
			// clone3's CLONE_INTO_CGROUP (5.7), or a seccomp filter
			// refusing clone3: stop trying.
			e.execHelper.mu.Lock()
			e.execHelper.bad = true
			e.execHelper.mu.Unlock()
		}
		return 0, fmt.Errorf("exec helper: %s (%v): %w", rep.err, run.ps, errFallBack)
	}
	killReap(rep.pid)
	if strings.HasPrefix(rep.err, "private procfs unavailable") {
		// Refused by the kernel or a policy, before anything of the
		// container ran (another failure to mount it, "private procfs:
		// ...", sends only this exec on below). runc's init, which
		// libcontainer runs, looks for a procfs of its own the same way
		// and falls back further as runc does; the helper never uses a
		// weaker one (the host's /proc reached the host's root).
		e.execHelper.mu.Lock()
		if !e.execHelper.noProcfs {
			e.log.Warn("execs with an AppArmor profile go through libcontainer: the exec helper cannot mount a private procfs", "err", rep.err)
		}
		e.execHelper.noProcfs = true
		e.execHelper.mu.Unlock()
		return 0, fmt.Errorf("exec helper: %s: %w", rep.err, errFallBack)
	}
	msg := "unable to start container process: " + rep.err
	if !strings.HasPrefix(rep.err, "exec") {
		// Anything but the command's lookup and execve: let
		// libcontainer try, and word the error if it fails too.
		return 0, fmt.Errorf("%s: %w", msg, errFallBack)
	}
	if code := startFailureCode(errors.New(msg)); code != 0 {
		if s.Stderr != nil {
			fmt.Fprintf(s.Stderr, "%s\n", msg)
		}
		return code, nil
	}
	return 0, fmt.Errorf("exec %q in container %s: %s", cmd, id, msg)
}

// waitExecProcess waits for the exec's process, a child of the daemon
// (CLONE_PARENT), and for its output to be copied; when ctx ends first it
// is killed and reaped.
func waitExecProcess(ctx context.Context, pid int, copied <-chan struct{}) (int32, error) {
	p, err := os.FindProcess(pid) // our child: its PID stays ours until reaped
	if err != nil {
		return 0, fmt.Errorf("exec process %d: %w", pid, err)
	}
	done := make(chan *os.ProcessState, 1)
	go func() {
		proc.AwaitChildExit(pid)
		ps, _ := p.Wait()
		done <- ps
	}()
	select {
	case ps := <-done:
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		if ps == nil {
			return 0, fmt.Errorf("wait for exec process %d", pid)
		}
		return exitCode(ps.Sys().(syscall.WaitStatus)), nil
	case <-ctx.Done():
		p.Signal(unix.SIGKILL)
		<-done // reap it: nobody else will promptly (see docs/design.md)
		return 0, ctx.Err()
	}
}

// killReap kills and reaps a child of the daemon.
func killReap(pid int) {
	unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
			return
		}
	}
}

// execFiles makes the exec's stdio for a process without a terminal: the
// three files it gets and the daemon's ends, as execStdio does for
// libcontainer.
func execFiles(s Streams) (*execIO, [3]*os.File, error) {
	proc := &libcontainer.Process{}
	e, err := execStdio(proc, s)
	if err != nil {
		return nil, [3]*os.File{}, err
	}
	var files [3]*os.File
	for i, x := range []any{proc.Stdin, proc.Stdout, proc.Stderr} {
		f, ok := x.(*os.File)
		if !ok {
			e.close()
			return nil, files, fmt.Errorf("exec stdio is not a file")
		}
		files[i] = f
	}
	return e, files, nil
}
