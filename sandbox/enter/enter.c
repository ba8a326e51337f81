// peapod's exec helper ("exec-enter"): see enter.go for why it exists.
//
// Started by the daemon with:
//   fd 0-2  the exec's stdio
//   fd 3    configuration: NUL-terminated "key=value" tokens, read to EOF
//   fd 4    report pipe (close-on-exec)
//   fd 5    pidfd of the container's init
//   fd 6    (optional, "bpf" key) the seccomp program, struct sock_filter[]
//
// Keys (repeatable ones marked *):
//   id=ID            container ID (session keyring "_ses.ID")
//   keyring=0|1      join a new session keyring named after the container
//   ns=FLAGS         CLONE_NEW* flags of the init's namespaces to join
//   cg=DIR *         cgroup v1 directories to join (by writing "0" to tasks)
//   cg2=DIR          the container's cgroup2 directory (cgroup v2, or the
//                    unified hierarchy of a hybrid host): the exec process is
//                    cloned into it (clone3 CLONE_INTO_CGROUP)
//   oom=N            oom_score_adj
//   rlimit=RES:SOFT:HARD *
//   umask=N
//   uid=N gid=N group=N * setgroups=0|1
//   capb= cape= capp= capi= capa=   capability sets (hex bit masks)
//   nnp=0|1          no_new_privs
//   apparmor=NAME    AppArmor profile the command is executed under
//   bpf=FLAGS        a seccomp program on fd 6, loaded with these flags
//   cwd=DIR  arg=S *  env=S *
//
// The helper (in the host's PID namespace, single-threaded) joins the
// cgroups, sets oom_score_adj, joins the namespaces through the pidfd and
// forks the exec process with CLONE_PARENT, so that the daemon is its parent
// and reaps it; it reports "pid <pid>\n" and exits. With cg2, the exec
// process is born in that cgroup (clone3 CLONE_INTO_CGROUP: it never runs
// a moment outside it, and nothing waits for a migration) and joins the
// container's cgroup namespace itself, after its birth: the kernel allows a
// clone into a cgroup only from a cgroup namespace that sees both the
// helper's cgroup and the target. Where clone3 or CLONE_INTO_CGROUP is
// missing (before 5.7, or a seccomp filter refusing clone3) the helper
// reports "error clone3 unavailable: ..." and the daemon execs through
// libcontainer from then on. The exec process is in
// the container's PID namespace; it does what runc's setns init does, in the
// same order, and executes the command. Any failure is reported as
// "error <message>\n" (the daemon maps "executable file not found" and
// "no such file or directory" to 127, "permission denied" to 126).

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/mount.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/sched.h>
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

#define CONFIG_FD 3
#define REPORT_FD 4
#define PID_FD 5
#define BPF_FD 6

// The new mount API (5.2): the same numbers on every architecture.
#ifndef SYS_fsopen
#define SYS_fsopen 430
#define SYS_fsconfig 431
#define SYS_fsmount 432
#endif

#define MAX_CONFIG (4 << 20)
#define MAX_LIST 65536

struct rlim {
	int res;
	struct rlimit lim;
};

struct config {
	const char *id;
	int keyring;
	int ns;
	const char **cgroups;
	int ncgroups;
	const char *cgroup2;
	const char *oom;
	struct rlim *rlimits;
	int nrlimits;
	int has_umask;
	mode_t umask;
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	int ngroups;
	int setgroups;
	uint64_t capb, cape, capp, capi, capa;
	int nnp;
	int setgroups_denied; // the user namespace's /proc/PID/setgroups says "deny"
	const char *apparmor;
	int has_bpf;
	unsigned bpf_flags;
	struct sock_filter *bpf;
	unsigned short bpf_len;
	const char *cwd;
	char **args;
	int nargs;
	char **env;
	int nenv;
};

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

// errstr is strerror as Go words it ("no such file or directory"): the
// daemon maps these words to the shell's exit codes 127 and 126.
static const char *errstr(int e)
{
	static char bufs[4][128];
	static int next;
	char *b = bufs[next++ % 4];
	snprintf(b, 128, "%s", strerror(e));
	if (b[0] >= 'A' && b[0] <= 'Z' && !(b[1] >= 'A' && b[1] <= 'Z'))
		b[0] += 'a' - 'A';
	return b;
}

