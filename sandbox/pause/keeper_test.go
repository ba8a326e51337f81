package pause

import (
	"golang.org/x/sys/unix"

	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// keeperBin is the keeper these tests run: the binary that ships, built
// by cmd/peapod-pause/build.sh in TestMain (musl; PEAPOD_KEEPER_LIBC=glibc
// for glibc), or PEAPOD_BIN. TestConstructorKeeper runs the same C from
// this test binary's constructor, the daemon's fallback.
var keeperBin string

// TestMain lets the test binary double as a runner ("test-runner MODE
// SCRIPT") and as a client that gets killed ("test-client SOCK CMD ID"),
// and builds the keeper (keeperBin).
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "test-runner" {
		os.Exit(testRunner(os.Args[2], os.Args[3]))
	}
	if len(os.Args) > 4 && os.Args[1] == "test-client" {
		c, err := net.Dial("unix", os.Args[2])
		if err != nil {
			os.Exit(1)
		}
		c.Write([]byte(os.Args[3] + "\x00" + os.Args[4] + "\x00\x00"))
		io.Copy(io.Discard, c) // until killed
		os.Exit(0)
	}
	keeperBin = os.Getenv("PEAPOD_BIN")
	if keeperBin == "" {
		dir, err := os.MkdirTemp("", "peapod-pause-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		keeperBin = filepath.Join(dir, "peapod-pause")
		if out, err := exec.Command("../../cmd/peapod-pause/build.sh", keeperBin).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build the keeper: %v\n%s", err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// testRunner plays the real runner: it starts the container (sh -c SCRIPT),
// reports "ok <pid>" on fd 3 and exits without reaping it. Mode "early"
// reports only once the container has exited; mode "tty" gives the
// container a terminal and sends the master on fd 4.
func testRunner(mode, script string) int {
	report := os.NewFile(3, "report")
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	var master *os.File
	if mode == "tty" {
		var err error
		master, err = os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
		if err != nil {
			fmt.Fprintf(report, "error %v\n", err)
			return 1
		}
		var unlock int32
		var n uint32
		if err := ioctl(master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); err != nil {
			fmt.Fprintf(report, "error unlockpt %v\n", err)
			return 1
		}
		if err := ioctl(master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); err != nil {
			fmt.Fprintf(report, "error ptsname %v\n", err)
			return 1
		}
		slave, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			fmt.Fprintf(report, "error %v\n", err)
			return 1
		}
		defer slave.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(report, "error %v\n", err)
		return 1
	}
	pid := cmd.Process.Pid
	if mode == "early" {
		for i := 0; i < 500 && procState(pid) != "Z"; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if master != nil {
		if err := syscall.Sendmsg(4, []byte{0}, syscall.UnixRights(int(master.Fd())), nil, 0); err != nil {
			fmt.Fprintf(report, "error send master %v\n", err)
			return 1
		}
	}
	fmt.Fprintf(report, "ok %d\n", pid)
	return 0
}

func ioctl(fd, req, arg uintptr) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, arg); e != 0 {
		return e
	}
	return nil
}

// procStat returns the state and process group of pid ("" if gone).
func procStat(pid int) (state string, pgrp int) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 3 {
		return "", 0
	}
	pgrp, _ = strconv.Atoi(f[2])
	return f[0], pgrp
}

func procState(pid int) string { s, _ := procStat(pid); return s }

type keeper struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	sock   string
	holder int
	mu     sync.Mutex
	pids   []int // container pids, killed at cleanup
	waited bool
}

