package pause

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// callWithin sends a request and fails the test unless its one-line reply
// arrives within d: a keeper whose loop is blocked does not answer.
func (k *keeper) callWithin(d time.Duration, fields ...string) string {
	k.t.Helper()
	c := k.send(fields...)
	defer c.Close()
	return readLine(k.t, c, d)
}

// TestKeeperSlowStartDoesNotBlock starts a container whose runner does not
// report until the test says so. Meanwhile the keeper must go on serving:
// a sibling that writes 10 MB to stdout runs to its end with a complete
// log, attach to another sibling streams its output, other requests are
// answered. The slow start then succeeds.
func TestKeeperSlowStartDoesNotBlock(t *testing.T) {
	k := startKeeper(t)
	release := filepath.Join(k.dir, "release")
	stop := filepath.Join(k.dir, "stop")
	defer os.WriteFile(stop, nil, 0o644)

	k.mustStart("talker", startOpts{argv: shRunner(`while [ ! -e ` + stop + ` ]; do echo tick; sleep 0.05; done`)})

	// The slow runner holds its start until the release file exists. Its
	// "container" outlives it by a second, as an init outlives a real
	// runner: a shell may reap a child that exits first, which no keeper
	// could then see.
	slowReply := make(chan string, 1)
	slowConn := k.send(append([]string{"start", "slow", "", "0", "0", "0", k.exitFile("slow"), ""},
		"/bin/sh", "-c", `while [ ! -e `+release+` ]; do sleep 0.05; done; ( sleep 1; exit 4 ) 3>&- &
echo ok $! >&3`)...)
	defer slowConn.Close()
	go func() {
		slowConn.SetReadDeadline(time.Now().Add(60 * time.Second))
		b, _ := io.ReadAll(io.LimitReader(slowConn, 200))
		slowReply <- strings.TrimSpace(string(b))
	}()
	time.Sleep(300 * time.Millisecond) // the slow runner is forked and waiting

	// A sibling writes 10 MB (200000 lines of 50 bytes) and exits, all
	// while the slow start is in flight.
	log := filepath.Join(k.dir, "chatty.log")
	begin := time.Now()
	r := k.callWithin(10*time.Second, append([]string{"start", "chatty", filepath.Base(log), "0", "0", "0", k.exitFile("chatty"), k.dir},
		shRunner(`yes 0123456789012345678901234567890123456789012345678 | head -c 10000000`)...)...)
	if !strings.HasPrefix(r, "ok ") {
		t.Fatalf("start chatty: %q", r)
	}
	w := k.callWithin(30*time.Second, "wait", "chatty")
	if !strings.HasPrefix(w, "exited 0 ") {
		t.Fatalf("wait chatty: %q", w)
	}
	t.Logf("10 MB sibling done in %v while a start was in flight", time.Since(begin))
	lines := readLog(t, log)
	if len(lines) != 200000 {
		t.Errorf("chatty log has %d lines, want 200000", len(lines))
	}
	for i, l := range lines {
		if l != (logLine{"stdout", "F", "0123456789012345678901234567890123456789012345678"}) {
			t.Fatalf("chatty log line %d: %v", i, l)
		}
	}

	// Attach to the talker is served meanwhile.
	ac := k.send("attach", "talker")
	defer ac.Close()
	if r := readLine(t, ac, 5*time.Second); r != "ok" {
		t.Fatalf("attach talker: %q", r)
	}
	ac.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte
	if _, err := io.ReadFull(ac, hdr[:]); err != nil {
		t.Fatalf("attach talker while a start is in flight: %v", err)
	}
	data := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
	if _, err := io.ReadFull(ac, data); err != nil || hdr[0] != 1 || !bytes.HasPrefix(data, []byte("tick")) {
		t.Errorf("attach frame %v %q: %v", hdr, data, err)
	}
	// A second start for the same ID is refused at once, and forget says
	// the starting container is running.
	if r := k.callWithin(5*time.Second, "start", "slow", "", "0", "0", "0", k.exitFile("x"), "", "/bin/true"); r != "error container slow already exists" {
		t.Errorf("duplicate start while starting: %q", r)
	}
	if r := k.callWithin(5*time.Second, "forget", "slow"); r != "error container is running" {
		t.Errorf("forget while starting: %q", r)
	}

	select {
	case r := <-slowReply:
		t.Fatalf("slow start answered before its runner reported: %q", r)
	default:
	}
	os.WriteFile(release, nil, 0o644)
	r = <-slowReply
	if !strings.HasPrefix(r, "ok ") {
		t.Fatalf("slow start: %q", r)
	}
	if code, _ := k.waitExit("slow"); code != 4 {
		t.Errorf("slow container exit %d, want 4", code)
	}
}

// TestKeeperEarlyExitsNotLost: the container's init exits and is reaped
// before its start is decided, and then many more unknown exits (orphans
// re-parented to the keeper) follow before the runner reports. The init's
// exit must still be found (a fixed table of 32 lost it: "not a child").
func TestKeeperEarlyExitsNotLost(t *testing.T) {
	k := startKeeper(t)
	// The runner (sh) exits at once, so the init is re-parented to the
	// keeper and reaped; a helper that holds fd 3 makes 200 orphans exit,
	// then reports the init's PID. The init is forked last and exits after
	// a moment: dash reaps finished background jobs when it forks the next
	// one, and an exit the runner reaps is one no keeper could see (under
	// load that happened, and the test failed for the shell's reason).
	pidFile := filepath.Join(k.dir, "init.pid")
	reply := k.start("e", startOpts{argv: []string{"/bin/sh", "-c", `( while [ ! -s ` + pidFile + ` ]; do sleep 0.05; done
i=0; while [ $i -lt 200 ]; do ( true & ) 3>&-; i=$((i+1)); done; sleep 0.3; echo ok $(cat ` + pidFile + `) >&3 ) &
( sleep 0.2; exit 6 ) 3>&- & echo $! > ` + pidFile + `
exit 0`}})
	if !strings.HasPrefix(reply, "ok ") {
		t.Fatalf("start: %q", reply)
	}
	if code, _ := k.waitExit("e"); code != 6 {
		t.Errorf("exit %d, want 6", code)
	}
}

// TestKeeperStartDeadline: a runner that reports its container and then
// hangs is killed at the 60 s deadline, the start fails, and the
// container it reported is killed too (nobody would record its exit).
func TestKeeperStartDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the keeper's 60 s start deadline")
	}
	k := startKeeper(t)
	pidFile := filepath.Join(k.dir, "init.pid")
	c := k.send("start", "hang", "", "0", "0", "0", k.exitFile("hang"), "",
		"/bin/sh", "-c", `sleep 1000 3>&- & echo $! > `+pidFile+`; echo ok $! >&3; exec sleep 1000 3>&-`)
	defer c.Close()
	var pid int
	waitUntil(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0
	})
	k.mu.Lock()
	k.pids = append(k.pids, pid)
	k.mu.Unlock()
	begin := time.Now()
	r := readLine(t, c, 75*time.Second)
	if !strings.HasPrefix(r, "error runner did not report and exit within 60 s") {
		t.Fatalf("start of a hung runner: %q", r)
	}
	t.Logf("failed after %v", time.Since(begin))
	waitUntil(t, 5*time.Second, func() bool { s := procState(pid); return s == "" || s == "Z" })
	if r := k.call("wait", "hang"); r != "error unknown container" {
		t.Errorf("wait after a failed start: %q", r)
	}
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
	}
}