static void fail(const char *fmt, ...)
{
	char msg[4096];
	int n = snprintf(msg, sizeof(msg), "error ");
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(msg + n, sizeof(msg) - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(msg) - 2)
		n = sizeof(msg) - 2;
	for (int i = 6; i < n; i++)
		if (msg[i] == '\n')
			msg[i] = ' ';
	msg[n++] = '\n';
	ssize_t w = write(REPORT_FD, msg, n);
	(void)w;
	_exit(1);
}

static char *read_all(int fd, size_t *len)
{
	size_t cap = 8192, n = 0;
	char *buf = malloc(cap + 1);
	if (!buf)
		fail("out of memory");
	for (;;) {
		if (n == cap) {
			if (cap >= MAX_CONFIG)
				fail("exec configuration too large");
			cap *= 2;
			buf = realloc(buf, cap + 1);
			if (!buf)
				fail("out of memory");
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			fail("read exec configuration: %s", errstr(errno));
		}
		if (r == 0)
			break;
		n += r;
	}
	buf[n] = 0;
	*len = n;
	return buf;
}

static unsigned long long num(const char *s, int base, const char *key)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || end == s || *end)
		fail("bad exec configuration value %s=%s", key, s);
	return v;
}

static void *grow(void *p, int n, size_t size)
{
	if (n >= MAX_LIST)
		fail("exec configuration list too long");
	p = realloc(p, (n + 1) * size);
	if (!p)
		fail("out of memory");
	return p;
}

static void parse(struct config *c, char *buf, size_t len)
{
	memset(c, 0, sizeof(*c));
	c->keyring = 1;
	c->setgroups = 1;
	for (char *p = buf, *next; p < buf + len; p = next) {
		next = p + strlen(p) + 1;
		char *eq = strchr(p, '=');
		if (!eq)
			fail("bad exec configuration token %.40s", p);
		*eq = 0;
		const char *k = p, *v = eq + 1;
		if (!strcmp(k, "id"))
			c->id = v;
		else if (!strcmp(k, "keyring"))
			c->keyring = num(v, 10, k);
		else if (!strcmp(k, "ns"))
			c->ns = num(v, 10, k);
		else if (!strcmp(k, "cg")) {
			c->cgroups = grow(c->cgroups, c->ncgroups, sizeof(char *));
			c->cgroups[c->ncgroups++] = v;
		} else if (!strcmp(k, "cg2"))
			c->cgroup2 = v;
		else if (!strcmp(k, "oom"))
			c->oom = v;
		else if (!strcmp(k, "rlimit")) {
			char tmp[128];
			snprintf(tmp, sizeof(tmp), "%s", v);
			char *a = strchr(tmp, ':'), *b = a ? strchr(a + 1, ':') : NULL;
			if (!a || !b)
				fail("bad rlimit %s", v);
			*a++ = 0;
			*b++ = 0;
			c->rlimits = grow(c->rlimits, c->nrlimits, sizeof(struct rlim));
			struct rlim *r = &c->rlimits[c->nrlimits++];
			r->res = num(tmp, 10, k);
			r->lim.rlim_cur = num(a, 10, k);
			r->lim.rlim_max = num(b, 10, k);
		} else if (!strcmp(k, "umask")) {
			c->has_umask = 1;
			c->umask = num(v, 10, k);
		} else if (!strcmp(k, "uid"))
			c->uid = num(v, 10, k);
		else if (!strcmp(k, "gid"))
			c->gid = num(v, 10, k);
		else if (!strcmp(k, "group")) {
			c->groups = grow(c->groups, c->ngroups, sizeof(gid_t));
			c->groups[c->ngroups++] = num(v, 10, k);
		} else if (!strcmp(k, "setgroups"))
			c->setgroups = num(v, 10, k);
		else if (!strcmp(k, "capb"))
			c->capb = num(v, 16, k);
		else if (!strcmp(k, "cape"))
			c->cape = num(v, 16, k);
		else if (!strcmp(k, "capp"))
			c->capp = num(v, 16, k);
		else if (!strcmp(k, "capi"))
			c->capi = num(v, 16, k);
		else if (!strcmp(k, "capa"))
			c->capa = num(v, 16, k);
		else if (!strcmp(k, "nnp"))
			c->nnp = num(v, 10, k);
		else if (!strcmp(k, "apparmor"))
			c->apparmor = v;
		else if (!strcmp(k, "bpf")) {
			c->has_bpf = 1;
			c->bpf_flags = num(v, 10, k);
		} else if (!strcmp(k, "cwd"))
			c->cwd = v;
		else if (!strcmp(k, "arg")) {
			c->args = grow(c->args, c->nargs + 1, sizeof(char *));
			c->args[c->nargs++] = (char *)v;
		} else if (!strcmp(k, "env")) {
			c->env = grow(c->env, c->nenv + 1, sizeof(char *));
			c->env[c->nenv++] = (char *)v;
		} else
			fail("unknown exec configuration key %s", k);
	}
	if (c->nargs == 0)
		fail("exec needs a command");
	c->args[c->nargs] = NULL;
	c->env = grow(c->env, c->nenv + 1, sizeof(char *));
	c->env[c->nenv] = NULL;
	if (c->has_bpf) {
		size_t n;
		char *prog = read_all(BPF_FD, &n);
		if (n == 0 || n % sizeof(struct sock_filter) || n / sizeof(struct sock_filter) > BPF_MAXINSNS)
			fail("bad seccomp program of %zu bytes", n);
		c->bpf = (struct sock_filter *)prog;
		c->bpf_len = n / sizeof(struct sock_filter);
		close(BPF_FD);
	}
}