// startKeeper runs the keeper in its own process group. At cleanup the
// group and every container are killed, and no process may be left.
func startKeeper(t *testing.T, args ...string) *keeper {
	t.Helper()
	needRoot(t)
	k := &keeper{t: t, dir: t.TempDir()}
	k.sock = filepath.Join(k.dir, "keeper.sock")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// PEAPOD_BIN=path/to/peapod runs that binary as the keeper, e.g. to
	// measure its memory (TestKeeperMemory).
	k.cmd = exec.Command(keeperBin, append(append([]string{Command}, args...), "-S", k.sock)...)
	k.cmd.ExtraFiles = []*os.File{w}
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Cloneflags: syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC}
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(k.cleanup)
	msg, _ := io.ReadAll(r)
	f := strings.Fields(string(msg))
	if len(f) != 2 || f[0] != "ok" {
		t.Fatalf("keeper reported %q", msg)
	}
	k.holder, _ = strconv.Atoi(f[1])
	return k
}

func (k *keeper) wait() error {
	if k.waited {
		return nil
	}
	k.waited = true
	return k.cmd.Wait()
}

func (k *keeper) cleanup() {
	pgid := k.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGKILL)
	k.mu.Lock()
	pids := append([]int(nil), k.pids...)
	k.mu.Unlock()
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	k.wait()
	deadline := time.Now().Add(3 * time.Second)
	for {
		left := k.leftovers(pgid, pids)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			k.t.Errorf("processes left after the test: %v", left)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leftovers lists live (non-zombie) processes of the keeper's group, the
// holder and the containers.
func (k *keeper) leftovers(pgid int, pids []int) []int {
	var left []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, pg := procStat(pid)
		if st == "" || st == "Z" {
			continue
		}
		mine := pg == pgid || pid == k.holder
		for _, p := range pids {
			mine = mine || p == pid
		}
		if mine {
			left = append(left, pid)
		}
	}
	return left
}

// send writes one request and returns the connection.
func (k *keeper) send(fields ...string) *net.UnixConn {
	k.t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: k.sock, Net: "unix"})
	if err != nil {
		k.t.Fatal(err)
	}
	var b bytes.Buffer
	for _, f := range fields {
		b.WriteString(f)
		b.WriteByte(0)
	}
	b.WriteByte(0)
	if _, err := c.Write(b.Bytes()); err != nil {
		k.t.Fatal(err)
	}
	return c
}

func readLine(t *testing.T, c net.Conn, timeout time.Duration) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	var line []byte
	b := make([]byte, 1)
	for {
		n, err := c.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				return string(line)
			}
			line = append(line, b[0])
			continue
		}
		if err != nil {
			t.Fatalf("reading reply (got %q): %v", line, err)
		}
	}
}

// call sends a request and returns its one-line reply.
func (k *keeper) call(fields ...string) string {
	k.t.Helper()
	c := k.send(fields...)
	defer c.Close()
	return readLine(k.t, c, 70*time.Second)
}

type startOpts struct {
	log        string // "" = discard
	logDir     string // when set, log is relative to it
	tty, stdin bool
	argv       []string
}

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (k *keeper) exitFile(id string) string { return filepath.Join(k.dir, id+".exit") }

// start starts a container and returns the reply; the container's pid is
// remembered for cleanup.
func (k *keeper) start(id string, o startOpts) string {
	k.t.Helper()
	logDir, logPath := "", ""
	if o.log != "" {
		logDir, logPath = filepath.Dir(o.log), filepath.Base(o.log)
	}
	if o.logDir != "" {
		logDir, logPath = o.logDir, o.log
	}
	fields := append([]string{"start", id, logPath, b01(o.tty), b01(o.stdin), "0", k.exitFile(id), logDir}, o.argv...)
	reply := k.call(fields...)
	if f := strings.Fields(reply); len(f) == 2 && f[0] == "ok" {
		pid, _ := strconv.Atoi(f[1])
		k.mu.Lock()
		k.pids = append(k.pids, pid)
		k.mu.Unlock()
	}
	return reply
}

func (k *keeper) mustStart(id string, o startOpts) int {
	k.t.Helper()
	reply := k.start(id, o)
	f := strings.Fields(reply)
	if len(f) != 2 || f[0] != "ok" {
		k.t.Fatalf("start %s: %q", id, reply)
	}
	pid, _ := strconv.Atoi(f[1])
	return pid
}

