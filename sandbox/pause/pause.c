// The pause process and pod keeper. See pause.go for why it is C in a
// constructor, and keeper.c for the keeper's event loop and protocol.
//
// argv: peapod pod-pause [-h HOSTNAME] [-s KEY=VALUE]... [-P] [-U UIDMAP -G GIDMAP] [-S SOCKET]
// It is started by peapod already inside the pod's new namespaces (clone
// flags set by the parent), in the host PID namespace. It sets the hostname
// and the namespaced sysctls, becomes the child subreaper, and with -P forks
// the pod's PID holder: PID 1 of a new PID namespace, which the pod's
// containers join through the keeper's fd of it (never /proc/<holder>,
// whose PID may be reused). The holder confines itself (holder_main).
//
// With -U and -G (a pod with its own user namespace; the maps are
// /proc/<pid>/uid_map lines) the parent creates no namespace: the keeper
// clones the holder into a new user namespace together with new network,
// IPC and UTS namespaces (and PID with -P), so that all of them are owned by
// the user namespace, writes the holder's maps and joins its network, IPC
// and UTS namespaces itself. The keeper stays in the host user namespace:
// it keeps root's power over the host files it writes (logs, exit files,
// its socket) and forks the runners, which need it. Containers join the
// user namespace through the keeper's fd, too. With -S it listens for the
// daemon on a unix socket. It reports "ok <holder pid or 0>" on fd 3 (or an
// error line, and exits 1), then runs the keeper loop: it reaps every child,
// serves the socket, and exits 0 on SIGTERM or SIGINT.
#include "keeper.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <grp.h>
#include <stddef.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sched.h>
#include <unistd.h>