static void write_file(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		fail("open %s: %s", path, errstr(errno));
	ssize_t n = write(fd, data, strlen(data));
	int err = errno;
	close(fd);
	if (n != (ssize_t)strlen(data))
		fail("write %s to %s: %s", data, path, n < 0 ? errstr(err) : "short write");
}

// join_cgroups moves the (single-threaded) helper into each cgroup v1
// directory. "0" into tasks moves the calling thread without taking the
// threadgroup lock, whose write side waits for an RCU grace period; for a
// process of one thread it is the same membership as cgroup.procs gives.
static void join_cgroups(struct config *c)
{
	char path[PATH_MAX];
	for (int i = 0; i < c->ncgroups; i++) {
		if (snprintf(path, sizeof(path), "%s/tasks", c->cgroups[i]) >= (int)sizeof(path))
			fail("cgroup path too long: %s", c->cgroups[i]);
		write_file(path, "0");
	}
}

static int last_cap(void)
{
	char buf[16] = {0};
	int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fail("open cap_last_cap: %s", errstr(errno));
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		fail("read cap_last_cap");
	return atoi(buf);
}

// setgroups_denied is runc's check of /proc/self/setgroups ("deny" in a
// user namespace whose setgroups(2) was denied), on the helper's own file.
static int setgroups_denied(void)
{
	char sg[16] = {0};
	int fd = open("/proc/self/setgroups", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, sg, sizeof(sg) - 1);
		(void)n;
		close(fd);
	}
	return strncmp(sg, "deny", 4) == 0;
}

// How much of the container's /etc/passwd the HOME lookup reads. A line
// must fit bufio.Scanner's default 64 KiB token buffer, newline included,
// as in moby/sys/user's ParsePasswdFilter. The file is bounded at the
// 10 MiB that moby/sys/user allows the user files it bounds (its LookupUid,
// which runc's exec uses, reads a regular file to its end).
#define PASSWD_LINE_MAX 65536
#define PASSWD_FILE_MAX (10 << 20)

