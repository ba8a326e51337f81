package pause

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The PID holder confines itself (pause.c holder_main), ignores SIGTERM
// sent from inside its PID namespace (PID 1 without a handler), dies of
// SIGKILL from the host, and the keeper hands its namespace to every runner at
// fd 5 with its PID in PEAPOD_HOLDER_PID.
func TestHolderConfinedAndHandedToRunners(t *testing.T) {
	k := startKeeper(t, "-P")
	h := k.holder
	if h <= 0 {
		t.Fatalf("holder pid %d", h)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", h))
	for _, want := range []string{"CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2", "Uid:\t65534\t65534\t65534\t65534"} {
		if !strings.Contains(string(status), want+"\n") {
			t.Errorf("holder status lacks %q:\n%s", want, status)
		}
	}
	if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", h)); string(cmd) != "/pause\x00" {
		t.Errorf("holder cmdline %q", cmd)
	}
	if mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", h)); strings.Count(string(mi), "\n") != 1 || !strings.Contains(string(mi), " / / ro,") {
		t.Errorf("holder mountinfo:\n%s", mi)
	}

	// What a runner gets.
	out := filepath.Join(k.dir, "runner-saw")
	k.mustStart("c", startOpts{argv: []string{"/bin/sh", "-c",
		`{ readlink /proc/self/fd/5; readlink /proc/self/fd/6 || echo no-user; echo "$PEAPOD_HOLDER_PID"; } > ` + out + ` 2>/dev/null
( sleep 5 ) 3>&- &
echo ok $! >&3`}})
	saw, _ := os.ReadFile(out)
	pidns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", h))
	if want := pidns + "\nno-user\n" + strconv.Itoa(h) + " pid\n"; string(saw) != want {
		t.Errorf("runner saw %q, want %q", saw, want)
	}

	// SIGTERM from inside the pod's PID namespace: ignored.
	if o, err := exec.Command("nsenter", fmt.Sprintf("--pid=/proc/%d/ns/pid", h), "/bin/sh", "-c", "kill -TERM 1").CombinedOutput(); err != nil {
		t.Fatalf("kill -TERM 1 inside the holder's namespace: %v %s", err, o)
	}
	time.Sleep(200 * time.Millisecond)
	if st := procState(h); st == "" || st == "Z" {
		t.Fatalf("holder died of SIGTERM from inside its PID namespace")
	}
	// SIGKILL from the host ends it (the keeper reaps it); a
	// default-handled SIGTERM does not even from there.
	syscall.Kill(h, syscall.SIGKILL)
	for i := 0; procState(h) != ""; i++ {
		if i == 300 {
			t.Fatalf("holder survived SIGKILL from the host (state %s)", procState(h))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