static void report(int fd, const char *msg) {
	if (fd < 0)
		return;
	size_t n = strlen(msg);
	while (n > 0) {
		ssize_t w = write(fd, msg, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		msg += w;
		n -= (size_t)w;
	}
}

static void __attribute__((noreturn)) fail(int fd, const char *what, const char *arg) {
	char buf[512];
	snprintf(buf, sizeof buf, "%s%s%s: %s\n", what, arg[0] ? " " : "", arg, errno_text(errno));
	report(fd, buf);
	_exit(1);
}

// failpoint_set tells whether name is listed in PEAPOD_FAILPOINTS
// (comma-separated; sandbox/failpoint.go). Unset in every real deployment.
static int failpoint_set(const char *name) {
	const char *v = getenv("PEAPOD_FAILPOINTS");
	size_t n = strlen(name);
	while (v != NULL && *v != '\0') {
		while (*v == ' ' || *v == ',')
			v++;
		if (strncmp(v, name, n) == 0 && (v[n] == '\0' || v[n] == ',' || v[n] == ' '))
			return 1;
		v = strchr(v, ',');
	}
	return 0;
}

// set_sysctl writes VALUE to /proc/sys/KEY, KEY in dotted form.
static int set_sysctl(const char *kv) {
	const char *eq = strchr(kv, '=');
	if (eq == NULL || eq == kv) {
		errno = EINVAL;
		return -1;
	}
	char path[512] = "/proc/sys/";
	size_t off = strlen(path), klen = (size_t)(eq - kv);
	if (off + klen >= sizeof path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (size_t i = 0; i < klen; i++)
		path[off + i] = kv[i] == '.' ? '/' : kv[i];
	path[off + klen] = '\0';
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	const char *val = eq + 1;
	size_t vlen = strlen(val);
	ssize_t w;
	do
		w = write(fd, val, vlen);
	while (w < 0 && errno == EINTR);
	int saved = errno;
	close(fd);
	// A sysctl takes its value in one write; a short one set a cut value
	// (a second write at an offset is not a continuation for every key).
	if (w >= 0 && (size_t)w != vlen) {
		errno = EIO;
		return -1;
	}
	errno = saved;
	return w < 0 ? -1 : 0;
}

// is_ipc_sysctl tells the IPC namespace's keys, which the kernel lets only
// the namespace's root uid write, not the host's root (ipc_permissions).
static int is_ipc_sysctl(const char *kv) {
	return strncmp(kv, "fs.mqueue.", 10) == 0 || strncmp(kv, "kernel.msg", 10) == 0 ||
	       strncmp(kv, "kernel.shm", 10) == 0 || strncmp(kv, "kernel.sem=", 11) == 0;
}

// map_root is the host ID that ID 0 maps to in a uid_map/gid_map text.
static long map_root(const char *map) {
	unsigned long inside, outside, len;
	if (sscanf(map, "%lu %lu %lu", &inside, &outside, &len) != 3 || inside != 0)
		return -1;
	return (long)outside;
}

// set_sysctl_as writes the sysctl with the effective uid and gid switched
// to uid and gid (the user namespace's root) for the time of the write.
static int set_sysctl_as(const char *kv, long uid, long gid) {
	if (uid < 0 || gid < 0) {
		errno = EINVAL;
		return -1;
	}
	if (setresgid(-1, (gid_t)gid, -1) < 0)
		return -1;
	if (setresuid(-1, (uid_t)uid, -1) < 0) {
		int saved = errno;
		setresgid(-1, 0, -1);
		errno = saved;
		return -1;
	}
	int r = set_sysctl(kv);
	int saved = errno;
	// Back to root: the effective capabilities come back with euid 0.
	if (setresuid(-1, 0, -1) < 0 || setresgid(-1, 0, -1) < 0)
		_exit(1);
	errno = saved;
	return r;
}

static void on_child(int sig) { (void)sig; }

// The argv and environ strings the kernel shows as /proc/PID/cmdline and
// /proc/PID/environ (set by the constructor). The holder overwrites its
// copy so that a container sharing its PID namespace sees "/pause", not
// host paths.
static char *arg_area, *env_area;
static size_t arg_len, env_len;

// string_area is the contiguous run of the strings v[0], v[1], ... in memory.
static void string_area(char **v, char **start, size_t *len) {
	*start = NULL;
	*len = 0;
	if (v == NULL || v[0] == NULL)
		return;
	char *end = v[0];
	for (int i = 0; v[i] != NULL && v[i] == end; i++)
		end = v[i] + strlen(v[i]) + 1;
	*start = v[0];
	*len = (size_t)(end - v[0]);
}

// holder_rename makes the holder's cmdline read "/pause" and its environ
// empty. The last byte of the argv area is left non-NUL: the kernel then
// takes the area as rewritten by setproctitle and shows it up to the first
// NUL (get_mm_cmdline), without trailing NULs. PR_SET_MM would need
// CAP_SYS_RESOURCE.
static void holder_rename(void) {
	static const char title[] = "/pause";
	if (arg_area != NULL && arg_len > sizeof title) {
		memset(arg_area, 0, arg_len);
		memcpy(arg_area, title, sizeof title);
		arg_area[arg_len - 1] = ' ';
	}
	if (env_area != NULL)
		memset(env_area, 0, env_len);
	(void)prctl(PR_SET_NAME, "pause", 0, 0, 0);
}

#if defined(__x86_64__)
#define HOLDER_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define HOLDER_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

// holder_seccomp allows the holder only the system calls of its loop
// (sigsuspend, reaping, returning from the SIGCHLD handler, exiting) and a
// write and close of the status descriptor. Anything else kills it: the
// holder's code makes no other call, so one can only come from injected
// code or a libc that changed, and a dead holder makes the pod NotReady
// (the kubelet recreates it), where an EPERM would leave the loop spinning.
static int holder_seccomp(int status_fd) {
#ifndef HOLDER_AUDIT_ARCH
	(void)status_fd;
	errno = ENOSYS;
	return -1;
#else
#define LD_ABS(off) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (off))
#define ALLOW_NR(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
	struct sock_filter f[] = {
		LD_ABS(offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, HOLDER_AUDIT_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		LD_ABS(offsetof(struct seccomp_data, nr)),
#ifdef __x86_64__
		// x32 system calls share the arch value, with this bit set.
		BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
#endif
		ALLOW_NR(__NR_rt_sigsuspend),
		ALLOW_NR(__NR_rt_sigreturn),
		ALLOW_NR(__NR_restart_syscall),
		ALLOW_NR(__NR_wait4),
		ALLOW_NR(__NR_waitid),
		ALLOW_NR(__NR_exit),
		ALLOW_NR(__NR_exit_group),
		// write and close only on the status descriptor.
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_write, 1, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_close, 0, 3),
		LD_ABS(offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)status_fd, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	};
#undef ALLOW_NR
#undef LD_ABS
	struct sock_fprog prog = {.len = (unsigned short)(sizeof f / sizeof f[0]), .filter = f};
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
#endif
}

// holder_pivot gives the holder a mount namespace of its own whose root is
// an empty read-only tmpfs, so that /proc/<holder>/root and cwd lead
// nowhere. The tmpfs goes on /proc, a directory every host has, in the
// private copy of the mount tree; the host's tree is then detached. A new
// cgroup namespace hides the host's cgroup paths from it as well.
static int holder_pivot(const char **what) {
	*what = "unshare mount and cgroup namespaces";
	if (unshare(CLONE_NEWNS | CLONE_NEWCGROUP) < 0)
		return -1;
	// Nothing mounted here may propagate back to the host. "/" is a mount
	// point unless peapod itself runs in a chroot (EINVAL); then /proc,
	// a mount point wherever peapod runs, is made private instead, and
	// the holder is chrooted, not pivoted (pivot_root refuses a chroot).
	*what = "make / private";
	int rooted = mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
	if (!rooted) {
		if (errno != EINVAL)
			return -1;
		*what = "make /proc private";
		if (mount(NULL, "/proc", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			return -1;
	}
	*what = "mount the empty root";
	if (mount("pause", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
	          "size=4k,nr_inodes=2,mode=0555") < 0)
		return -1;
	*what = "pivot into the empty root";
	if (chdir("/proc") < 0)
		return -1;
	if (rooted) {
		if (syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0)
			return -1;
	} else if (chroot(".") < 0) {
		// Without CAP_SYS_CHROOT (dropped next) and with no descriptor
		// left, the holder cannot leave this root.
		return -1;
	}
	return chdir("/");
}

// holder_drop_privileges leaves the holder no capability, not even in the
// bounding set, as uid and gid 65534 (nobody; in a user-namespaced pod the
// pod's 65534 when the mappings reach that far, else the pod's root without
// capabilities), with no_new_privs and not dumpable.
static int holder_drop_privileges(int in_userns, const char **what) {
	*what = "drop the bounding set";
	for (int cap = 0; cap <= 63; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL)
				break; // beyond the kernel's last capability
			return -1;
		}
	*what = "clear ambient capabilities";
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return -1;
	*what = "drop supplementary groups";
	if (setgroups(0, NULL) < 0)
		return -1;
	*what = "become nobody";
	if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0) {
		if (!in_userns || errno != EINVAL)
			return -1;
		// 65534 is not mapped in the pod's user namespace: stay its
		// root, with every capability cleared below.
	}
	*what = "clear capabilities";
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof data);
	if (syscall(SYS_capset, &hdr, data) < 0)
		return -1;
	*what = "set no_new_privs";
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	*what = "set not dumpable";
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return -1;
	return 0;
}

static void holder_report(int fd, const char *what) {
	char buf[256];
	if (what == NULL)
		snprintf(buf, sizeof buf, "ok\n");
	else
		snprintf(buf, sizeof buf, "holder: %s: %s\n", what, errno_text(errno));
	report(fd, buf);
}

// holder_main is the PID holder (or, in a user-namespaced pod without a
// shared PID namespace, the user namespace holder): PID 1 of the pod's PID
// namespace, which reaps whatever is orphaned there. It waits for the
// keeper's go on ctl (sent once the keeper holds its namespaces and has
// written its ID maps), confines itself, reports "ok" or the failed step on
// ctl and loops. It installs no SIGTERM or SIGINT handler: PID 1 of a PID
// namespace ignores default-handled signals sent from inside it, so a
// container cannot end it; only SIGKILL from the host or the keeper's death
// (PDEATHSIG) does. alive is the read end of a pipe whose write end only the
// keeper holds: EOF there means the keeper died before PDEATHSIG was set.
static void __attribute__((noreturn)) holder_main(int alive, int keeper_end, int ctl, int keeper_ctl, int in_userns) {
	close(keeper_end);
	close(keeper_ctl);
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	sigaction(SIGTERM, &dfl, NULL);
	sigaction(SIGINT, &dfl, NULL);
	sigaction(SIGPIPE, &dfl, NULL);
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_SETMASK, &chld, NULL); // SIGCHLD only inside sigsuspend
	holder_rename();
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		_exit(1);
	char go;
	ssize_t n;
	do
		n = read(ctl, &go, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		_exit(1); // the keeper gave up on us
	const char *what = NULL;
	if (holder_pivot(&what) < 0 || holder_drop_privileges(in_userns, &what) < 0) {
		holder_report(ctl, what);
		_exit(1);
	}
	// The credential change cleared PDEATHSIG: set it again, then make
	// sure the keeper did not die in between.
	// A signal during the poll (EINTR) is not the keeper's death: ask again.
	struct pollfd pf = {.fd = alive, .events = POLLIN};
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		_exit(1);
	int dead;
	do
		dead = poll(&pf, 1, 0);
	while (dead < 0 && errno == EINTR);
	if (dead != 0)
		_exit(1);
	// Hold no fd but ctl: not the alive pipe, not the keeper's.
	if (ctl > 0 && syscall(SYS_close_range, 0U, (unsigned)ctl - 1, 0) < 0)
		_exit(1);
	if (syscall(SYS_close_range, (unsigned)ctl + 1, ~0U, 0) < 0)
		_exit(1);
	if (holder_seccomp(ctl) < 0) {
		holder_report(ctl, "install seccomp filter");
		_exit(1);
	}
	holder_report(ctl, NULL);
	close(ctl);
	sigset_t none;
	sigemptyset(&none);
	for (;;) {
		sigsuspend(&none);
		while (waitpid(-1, NULL, WNOHANG) > 0) {
		}
	}
}

// The holder's namespaces as the keeper holds them from the holder's birth
// on: the containers join these, never a /proc/<pid> path whose PID may be
// reused once the holder is gone. -1 when the pod has none.
static int holder_pidns = -1, holder_userns = -1;

// open_ns opens namespace kind of pid close-on-exec.
static int open_ns(pid_t pid, const char *kind) {
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, kind);
	return open(path, O_RDONLY | O_CLOEXEC);
}