// utf8_space_len is how many bytes of a Unicode white space (Go's
// unicode.IsSpace) p starts with (at_end: ends with), 0 if none.
static size_t utf8_space_len(const unsigned char *p, size_t n, int at_end)
{
	static const char *const multi[] = {
		"\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\x80", "\xe2\x80\x81",
		"\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85", "\xe2\x80\x86",
		"\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89", "\xe2\x80\x8a", "\xe2\x80\xa8",
		"\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80",
	};
	if (n == 0)
		return 0;
	unsigned char b = at_end ? p[n - 1] : p[0];
	if (b == ' ' || (b >= '\t' && b <= '\r'))
		return 1;
	for (size_t i = 0; i < sizeof(multi) / sizeof(multi[0]); i++) {
		size_t l = strlen(multi[i]);
		if (l <= n && !memcmp(at_end ? p + n - l : p, multi[i], l))
			return l;
	}
	return 0;
}

// go_atoi is strconv.Atoi with its error ignored, as moby/sys/user's
// parseLine does: 0 for a syntax error; -1 for any value that is no UID
// (negative, or above 32 bits, where Go's int would not equal one either).
static long long go_atoi(const unsigned char *p, size_t n)
{
	int neg = 0;
	if (n > 0 && (p[0] == '+' || p[0] == '-')) {
		neg = p[0] == '-';
		p++, n--;
	}
	if (n == 0)
		return 0;
	unsigned long long v = 0;
	int big = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return 0;
		if (!big)
			v = v * 10 + (p[i] - '0');
		big |= v > 0xffffffffULL;
	}
	if (big || (neg && v != 0))
		return -1;
	return (long long)v;
}

// passwd_line is one line for passwd_home: moby/sys/user's parseLine on
// the line with its white space trimmed; missing fields stay empty (UID 0).
// It returns the line's home (malloc'd) when its UID is uid, else NULL.
static char *passwd_line(const unsigned char *p, size_t n, uid_t uid)
{
	size_t l;
	while ((l = utf8_space_len(p, n, 0)) > 0)
		p += l, n -= l;
	while ((l = utf8_space_len(p, n, 1)) > 0)
		n -= l;
	if (n == 0)
		return NULL;
	const unsigned char *field[7] = {0};
	size_t flen[7] = {0};
	size_t nf = 0, start = 0;
	for (size_t i = 0; i <= n && nf < 7; i++)
		if (i == n || p[i] == ':') {
			field[nf] = p + start;
			flen[nf++] = i - start;
			start = i + 1;
		}
	long long id = nf > 2 ? go_atoi(field[2], flen[2]) : 0;
	if (id < 0 || (unsigned long long)id != uid)
		return NULL;
	char *home = strndup(nf > 5 ? (const char *)field[5] : "", nf > 5 ? flen[5] : 0);
	if (!home)
		fail("out of memory");
	return home;
}

