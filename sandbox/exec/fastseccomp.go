package exec

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/peapod-cri/peapod/sandbox/runner"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// seccompFlags are the seccomp(2) flags runc loads a filter with, from the
// config's flags (runc's filterFlags); ok is false for what the fast exec
// path does not do (a notify listener, unknown flags).
func seccompFlags(cfg *configs.Seccomp) (flags uint, ok bool) {
	if cfg.ListenerPath != "" || cfg.DefaultAction == configs.Notify {
		return 0, false
	}
	for _, call := range cfg.Syscalls {
		if call == nil || call.Action == configs.Notify {
			return 0, false
		}
	}
	for _, f := range cfg.Flags {
		switch f {
		case specs.LinuxSeccompFlagLog:
			flags |= unix.SECCOMP_FILTER_FLAG_LOG
		case specs.LinuxSeccompFlagSpecAllow:
			flags |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		case "SECCOMP_FILTER_FLAG_TSYNC": // runc ignores it
		default:
			return 0, false
		}
	}
	return flags, true
}

// exportSeccomp returns the BPF program that runc's seccomp.InitSeccomp
// loads for cfg, exactly as the kernel got it: the runner binary loads it
// with runc's code into one of its threads (runner.SeccompMain) and the
// daemon reads it back with PTRACE_SECCOMP_GET_FILTER. Once per container.
func exportSeccomp(cfg *configs.Seccomp) ([]byte, error) {
	conf, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	exe := runner.Exe()
	if exe == "/proc/self/exe" {
		return nil, fmt.Errorf("no runner binary")
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer inR.Close()
	defer inW.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer outR.Close()
	defer outW.Close()
	holdR, holdW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer holdR.Close()
	defer holdW.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	proc, err := os.StartProcess(exe, []string{"peapod-runner", runner.SeccompCommand},
		&os.ProcAttr{Env: []string{}, Files: []*os.File{inR, outW, devnull, holdR}})
	if err != nil {
		return nil, err
	}
	defer proc.Wait()
	defer proc.Kill()
	inR.Close()
	outW.Close()
	holdR.Close()
	go func() {
		inW.Write(conf)
		inW.Close()
	}()
	outR.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("seccomp export: %v", err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(line), "tid ")
	if !ok {
		return nil, fmt.Errorf("seccomp export: %s", strings.TrimSpace(line))
	}
	tid, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("seccomp export: %q", line)
	}
	return readSeccompFilter(tid)
}

// readSeccompFilter reads the most recent seccomp filter of thread tid,
// which it stops for the time: it attaches with PTRACE_SEIZE, interrupts,
// reads and detaches, all from one OS thread as ptrace wants.
func readSeccompFilter(tid int) ([]byte, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceSeize(tid); err != nil {
		return nil, fmt.Errorf("ptrace seize %d: %w", tid, err)
	}
	defer unix.PtraceDetach(tid)
	if err := unix.PtraceInterrupt(tid); err != nil {
		return nil, fmt.Errorf("ptrace interrupt %d: %w", tid, err)
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
		if err == nil {
			break
		}
		if err != unix.EINTR {
			return nil, fmt.Errorf("wait for %d to stop: %w", tid, err)
		}
	}
	if !ws.Stopped() {
		return nil, fmt.Errorf("thread %d did not stop: %v", tid, ws)
	}
	n, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), 0, 0, 0, 0)
	if errno != 0 {
		return nil, fmt.Errorf("PTRACE_SECCOMP_GET_FILTER: %w", errno)
	}
	if n == 0 || n > 4096 {
		return nil, fmt.Errorf("PTRACE_SECCOMP_GET_FILTER: %d instructions", n)
	}
	prog := make([]unix.SockFilter, n)
	got, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), 0, uintptr(unsafe.Pointer(&prog[0])), 0, 0)
	if errno != 0 || got != n {
		return nil, fmt.Errorf("PTRACE_SECCOMP_GET_FILTER: %d of %d instructions: %v", got, n, errno)
	}
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), int(n)*int(unsafe.Sizeof(prog[0])))...), nil
}