struct holder {
	pid_t pid;
	int ctl; // the keeper's end of the go/status socket
};

// start_holder creates the holder with clone(flags): only the holder is in
// the new namespaces, the keeper's later children are not. It opens the
// holder's new PID and user namespaces while the holder is its unreaped
// child, so the PID cannot name another process yet.
static int start_holder(unsigned long flags, struct holder *h) {
	int p[2], sv[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		int saved = errno;
		close(p[0]);
		close(p[1]);
		errno = saved;
		return -1;
	}
	long r = syscall(SYS_clone, flags | SIGCHLD, 0UL, 0UL, 0UL, 0UL);
	if (r < 0) {
		int saved = errno;
		close(p[0]);
		close(p[1]);
		close(sv[0]);
		close(sv[1]);
		errno = saved;
		return -1;
	}
	if (r == 0)
		holder_main(p[0], p[1], sv[1], sv[0], (flags & CLONE_NEWUSER) != 0);
	close(p[0]); // p[1] stays open (close-on-exec) for the keeper's life
	close(sv[1]);
	h->pid = (pid_t)r;
	h->ctl = sv[0];
	if ((flags & CLONE_NEWPID) && (holder_pidns = open_ns(h->pid, "pid")) < 0)
		return -1;
	if ((flags & CLONE_NEWUSER) && (holder_userns = open_ns(h->pid, "user")) < 0)
		return -1;
	return 0;
}