// passwd_home is runc's getUserHome on moby/sys/user's LookupUid: the home
// of the first /etc/passwd entry for uid; "/" when there is none, or the
// file cannot be read to its end, or any of its lines is too long. Where
// Go blocks for ever opening a FIFO or reading a terminal, this opens
// without blocking and takes anything but a regular file as unreadable;
// for /dev/zero or /dev/urandom Go ends at the line limit, with "/" too.
static const char *passwd_home(uid_t uid)
{
	static unsigned char buf[PASSWD_LINE_MAX];
	int fd = open("/etc/passwd", O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return "/";
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return "/";
	}
	char *home = NULL;
	size_t len = 0, total = 0;
	int eof = 0, bad = 0;
	while (!bad) {
		unsigned char *nl = memchr(buf, '\n', len);
		if (nl) {
			char *h = passwd_line(buf, nl - buf, uid);
			if (h && !home)
				home = h;
			else
				free(h);
			len -= nl + 1 - buf;
			memmove(buf, nl + 1, len);
			continue;
		}
		if (eof) {
			char *h = passwd_line(buf, len, uid);
			if (h && !home)
				home = h;
			else
				free(h);
			break;
		}
		if (len == sizeof(buf) || total > PASSWD_FILE_MAX) {
			bad = 1; // bufio.Scanner: token too long
			break;
		}
		ssize_t r = read(fd, buf + len, sizeof(buf) - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			bad = 1;
		else if (r == 0)
			eof = 1;
		else {
			len += r;
			total += r;
		}
	}
	close(fd);
	if (bad || !home) {
		free(home);
		return "/";
	}
	return home;
}

// prepare_env is libcontainer's prepareEnv: the last of duplicate keys wins,
// in the order of their last occurrence; an empty HOME is dropped; HOME
// comes from the container's /etc/passwd (passwd_home) when not set.
static char **prepare_env(struct config *c, const char **path)
{
	char **out = calloc(c->nenv + 2, sizeof(char *));
	if (!out)
		fail("out of memory");
	int n = 0, home = 0;
	*path = NULL;
	for (int i = c->nenv - 1; i >= 0; i--) {
		char *kv = c->env[i];
		char *eq = strchr(kv, '=');
		if (!eq)
			fail("invalid environment variable: missing '='");
		if (eq == kv)
			fail("invalid environment variable: name cannot be empty");
		size_t klen = eq - kv;
		int dup = 0;
		for (int j = i + 1; j < c->nenv && !dup; j++)
			dup = !strncmp(c->env[j], kv, klen + 1);
		if (dup)
			continue;
		if (klen == 4 && !strncmp(kv, "PATH", 4))
			*path = eq + 1;
		if (klen == 4 && !strncmp(kv, "HOME", 4)) {
			if (eq[1] == 0)
				continue;
			home = 1;
		}
		out[n++] = kv;
	}
	for (int i = 0, j = n - 1; i < j; i++, j--) {
		char *t = out[i];
		out[i] = out[j];
		out[j] = t;
	}
	if (!home) {
		const char *dir = passwd_home(c->uid);
		char *h = malloc(strlen(dir) + 6);
		if (!h)
			fail("out of memory");
		sprintf(h, "HOME=%s", dir);
		out[n++] = h;
	}
	out[n] = NULL;
	return out;
}

// executable is Go's findExecutable, as runc's exec.LookPath uses it; the
// error as Go words it: "stat PATH: <errno>" for stat's, else the errno.
static int executable(const char *file, char *msg, size_t len)
{
	struct stat st;
	if (stat(file, &st) < 0) {
		snprintf(msg, len, "stat %s: %s", file, errstr(errno));
		return -1;
	}
	int err = 0;
	if (S_ISDIR(st.st_mode))
		err = EISDIR;
	else if (faccessat(AT_FDCWD, file, X_OK, AT_EACCESS) < 0) {
		err = errno;
		if (err == ENOSYS || err == EPERM)
			err = (st.st_mode & 0111) ? 0 : EACCES;
	}
	if (err)
		snprintf(msg, len, "%s", errstr(err));
	return err ? -1 : 0;
}

// look_path is Go's exec.LookPath as runc's setns init calls it, with the
// container's PATH (none: nothing is found without a slash).
static char *look_path(const char *name, const char *path)
{
	char msg[PATH_MAX + 128];
	if (strchr(name, '/')) {
		if (executable(name, msg, sizeof(msg)) < 0)
			fail("exec: \"%s\": %s", name, msg);
		return (char *)name;
	}
	if (path) {
		const char *p = path;
		for (;;) {
			const char *colon = strchr(p, ':');
			size_t len = colon ? (size_t)(colon - p) : strlen(p);
			char dir[PATH_MAX];
			if (len == 0)
				strcpy(dir, ".");
			else
				snprintf(dir, sizeof(dir), "%.*s", (int)len, p);
			char *full = malloc(strlen(dir) + strlen(name) + 2);
			if (!full)
				fail("out of memory");
			sprintf(full, "%s/%s", dir, name);
			if (executable(full, msg, sizeof(msg)) == 0) {
				if (dir[0] != '/')
					fail("exec: \"%s\": cannot run executable found relative to current directory", name);
				return full;
			}
			free(full);
			if (!colon)
				break;
			p = colon + 1;
		}
	}
	fail("exec: \"%s\": executable file not found in $PATH", name);
}

static void load_seccomp(struct config *c)
{
	struct sock_fprog prog = {.len = c->bpf_len, .filter = c->bpf};
	int r;
	if (c->bpf_flags == 0)
		r = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
	else
		r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, c->bpf_flags, &prog);
	if (r < 0)
		fail("error loading seccomp filter: %s", errstr(errno));
}

