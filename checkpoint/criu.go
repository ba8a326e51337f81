// Package checkpoint is peapod's side of CRIU (checkpoint/restore in
// userspace): whether this node can checkpoint a container at all, and why
// not when it cannot.
package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// ErrUnavailable: this node cannot checkpoint containers; the wrapping
// message says which prerequisite is missing.
var ErrUnavailable = errors.New("checkpoint/restore unavailable on this node")

// checkTimeout bounds `criu check`: it probes kernel features (a few
// forks, no waiting) and finishes in well under a second.
const checkTimeout = 20 * time.Second

// Checker decides whether CRIU can work here by running `criu check`, what
// CRIU itself runs before every dump (its kerndat probe), so a failure
// here is the failure a dump would hit.
type Checker struct {
	// PATH is the search path for the criu binary; "" is the daemon's
	// own $PATH.
	PATH string
	// MapsFile is read to explain a vDSO failure; "" is /proc/self/maps.
	MapsFile string
}

// Check returns nil when `criu check` passes, otherwise an error wrapping
// ErrUnavailable that names the binary, its version and the checks that
// failed, with the known cause when it recognises one.
func (c Checker) Check(ctx context.Context) error {
	bin, err := c.lookPath()
	if err != nil {
		return fmt.Errorf("%w: criu not found in PATH (%s): install CRIU (Debian: apt-get install criu)", ErrUnavailable, c.searchPath())
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	out, runErr := exec.CommandContext(ctx, bin, "check").CombinedOutput()
	if runErr == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %s check: %v", ErrUnavailable, bin, ctx.Err())
	}
	failed := errorLines(out)
	if len(failed) == 0 {
		failed = []string{strings.TrimSpace(lastLine(out))}
	}
	why := strings.Join(failed, "; ")
	if cause := c.knownCause(failed); cause != "" {
		why += "; " + cause
	}
	return fmt.Errorf("%w: criu %s (%s) cannot work on this kernel: `criu check` failed (%v): %s",
		ErrUnavailable, version(ctx, bin), bin, runErr, why)
}

func (c Checker) searchPath() string {
	if c.PATH != "" {
		return c.PATH
	}
	return os.Getenv("PATH")
}

func (c Checker) lookPath() (string, error) {
	if c.PATH == "" {
		return exec.LookPath("criu")
	}
	for _, dir := range filepath.SplitList(c.PATH) {
		p := filepath.Join(dir, "criu")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// criuError matches CRIU's log lines "Error (criu/vdso.c:381): vdso: ...";
// the source position is dropped, the message kept.
var criuError = regexp.MustCompile(`Error \([^)]*\):\s*(.*)$`)

func errorLines(out []byte) []string {
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if m := criuError.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			lines = append(lines, strings.TrimSuffix(m[1], "."))
		}
	}
	return lines
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// version is criu's "Version: 3.17.1" line, or "(version unknown)".
func version(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Version:"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "(version unknown)"
}

// knownCause explains the failures seen in practice. The vDSO one: Linux
// 6.13 (e93d2521b27f "x86/vdso: Split virtual clock pages into dedicated
// mapping") moved the clock pages out of [vvar] into a new [vvar_vclock]
// mapping; CRIU before checkpoint-restore/criu#2539 (merged December 2024,
// after 4.0) finds the vDSO bounds unexpected and refuses to start.
func (c Checker) knownCause(failed []string) string {
	vdso := false
	for _, l := range failed {
		if strings.Contains(l, "vDSO") || strings.Contains(l, "vdso") {
			vdso = true
		}
	}
	if !vdso {
		return ""
	}
	maps := c.MapsFile
	if maps == "" {
		maps = "/proc/self/maps"
	}
	b, err := os.ReadFile(maps)
	if err != nil || !bytes.Contains(b, []byte("[vvar_vclock]")) {
		return ""
	}
	return "this kernel maps the vDSO's clock pages as a separate [vvar_vclock] area (Linux 6.13+), " +
		"which this CRIU does not know: a CRIU with checkpoint-restore/criu#2539 (\"vdso: handle vvar_vclock vma-s\", releases after 4.0) is needed"
}