// shRunner is a shell runner: it starts CONTAINER in the background (the
// container) and reports its pid, like the real runner.
func shRunner(container string) []string {
	return []string{"/bin/sh", "-c", "( " + container + " ) 3>&- &\necho ok $! >&3"}
}

// goRunner runs the test binary as the runner (see testRunner).
func goRunner(mode, script string) []string {
	exe, _ := os.Executable()
	return []string{exe, "test-runner", mode, script}
}

var exitedRe = regexp.MustCompile(`^exited (-?\d+) (\d+)$`)

// waitExit waits for the container's exit and checks the exit file.
func (k *keeper) waitExit(id string) (code int, ns int64) {
	k.t.Helper()
	reply := k.call("wait", id)
	m := exitedRe.FindStringSubmatch(reply)
	if m == nil {
		k.t.Fatalf("wait %s: %q", id, reply)
	}
	code, _ = strconv.Atoi(m[1])
	ns, _ = strconv.ParseInt(m[2], 10, 64)
	if d := time.Since(time.Unix(0, ns)); d < 0 || d > time.Minute {
		k.t.Errorf("finished time %v is %v ago", time.Unix(0, ns), d)
	}
	b, err := os.ReadFile(k.exitFile(id))
	if err != nil {
		k.t.Fatalf("exit file: %v", err)
	}
	if want := fmt.Sprintf("%d %d\n", code, ns); string(b) != want {
		k.t.Errorf("exit file = %q, want %q", b, want)
	}
	if _, err := os.Stat(k.exitFile(id) + ".tmp"); err == nil {
		k.t.Errorf("exit file's .tmp left behind")
	}
	return code, ns
}

type logLine struct {
	stream, tag, content string
}