static void apply_caps(struct config *c, int last)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2] = {
		{.effective = c->cape, .permitted = c->capp, .inheritable = c->capi},
		{.effective = c->cape >> 32, .permitted = c->capp >> 32, .inheritable = c->capi >> 32},
	};
	if (syscall(SYS_capset, &hdr, data) < 0)
		fail("can't apply capabilities: capset: %s", errstr(errno));
	// Ambient capabilities one by one, errors ignored, as runc does.
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		fail("reset ambient capabilities: %s", errstr(errno));
	for (int i = 0; i <= last && i < 64; i++)
		if (c->capa & (1ULL << i))
			prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, i, 0, 0);
}

static int is_dev_null(struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(1, 3);
}

// proc_fd is a private procfs of the container's PID namespace, made by
// the exec process only when it has an AppArmor profile to set: it writes
// its own exec attribute through it, neither through the container's
// /proc, which a container with CAP_SYS_ADMIN may replace, nor through the
// host's, which a container with CAP_SYS_PTRACE could reach through
// /proc/<exec>/fd/N (and the host's root through its 1/root).
static int proc_fd = -1;

// procfs_failed reports a failed step of open_private_proc.
static void __attribute__((noreturn)) procfs_failed(const char *step)
{
	int e = errno;
	// Refused by the kernel or a policy (no new mount API, a seccomp
	// filter, a user namespace without the right to mount proc): the
	// daemon stops trying. Anything else (ENOMEM in the container's
	// memory cgroup) only sends this exec through libcontainer.
	if (e == ENOSYS || e == EPERM || e == EACCES || e == EINVAL)
		fail("private procfs unavailable: %s: %s", step, errstr(e));
	fail("private procfs: %s: %s", step, errstr(e));
}

// open_private_proc mounts a procfs of the caller's active PID namespace,
// detached (fsmount: never attached to a mount table), with only the PID
// directories (subset=pid: no /proc/sys, no sysrq-trigger) and only the
// processes its user may ptrace (hidepid=ptraceable). procfs takes the
// caller's active PID namespace: this runs in the exec process, born in
// the container's. It runs before the container's seccomp filter is
// loaded and the rlimits are set, which may refuse it. A failure is
// reported before anything of the container runs: the daemon then execs
// through libcontainer, as runc (sandbox/exec/fastexec.go), and never
// through another /proc.
static void open_private_proc(void)
{
	int fs = syscall(SYS_fsopen, "proc", FSOPEN_CLOEXEC);
	if (fs < 0)
		procfs_failed("fsopen proc");
	if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "subset", "pid", 0) < 0)
		procfs_failed("subset=pid");
	if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "hidepid", "ptraceable", 0) < 0)
		procfs_failed("hidepid=ptraceable");
	if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		procfs_failed("create");
	proc_fd = syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
	if (proc_fd < 0)
		procfs_failed("fsmount");
	close(fs);
}