// confine_holder lets the holder confine itself and waits for its report.
// On an error the message is in buf.
static int confine_holder(struct holder *h, char *buf, size_t size) {
	char go = 'g';
	size_t got = 0;
	if (write(h->ctl, &go, 1) != 1) {
		snprintf(buf, size, "holder: send go: %s", errno_text(errno));
		return -1;
	}
	while (got + 1 < size) {
		ssize_t n = read(h->ctl, buf + got, size - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	close(h->ctl);
	h->ctl = -1;
	char *nl = strchr(buf, '\n');
	if (nl != NULL)
		*nl = '\0';
	if (strcmp(buf, "ok") == 0)
		return 0;
	if (buf[0] == '\0')
		snprintf(buf, size, "holder: exited while confining itself");
	return -1;
}

// kill_holder ends a holder that failed or is no longer wanted.
static void kill_holder(struct holder *h) {
	if (h->pid > 0) {
		kill(h->pid, SIGKILL);
		waitpid(h->pid, NULL, 0);
		h->pid = 0;
	}
	if (h->ctl >= 0) {
		close(h->ctl);
		h->ctl = -1;
	}
}

// write_file writes data to path in one write(2), as /proc/<pid>/uid_map
// requires.
static int write_file(const char *path, const char *data) {
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = strlen(data);
	ssize_t w = write(fd, data, n);
	int saved = errno;
	close(fd);
	if (w >= 0 && (size_t)w != n)
		saved = EIO;
	errno = saved;
	return w < 0 || (size_t)w != n ? -1 : 0;
}

// join_ns moves the calling process into namespace kind of process pid.
static int join_ns(pid_t pid, const char *kind, int nstype) {
	int fd = open_ns(pid, kind);
	if (fd < 0)
		return -1;
	int r = setns(fd, nstype);
	int saved = errno;
	close(fd);
	errno = saved;
	return r;
}

// start_userns_holder clones the holder into a new user namespace with the
// pod's network, IPC, UTS (and with share_pid PID) namespaces, all owned by
// it, writes its maps and joins its network, IPC and UTS namespaces. On
// failure the holder is killed and the failing step is in *what.
static int start_userns_holder(int share_pid, const char *uid_map, const char *gid_map,
                               struct holder *h, const char **what) {
	unsigned long flags = CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
	if (share_pid)
		flags |= CLONE_NEWPID;
	*what = "create user namespace";
	if (start_holder(flags, h) < 0)
		goto fail;
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/uid_map", (int)h->pid);
	*what = "write uid_map";
	if (write_file(path, uid_map) < 0)
		goto fail;
	snprintf(path, sizeof path, "/proc/%d/gid_map", (int)h->pid);
	*what = "write gid_map";
	if (write_file(path, gid_map) < 0)
		goto fail;
	*what = "join the pod's namespaces";
	if (join_ns(h->pid, "net", CLONE_NEWNET) < 0 || join_ns(h->pid, "ipc", CLONE_NEWIPC) < 0 ||
	    join_ns(h->pid, "uts", CLONE_NEWUTS) < 0)
		goto fail;
	return 0;
fail:;
	int saved = errno;
	kill_holder(h);
	errno = saved;
	return -1;
}

// make_listener listens on a unix socket at path, mode 0600, replacing a
// stale socket (but nothing else).
int make_listener(const char *path) {
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (path[0] == '\0' || strlen(path) >= sizeof sa.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			errno = EEXIST;
			return -1;
		}
		if (unlink(path) < 0)
			return -1;
	} else if (errno != ENOENT) {
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	mode_t old = umask(0177);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (r < 0 || chmod(path, 0600) < 0 || listen(fd, 128) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

// pause_args is the pause's command line (see keeper.Start).
struct pause_args {
	int share_pid;
	const char *sock_path, *host, *uid_map, *gid_map;
};

// parse_args reads the command line; sysctls (-s) are applied later, from
// argv, once the namespaces are there.
static void parse_args(int ready, int argc, char **argv, struct pause_args *a) {
	memset(a, 0, sizeof *a);
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 && i + 1 < argc) {
			a->host = argv[++i];
		} else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
			i++;
		} else if (strcmp(argv[i], "-S") == 0 && i + 1 < argc) {
			a->sock_path = argv[++i];
		} else if (strcmp(argv[i], "-U") == 0 && i + 1 < argc) {
			a->uid_map = argv[++i];
		} else if (strcmp(argv[i], "-G") == 0 && i + 1 < argc) {
			a->gid_map = argv[++i];
		} else if (strcmp(argv[i], "-P") == 0) {
			a->share_pid = 1;
		} else {
			errno = EINVAL;
			fail(ready, "unknown argument", argv[i]);
		}
	}
	if ((a->uid_map == NULL) != (a->gid_map == NULL)) {
		errno = EINVAL;
		fail(ready, "-U and -G go together", "");
	}
}

// take_signals blocks the signals the keeper takes from a signalfd (block
// is set to them). The SIGCHLD handler is for the holder's sigsuspend (a
// default-ignored signal would not interrupt it).
static void take_signals(int ready, sigset_t *block) {
	sigemptyset(block);
	sigaddset(block, SIGTERM);
	sigaddset(block, SIGINT);
	sigaddset(block, SIGCHLD);
	sigaddset(block, SIGUSR1); // bind the socket again (keeper.c relisten)
	if (sigprocmask(SIG_BLOCK, block, NULL) < 0)
		fail(ready, "block signals", "");
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_child;
	sigaction(SIGCHLD, &sa, NULL);
	sa.sa_handler = SIG_IGN; // writes to gone clients return EPIPE instead
	sigaction(SIGPIPE, &sa, NULL);
}

// detach pins no mount (cwd /), makes fds 0-2 /dev/null (the keeper's
// runners inherit them from here) and the process not dumpable: no process
// of the pod's user can ptrace the keeper or open its /proc files; it is
// in no namespace a container sees anyway.
static void detach(int ready) {
	if (chdir("/") < 0)
		fail(ready, "chdir", "/");
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		fail(ready, "open", "/dev/null");
	for (int fd = 0; fd <= 2; fd++)
		if (devnull != fd && dup2(devnull, fd) < 0)
			fail(ready, "dup2", "/dev/null");
	if (devnull > 2)
		close(devnull);
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		fail(ready, "set not dumpable", "");
}

// set_pod_names sets the hostname and the sysctls (-s) in the pod's
// namespaces; it returns the failed step (and its argument), or NULL. The
// keeper is root in the host user namespace: it may set these in
// namespaces owned by the pod's user namespace too.
static const char *set_pod_names(int argc, char **argv, const struct pause_args *a, const char **arg) {
	*arg = "";
	if (a->host != NULL && sethostname(a->host, strlen(a->host)) < 0)
		return *arg = a->host, "set hostname";
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-s") == 0 || strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "-S") == 0 ||
		    strcmp(argv[i], "-U") == 0 || strcmp(argv[i], "-G") == 0) {
			const char *kv = argv[i + 1];
			int r = 0;
			if (argv[i][1] == 's')
				r = a->uid_map != NULL && is_ipc_sysctl(kv) ? set_sysctl_as(kv, map_root(a->uid_map), map_root(a->gid_map))
				                                            : set_sysctl(kv);
			if (r < 0)
				return *arg = kv, "set sysctl";
			i++;
		}
	}
	return NULL;
}