var tsRe = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$`)

func readLog(t *testing.T, path string) []logLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []logLine
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("log %s does not end in a newline", path)
	}
	for _, l := range strings.Split(string(b[:len(b)-1]), "\n") {
		f := strings.SplitN(l, " ", 4)
		if len(f) != 4 || !tsRe.MatchString(f[0]) || (f[1] != "stdout" && f[1] != "stderr") || (f[2] != "F" && f[2] != "P") {
			t.Fatalf("bad CRI log line %q", l)
		}
		ts, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil {
			t.Fatalf("bad timestamp in %q: %v", l, err)
		}
		// The keeper formats the date of the second it last saw: it must
		// still be the clock's (log.c log_header).
		if d := time.Since(ts); d < 0 || d > 5*time.Minute {
			t.Fatalf("timestamp of %q is %v from now", l, d)
		}
		out = append(out, logLine{f[1], f[2], f[3]})
	}
	return out
}

func byStream(lines []logLine, stream string) []logLine {
	var out []logLine
	for _, l := range lines {
		if l.stream == stream {
			out = append(out, l)
		}
	}
	return out
}

func TestKeeperLogsAndExit(t *testing.T) {
	k := startKeeper(t)
	log := filepath.Join(k.dir, "c1.log")
	k.mustStart("c1", startOpts{log: log, argv: shRunner(
		`echo out; echo err >&2; head -c 20000 /dev/zero | tr '\0' a; echo; printf tail; sleep 0.2; exit 7`)})
	code, _ := k.waitExit("c1")
	if code != 7 {
		t.Errorf("exit code %d, want 7", code)
	}
	// Waiting again answers at once from the record.
	if code2, _ := k.waitExit("c1"); code2 != 7 {
		t.Errorf("second wait: %d", code2)
	}
	lines := readLog(t, log)
	a := strings.Repeat("a", 20000)
	want := []logLine{{"stdout", "F", "out"}, {"stdout", "P", a[:16384]}, {"stdout", "F", a[16384:]}, {"stdout", "P", "tail"}}
	if got := byStream(lines, "stdout"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stdout log:\n%.300v\nwant\n%.300v", got, want)
	}
	if got := byStream(lines, "stderr"); len(got) != 1 || got[0] != (logLine{"stderr", "F", "err"}) {
		t.Errorf("stderr log: %v", got)
	}
	if r := k.call("wait", "nope"); r != "error unknown container" {
		t.Errorf("wait unknown: %q", r)
	}
	if r := k.call("attach", "c1"); !strings.HasPrefix(r, "error ") {
		t.Errorf("attach to a finished container: %q", r)
	}
	if r := k.call("forget", "c1"); r != "ok" {
		t.Errorf("forget: %q", r)
	}
	if r := k.call("wait", "c1"); r != "error unknown container" {
		t.Errorf("wait after forget: %q", r)
	}
	if r := k.call("forget", "c1"); r != "ok" {
		t.Errorf("forget unknown: %q", r)
	}
	if r := k.call("bogus", "x"); !strings.HasPrefix(r, "error unknown command") {
		t.Errorf("bogus command: %q", r)
	}
}

func TestKeeperEarlyExitAndNoLog(t *testing.T) {
	k := startKeeper(t)
	// The container has exited (a zombie of the runner) before it is
	// registered; output is discarded.
	k.mustStart("early", startOpts{argv: goRunner("early", "echo discarded; exit 0")})
	if code, _ := k.waitExit("early"); code != 0 {
		t.Errorf("exit code %d", code)
	}
	// Killed by a signal: 128+9.
	k.mustStart("killed", startOpts{argv: shRunner("kill -9 $(sh -c 'echo $PPID')")})
	if code, _ := k.waitExit("killed"); code != 137 {
		t.Errorf("killed container: exit code %d, want 137", code)
	}
	if r := k.start("killed", startOpts{argv: shRunner("true")}); r != "error container killed already exists" {
		t.Errorf("duplicate ID: %q", r)
	}
}

func TestKeeperRunnerErrors(t *testing.T) {
	k := startKeeper(t)
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"/bin/sh", "-c", "echo error boom >&3; exit 1"}, "error boom"},
		{[]string{"/bin/sh", "-c", "exit 5"}, "error runner exited with status 5 without reporting"},
		{[]string{"/nonexistent/runner"}, "error exec /nonexistent/runner: No such file or directory"},
		{[]string{"/bin/sh", "-c", "echo ok 1 >&3"}, "error container process 1 is not a child of the keeper"},
		{[]string{"/bin/sh", "-c", "echo hello >&3"}, "error bad runner report: hello"},
	} {
		r := k.start("bad", startOpts{log: filepath.Join(k.dir, "bad.log"), argv: tc.argv})
		if !strings.HasPrefix(r, tc.want) {
			t.Errorf("%q: reply %q, want %q", tc.argv, r, tc.want)
		}
	}
	if r := k.call("wait", "bad"); r != "error unknown container" {
		t.Errorf("failed start left a container: %q", r)
	}
	if r := k.call("start", "x", "", "2", "0", "0", "/x", "", "/bin/true"); !strings.HasPrefix(r, "error ") {
		t.Errorf("bad flag: %q", r)
	}
}

func TestKeeperReopen(t *testing.T) {
	k := startKeeper(t)
	log := filepath.Join(k.dir, "r.log")
	stop := filepath.Join(k.dir, "stop")
	k.mustStart("r", startOpts{log: log, argv: shRunner(
		`i=0; while [ ! -e ` + stop + ` ]; do echo $i; i=$((i+1)); done; echo $i`)})
	files := []string{}
	for n := 1; n <= 20; n++ {
		// Rotate only once lines reached the current file, so that every
		// file gets some and the writing spans all the reopens.
		for i := 0; ; i++ {
			if st, err := os.Stat(log); err == nil && st.Size() > 0 {
				break
			}
			if i == 500 {
				t.Fatalf("no lines reach %s", log)
			}
			time.Sleep(4 * time.Millisecond)
		}
		rotated := fmt.Sprintf("%s.%d", log, n)
		if err := os.Rename(log, rotated); err != nil {
			t.Fatal(err)
		}
		files = append(files, rotated)
		if r := k.call("reopen", "r"); r != "ok" {
			t.Fatalf("reopen: %q", r)
		}
	}
	os.WriteFile(stop, nil, 0o644)
	k.waitExit("r")
	files = append(files, log)
	next, empty := 0, 0
	for _, f := range files {
		lines := readLog(t, f)
		if len(lines) == 0 {
			empty++
		}
		for _, l := range lines {
			if l.content != strconv.Itoa(next) || l.tag != "F" {
				t.Fatalf("%s: line %q, want %d", f, l.content, next)
			}
			next++
		}
	}
	if empty > 0 {
		t.Errorf("%d of %d log files empty", empty, len(files))
	}
	t.Logf("%d lines over %d files", next, len(files))
	if r := k.call("reopen", "r"); !strings.HasPrefix(r, "error ") {
		t.Errorf("reopen after exit: %q", r)
	}
}

type frame struct {
	stream byte
	data   string
}

// readFrames reads attach frames until the keeper closes the connection.
func readFrames(c net.Conn) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				return o.String(), e.String(), nil
			}
			return o.String(), e.String(), err
		}
		data := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(r, data); err != nil {
			return "", "", err
		}
		switch hdr[0] {
		case 1:
			o.Write(data)
		case 2:
			e.Write(data)
		default:
			return "", "", fmt.Errorf("bad stream %d", hdr[0])
		}
	}
}

func TestKeeperAttach(t *testing.T) {
	k := startKeeper(t)
	k.mustStart("a", startOpts{log: filepath.Join(k.dir, "a.log"), argv: shRunner(
		`sleep 0.5; for i in 1 2 3; do echo line$i; echo errline$i >&2; sleep 0.05; done; exit 3`)})
	var conns []net.Conn
	for i := 0; i < 2; i++ {
		c := k.send("attach", "a")
		defer c.Close()
		if r := readLine(t, c, 5*time.Second); r != "ok" {
			t.Fatalf("attach: %q", r)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		o, e, err := readFrames(c)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if o != "line1\nline2\nline3\n" || e != "errline1\nerrline2\nerrline3\n" {
			t.Errorf("client %d got stdout %q stderr %q", i, o, e)
		}
	}
	if code, _ := k.waitExit("a"); code != 3 {
		t.Errorf("exit %d", code)
	}
}

// recvFD reads the reply line and the fd passed with it.
func recvFD(t *testing.T, c *net.UnixConn) (string, *os.File) {
	t.Helper()
	buf := make([]byte, 64)
	oob := make([]byte, syscall.CmsgSpace(4))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return string(buf[:n]), nil
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights: %v %v", fds, err)
	}
	return string(buf[:n]), os.NewFile(uintptr(fds[0]), "stdin")
}

func TestKeeperStdin(t *testing.T) {
	k := startKeeper(t)
	log := filepath.Join(k.dir, "s.log")
	// A background job's stdin is /dev/null unless redirected explicitly.
	k.mustStart("s", startOpts{log: log, stdin: true, argv: []string{"/bin/sh", "-c",
		"exec 4<&0; ( exec cat <&4 4<&- ) 3>&- & echo ok $! >&3"}})
	c := k.send("stdin", "s")
	reply, f := recvFD(t, c)
	c.Close()
	if reply != "ok\n" || f == nil {
		t.Fatalf("stdin reply %q, fd %v", reply, f)
	}
	if _, err := f.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	f.Close() // the keeper still holds stdin: no EOF yet
	time.Sleep(300 * time.Millisecond)
	w := k.send("wait", "s")
	defer w.Close()
	w.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _ := w.Read(make([]byte, 1)); n != 0 {
		t.Fatal("container exited while the keeper held its stdin")
	}
	if r := k.call("close-stdin", "s"); r != "ok" {
		t.Fatalf("close-stdin: %q", r)
	}
	if code, _ := k.waitExit("s"); code != 0 {
		t.Errorf("cat exited %d", code)
	}
	if lines := readLog(t, log); len(lines) != 1 || lines[0] != (logLine{"stdout", "F", "hello"}) {
		t.Errorf("log: %v", lines)
	}
	if r := k.call("stdin", "s"); r != "error no stdin" {
		t.Errorf("stdin after close: %q", r)
	}
}

func TestKeeperTTY(t *testing.T) {
	k := startKeeper(t)
	log := filepath.Join(k.dir, "t.log")
	k.mustStart("t", startOpts{log: log, tty: true, argv: goRunner("tty", "echo hello-tty; read x; echo got-$x; exit 2")})
	c := k.send("stdin", "t")
	reply, m := recvFD(t, c)
	c.Close()
	if reply != "ok\n" || m == nil {
		t.Fatalf("stdin reply %q, fd %v", reply, m)
	}
	if _, err := m.Write([]byte("abc\n")); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if code, _ := k.waitExit("t"); code != 2 {
		t.Errorf("exit %d", code)
	}
	lines := readLog(t, log)
	var all []string
	for _, l := range lines {
		if l.stream != "stdout" {
			t.Errorf("tty output logged as %s", l.stream)
		}
		all = append(all, strings.TrimSuffix(l.content, "\r"))
	}
	if s := strings.Join(all, "|"); !strings.Contains(s, "hello-tty") || !strings.Contains(s, "got-abc") {
		t.Errorf("tty log: %q", s)
	}
}

func TestKeeperPIDHolder(t *testing.T) {
	k := startKeeper(t, "-P")
	if k.holder <= 0 {
		t.Fatalf("holder pid %d", k.holder)
	}
	ns := func(pid int) string {
		s, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if ns(k.holder) == ns(k.cmd.Process.Pid) {
		t.Errorf("holder shares the keeper's PID namespace %s", ns(k.holder))
	}
	if ns(k.cmd.Process.Pid) != ns(os.Getpid()) {
		t.Errorf("keeper left the host PID namespace")
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", k.holder))
	if !regexp.MustCompile(`(?m)^NSpid:\s+\d+\s+1$`).Match(status) {
		t.Errorf("holder is not PID 1 of its namespace:\n%s", status)
	}
	// A container started afterwards is not in the holder's namespace
	// (the keeper's own children stay in the host namespace).
	pid := k.mustStart("c", startOpts{argv: shRunner("sleep 5")})
	if ns(pid) != ns(os.Getpid()) {
		t.Errorf("the keeper's later child landed in the new PID namespace")
	}
	k.cmd.Process.Kill()
	k.wait()
	for i := 0; ; i++ {
		if st := procState(k.holder); st == "" || st == "Z" {
			break
		}
		if i == 200 {
			t.Fatal("holder outlived the keeper")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKeeperExitsOnTerm(t *testing.T) {
	k := startKeeper(t, "-P")
	k.mustStart("c", startOpts{argv: shRunner("sleep 5")})
	k.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- k.wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("keeper exit after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("keeper ignored SIGTERM")
	}
}

// Clients that die (kill -9) while waiting, attached or holding stdin do
// not disturb the container.
func TestKeeperClientKilled(t *testing.T) {
	k := startKeeper(t)
	log := filepath.Join(k.dir, "k.log")
	k.mustStart("k", startOpts{log: log, stdin: true, argv: shRunner(
		`for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.05; done; exit 4`)})
	exe, _ := os.Executable()
	var clients []*exec.Cmd
	for _, cmd := range []string{"wait", "attach", "stdin"} {
		c := exec.Command(exe, "test-client", k.sock, cmd, "k")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	time.Sleep(150 * time.Millisecond)
	for _, c := range clients {
		c.Process.Kill()
		c.Wait()
	}
	// An attach client that stops reading is dropped, not waited for.
	stuck := k.send("attach", "k")
	defer stuck.Close()
	if code, _ := k.waitExit("k"); code != 4 {
		t.Errorf("exit %d", code)
	}
	lines := readLog(t, log)
	if len(lines) != 10 || lines[9].content != "10" {
		t.Errorf("log: %v", lines)
	}
}

// pss returns the Pss and Pss_Anon of pid in kB. Pss_Anon is what each
// more pod costs; the file-backed rest is shared with every other keeper.
func pss(t *testing.T, pid int) (total, anon int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	get := func(key string) int {
		m := regexp.MustCompile(`(?m)^` + key + `:\s+(\d+) kB`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("no %s in %s", key, b)
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	return get("Pss"), get("Pss_Anon")
}

// keeperMemoryBudget bounds what a pod's keeper and PID holder hold that no
// other process shares (Pss_Anon), with 5 containers started and attached,
// for the keeper that ships (static, musl): 52 KiB when it was set, against
// 112 for the same C linked statically with glibc (PEAPOD_KEEPER_LIBC=glibc,
// which must fail here) and 176-180 run from a Go binary's constructor; plus
// room for run-to-run noise. A change that needs more is measured and
// raises it on purpose.
const keeperMemoryBudget = 80

func TestKeeperMemory(t *testing.T) {
	k := startKeeper(t, "-P")
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("m%d", i)
		k.mustStart(id, startOpts{log: filepath.Join(k.dir, id+".log"), stdin: true, argv: shRunner(
			`echo started; printf partial; sleep 30`)})
		a := k.send("attach", id)
		defer a.Close()
	}
	time.Sleep(200 * time.Millisecond)
	kp, ka := pss(t, k.cmd.Process.Pid)
	hp, ha := pss(t, k.holder)
	t.Logf("with 5 containers: Pss keeper %d kB + PID holder %d kB = %d kB; Pss_Anon %d + %d = %d kB",
		kp, hp, kp+hp, ka, ha, ka+ha)
	if ka+ha > keeperMemoryBudget {
		t.Errorf("keeper and PID holder hold %d KiB of their own (Pss_Anon), over the budget of %d KiB", ka+ha, keeperMemoryBudget)
	}
}

// A leftover process holding the output does not delay the exit record by
// more than the 2 s grace.
func TestKeeperExitWhileOutputHeld(t *testing.T) {
	k := startKeeper(t)
	log := filepath.Join(k.dir, "h.log")
	k.mustStart("h", startOpts{log: log, argv: goRunner("plain", `echo before; sleep 10 & printf unterminated; exit 5`)})
	begin := time.Now()
	if code, _ := k.waitExit("h"); code != 5 {
		t.Errorf("exit %d", code)
	}
	if d := time.Since(begin); d < 1500*time.Millisecond || d > 4*time.Second {
		t.Errorf("exit recorded after %v, want about 2 s", d)
	}
	// The unterminated last line is partial (P): the kubelet then adds no newline.
	want := []logLine{{"stdout", "F", "before"}, {"stdout", "P", "unterminated"}}
	if got := readLog(t, log); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("log %v, want %v", got, want)
	}
}

// TestKeeperLogBeneathDir: the keeper opens a container's log beneath the
// pod's log directory without following symlinks, at start and at reopen,
// and creates the directories of its path there. A directory of the path
// replaced by a symlink to another directory is refused, and nothing is
// written there. So is a FIFO or a device node at the log path, which is
// never opened.
func TestKeeperLogBeneathDir(t *testing.T) {
	k := startKeeper(t)
	logDir := filepath.Join(k.dir, "pod-logs")
	canary := filepath.Join(k.dir, "canary")
	for _, d := range []string{logDir, canary} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The directories of the path are made beneath logDir.
	k.mustStart("mk", startOpts{log: "a/b/0.log", logDir: logDir, argv: shRunner("echo made; sleep 0.2")})
	k.waitExit("mk")
	if lines := readLog(t, filepath.Join(logDir, "a/b/0.log")); len(lines) != 1 || lines[0].content != "made" {
		t.Errorf("a/b/0.log: %v", lines)
	}

	// A symlinked directory at start.
	if err := os.Symlink(canary, filepath.Join(logDir, "sub")); err != nil {
		t.Fatal(err)
	}
	// ELOOP in glibc's words whichever libc the keeper links (musl says
	// "Symbolic link loop"; log.c errno_text).
	if r := k.start("s1", startOpts{log: "sub/0.log", logDir: logDir, argv: shRunner("echo escaped")}); !strings.HasPrefix(r, "error ") || !strings.Contains(r, "without symlinks") ||
		!strings.Contains(r, ": Too many levels of symbolic links (") {
		t.Errorf("start through a symlinked directory: %q", r)
	}
	// A symlinked log file, and one to a FIFO and a device node.
	if err := os.Symlink(filepath.Join(canary, "x.log"), filepath.Join(logDir, "link.log")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(logDir, "fifo.log"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(logDir, "null.log"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"link.log", "fifo.log", "null.log"} {
		start := time.Now()
		if r := k.start("s-"+name, startOpts{log: name, logDir: logDir, argv: shRunner("echo escaped")}); !strings.HasPrefix(r, "error ") {
			t.Errorf("start with %s: %q", name, r)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("start with %s took %v", name, d)
		}
	}

	// A directory swapped for a symlink before a reopen.
	stop := filepath.Join(k.dir, "stop")
	k.mustStart("r", startOpts{log: "real/0.log", logDir: logDir, argv: shRunner(
		`while [ ! -e ` + stop + ` ]; do echo line; sleep 0.01; done`)})
	real := filepath.Join(logDir, "real")
	waitSize := func(p string, over int64) {
		t.Helper()
		for i := 0; ; i++ {
			if st, err := os.Stat(p); err == nil && st.Size() > over {
				return
			}
			if i == 1000 {
				t.Fatalf("%s does not grow past %d bytes", p, over)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitSize(filepath.Join(real, "0.log"), 0)
	if err := os.Rename(real, real+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(canary, real); err != nil {
		t.Fatal(err)
	}
	if r := k.call("reopen", "r"); !strings.HasPrefix(r, "error ") || !strings.Contains(r, "without symlinks") {
		t.Errorf("reopen through a symlinked directory: %q", r)
	}
	// The failed reopen kept the old file, which goes on growing.
	st, err := os.Stat(filepath.Join(real+".old", "0.log"))
	if err != nil {
		t.Fatal(err)
	}
	waitSize(filepath.Join(real+".old", "0.log"), st.Size())
	os.WriteFile(stop, nil, 0o644)
	k.waitExit("r")

	// The pod's log directory itself a symlink (a hostPath of the kubelet's
	// pod logs directory can swap any pod's entry).
	podLink := filepath.Join(k.dir, "pod-logs-link")
	if err := os.Symlink(canary, podLink); err != nil {
		t.Fatal(err)
	}
	if r := k.start("s-poddir", startOpts{log: "c/0.log", logDir: podLink, argv: shRunner("echo escaped")}); !strings.HasPrefix(r, "error ") || !strings.Contains(r, "not a symlink") {
		t.Errorf("start with a symlinked pod log directory: %q", r)
	}
	if ents, _ := os.ReadDir(canary); len(ents) != 0 {
		t.Errorf("the keeper wrote into the symlink's target: %v", ents)
	}
}