// apply_apparmor is libcontainer's apparmor.ApplyProfile
// (aa_change_onexec): the profile takes effect at the execve. Newer kernels
// have the attribute under attr/apparmor/, older ones only attr/exec.
static void apply_apparmor(const char *profile)
{
	int fd = openat(proc_fd, "thread-self/attr/apparmor/exec", O_WRONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		fd = openat(proc_fd, "thread-self/attr/exec", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		fail("apparmor failed to apply profile: open exec attribute: %s", errstr(errno));
	char buf[4096];
	int n = snprintf(buf, sizeof(buf), "exec %s", profile);
	if (n < 0 || n >= (int)sizeof(buf))
		fail("apparmor failed to apply profile: name too long");
	if (write(fd, buf, n) != n)
		fail("apparmor failed to apply profile: %s", errstr(errno));
	close(fd);
	// Its only use: nothing holds it for the rest of the start.
	close(proc_fd);
	proc_fd = -1;
}

// exec_process is the exec process, in the container's namespaces and
// cgroups: what runc's nsexec stage 2 and setns init do, then execve.
static void exec_process(struct config *c, int last, int cgns)
{
	// Born in the container's cgroup: its cgroup namespace can be joined
	// now (see the top of this file).
	if (cgns && setns(PID_FD, CLONE_NEWCGROUP) < 0)
		fail("join the cgroup namespace of the container's init: %s", errstr(errno));
	close(PID_FD);
	if (c->apparmor)
		open_private_proc();
	if (setsid() < 0)
		fail("setsid failed: %s", errstr(errno));
	if (setuid(0) < 0 || setgid(0) < 0)
		fail("setuid/setgid 0: %s", errstr(errno));
	if (c->setgroups && setgroups(0, NULL) < 0)
		fail("setgroups failed: %s", errstr(errno));
	if (c->keyring && c->id) {
		char name[256];
		snprintf(name, sizeof(name), "_ses.%s", c->id);
		if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name) < 0 && errno != ENOSYS)
			fail("unable to join session keyring: %s", errstr(errno));
	}
	for (int i = 0; i < c->nrlimits; i++)
		if (setrlimit(c->rlimits[i].res, &c->rlimits[i].lim) < 0)
			fail("error setting rlimit type %d: %s", c->rlimits[i].res, errstr(errno));
	if (c->nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail("set no_new_privs: %s", errstr(errno));
	if (c->has_umask)
		umask(c->umask);
	// libcontainer resets the affinity inherited from the daemon.
	{
		static unsigned char all[64 * 1024 / 8];
		memset(all, 0xff, sizeof(all));
		syscall(SYS_sched_setaffinity, 0, sizeof(all), all);
	}
	if (c->has_bpf && !c->nnp)
		load_seccomp(c);

	// finalizeNamespace
	int chdir_later = 0;
	if (c->cwd && c->cwd[0]) {
		if (chdir(c->cwd) < 0) {
			if (errno != EACCES && errno != EPERM)
				fail("chdir to cwd (\"%s\") set in config.json failed: %s", c->cwd, errstr(errno));
			chdir_later = 1;
		}
	}
	const char *path;
	char **env = prepare_env(c, &path);
	for (int i = 0; i <= last; i++)
		if (i >= 64 || !(c->capb & (1ULL << i)))
			if (prctl(PR_CAPBSET_DROP, i, 0, 0, 0) < 0 && errno != EINVAL)
				fail("unable to apply bounding set: %s", errstr(errno));
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		fail("unable to set keep caps: %s", errstr(errno));
	for (int fd = 0; fd < 3; fd++) { // fixStdioPermissions
		struct stat st;
		if (fstat(fd, &st) < 0)
			fail("fstat fd %d: %s", fd, errstr(errno));
		if (st.st_uid == c->uid || is_dev_null(&st))
			continue;
		if (fchown(fd, c->uid, -1) < 0 && errno != EPERM && errno != EROFS)
			fail("chown fd %d: %s", fd, errstr(errno));
	}
	if (c->setgroups && !c->setgroups_denied && setgroups(c->ngroups, c->groups) < 0)
		fail("setgroups: %s", errstr(errno));
	if (setgid(c->gid) < 0)
		fail("setgid %u: %s", c->gid, errstr(errno));
	if (setuid(c->uid) < 0)
		fail("setuid %u: %s", c->uid, errstr(errno));
	if (chdir_later && chdir(c->cwd) < 0)
		fail("chdir to cwd (\"%s\") set in config.json failed: %s", c->cwd, errstr(errno));
	{
		char wd[PATH_MAX];
		if (!getcwd(wd, sizeof(wd))) {
			if (errno == ENOENT)
				fail("current working directory is outside of container mount namespace root -- possible container breakout detected");
			fail("failed to verify if current working directory is safe: %s", errstr(errno));
		}
		if (wd[0] != '/')
			fail("current working directory is not absolute -- possible container breakout detected: cwd is \"%s\"", wd);
	}
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		fail("unable to clear keep caps: %s", errstr(errno));
	apply_caps(c, last);
	// After finalizeNamespace and before the seccomp filter, as runc's
	// setns init applies it.
	if (c->apparmor)
		apply_apparmor(c->apparmor);

	char *name = look_path(c->args[0], path);
	// Nothing of the helper's reaches the command; the report pipe closes
	// at the exec, which tells the daemon it happened. Before seccomp, which
	// may refuse close_range.
	if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		long max = sysconf(_SC_OPEN_MAX);
		for (long fd = 3; fd < (max > 0 && max < (1 << 20) ? max : 1 << 20); fd++)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	if (c->has_bpf && c->nnp)
		load_seccomp(c);
	execve(name, c->args, env);
	fail("exec %s: %s", name, errstr(errno)); // runc's linux.Exec words it so
}

static int enter_main(void)
{
	// Non-dumpable from the start, as runc's nsexec: nothing in the
	// container's namespaces can ptrace it or open its /proc files, and the
	// exec process inherits it until its execve. (A container with
	// CAP_SYS_PTRACE in the host's user namespace still can; so it can
	// runc's setns init.)
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		fail("set process as non-dumpable: %s", errstr(errno));
	struct config c;
	size_t len;
	char *buf = read_all(CONFIG_FD, &len);
	close(CONFIG_FD);
	parse(&c, buf, len);
	int last = last_cap();

	if (c.oom)
		write_file("/proc/self/oom_score_adj", c.oom);
	// Whether setgroups(2) is allowed, read here, from the host's /proc:
	// the exec process is in this user namespace (the helper joins no
	// other), and it must read nothing below the container's /proc, which
	// a container with CAP_SYS_ADMIN may replace (a FIFO there held every
	// exec until its timeout).
	c.setgroups_denied = setgroups_denied();
	// Cgroups first, in the host's mount namespace.
	join_cgroups(&c);
	int cg = -1, cgns = 0;
	if (c.cgroup2) {
		cg = open(c.cgroup2, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (cg < 0)
			fail("open cgroup %s: %s", c.cgroup2, errstr(errno));
		cgns = c.ns & CLONE_NEWCGROUP;
	}
	if ((c.ns & ~cgns) && setns(PID_FD, c.ns & ~cgns) < 0)
		fail("join the namespaces of the container's init: %s", errstr(errno));

	// CLONE_PARENT: the daemon is the exec process's parent, which waits
	// for it and kills it at a timeout.
	pid_t pid;
	if (c.cgroup2) {
		// No exit_signal with CLONE_PARENT (EINVAL): the child gets
		// the helper's, SIGCHLD.
		struct clone_args args = {
			.flags = CLONE_PARENT | CLONE_INTO_CGROUP,
			.cgroup = cg,
		};
		pid = syscall(SYS_clone3, &args, sizeof(args));
		if (pid < 0 && (errno == ENOSYS || errno == E2BIG))
			// ENOSYS: no clone3; E2BIG: a clone3 without the cgroup
			// field (5.3-5.6).
			fail("clone3 unavailable: CLONE_INTO_CGROUP %s: %s", c.cgroup2, errstr(errno));
		if (pid == 0)
			close(cg); // the exec process holds no cgroup fd
	} else
		pid = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, NULL, NULL, NULL, 0);
	if (pid == 0)
		exec_process(&c, last, cgns);
	if (cg >= 0)
		close(cg);
	close(PID_FD);
	if (pid < 0)
		fail("fork the exec process: %s", errstr(errno));
	char msg[32];
	int n = snprintf(msg, sizeof(msg), "pid %d\n", pid);
	if (write(REPORT_FD, msg, n) != n) {
		kill(pid, SIGKILL);
		return 1;
	}
	return 0;
}

void peapod_enter_constructor(int argc, char **argv, char **envp)
{
	(void)envp;
	if (argc < 2 || strcmp(argv[1], "exec-enter") != 0)
		return;
	_exit(enter_main());
}