// make_namespaces starts the user namespace holder (-U/-G), sets the
// pod's names, starts the PID namespace holder (-P without a user
// namespace) and confines whichever holder there is. It returns the
// holder's PID (0: none).
static pid_t make_namespaces(int ready, int argc, char **argv, const struct pause_args *a) {
	struct holder h = {.pid = 0, .ctl = -1};
	if (a->uid_map != NULL) {
		const char *what;
		if (start_userns_holder(a->share_pid, a->uid_map, a->gid_map, &h, &what) < 0)
			fail(ready, what, "");
	}
	const char *arg, *step = set_pod_names(argc, argv, a, &arg);
	if (step == NULL && a->share_pid && a->uid_map == NULL && start_holder(CLONE_NEWPID, &h) < 0)
		step = "create PID namespace", arg = "";
	if (step != NULL) {
		int saved = errno;
		kill_holder(&h);
		errno = saved;
		fail(ready, step, arg);
	}
	if (h.pid > 0) {
		char msg[256];
		if (confine_holder(&h, msg, sizeof msg) < 0) {
			kill_holder(&h);
			report(ready, msg);
			report(ready, "\n");
			_exit(1);
		}
	}
	return h.pid;
}

// peapod_pause_main is the keeper's one entry, for argv[1] == "pod-pause":
// from the constructor of a Go binary (pause.go) and from the C main of
// the keeper's own binary (cmd/peapod-pause/main.c).
void peapod_pause_main(int argc, char **argv, char **envp) {
	// Named for ps and top: run from the daemon's sealed memfd through
	// /proc/self/fd/N, the kernel would name it "N".
	(void)prctl(PR_SET_NAME, "peapod-pause", 0, 0, 0);
	int ready = 3;
	if (fcntl(ready, F_GETFD) < 0)
		ready = -1;
	else
		fcntl(ready, F_SETFD, FD_CLOEXEC);

	// Reap what is orphaned below us even when we are not PID 1.
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		fail(ready, "set child subreaper", "");
	// No PR_SET_PDEATHSIG: the pod must outlive a restart of the daemon.

	struct pause_args a;
	parse_args(ready, argc, argv, &a);
	sigset_t block;
	take_signals(ready, &block);
	detach(ready);
	string_area(argv, &arg_area, &arg_len);
	string_area(envp, &env_area, &env_len);
	pid_t holder = make_namespaces(ready, argc, argv, &a);

	int listen_fd = -1;
	if (a.sock_path != NULL && (listen_fd = make_listener(a.sock_path)) < 0)
		fail(ready, "listen on", a.sock_path);

	int sig_fd = signalfd(-1, &block, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sig_fd < 0)
		fail(ready, "signalfd", "");

	// A test-only failpoint (the daemon's PEAPOD_FAILPOINTS, passed on):
	// a pause that never reports, for the daemon's deadline on it.
	if (failpoint_set("pause-hang-before-ready"))
		for (;;)
			sleep(1000);

	char ok[32];
	snprintf(ok, sizeof ok, "ok %d\n", (int)holder);
	report(ready, ok);
	if (ready >= 0)
		close(ready);

	keeper_run(listen_fd, a.sock_path, sig_fd, holder, holder_pidns, holder_userns);
}
