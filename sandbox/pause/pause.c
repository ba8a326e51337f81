// The pause process and pod keeper. See pause.go for why it is C in a
// constructor, and keeper.c for the keeper's event loop and protocol.
//
// argv: peapod pod-pause [-h HOSTNAME] [-s KEY=VALUE]... [-P] [-U UIDMAP -G GIDMAP] [-S SOCKET]
// It is started by peapod already inside the pod's new namespaces (clone
// flags set by the parent), in the host PID namespace. It sets the hostname
// and the namespaced sysctls, becomes the child subreaper, and with -P forks
// the pod's PID holder: PID 1 of a new PID namespace, which the pod's
// containers join through /proc/<holder>/ns/pid.
//
// With -U and -G (a pod with its own user namespace; the maps are
// /proc/<pid>/uid_map lines) the parent creates no namespace: the keeper
// clones the holder into a new user namespace together with new network,
// IPC and UTS namespaces (and PID with -P), so that all of them are owned by
// the user namespace, writes the holder's maps and joins its network, IPC
// and UTS namespaces itself. The keeper stays in the host user namespace:
// it keeps root's power over the host files it writes (logs, exit files,
// its socket) and forks the runners, which need it. Containers join
// /proc/<holder>/ns/user. With -S it listens for the
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
	snprintf(buf, sizeof buf, "%s%s%s: %s\n", what, arg[0] ? " " : "", arg, strerror(errno));
	report(fd, buf);
	_exit(1);
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
	ssize_t w = write(fd, val, strlen(val));
	int saved = errno;
	close(fd);
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

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) {
	(void)sig;
	stop_requested = 1;
}

static void on_child(int sig) { (void)sig; }

// holder_main is the PID holder: PID 1 of the pod's PID namespace. It reaps
// whatever is orphaned in the namespace and exits on SIGTERM or SIGINT (or
// dies with the keeper). alive is the read end of a pipe whose write end only
// the keeper holds: EOF there means the keeper died before PDEATHSIG was set.
static void __attribute__((noreturn)) holder_main(int alive, int keeper_end, sigset_t *wait_mask) {
	close(keeper_end);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		_exit(1);
	struct pollfd pf = {.fd = alive, .events = POLLIN};
	if (poll(&pf, 1, 0) > 0)
		_exit(0);
	// Hold no fd at all: not the ready pipe, not the keeper's.
	if (syscall(SYS_close_range, 0U, ~0U, 0) < 0)
		for (int fd = 0; fd < 1024; fd++)
			close(fd);
	while (!stop_requested) {
		sigsuspend(wait_mask);
		while (waitpid(-1, NULL, WNOHANG) > 0) {
		}
	}
	_exit(0);
}

// start_holder creates the holder with clone(flags): only the holder is in
// the new namespaces, the keeper's later children are not.
static pid_t start_holder(unsigned long flags, sigset_t *wait_mask) {
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	long r = syscall(SYS_clone, flags | SIGCHLD, 0UL, 0UL, 0UL, 0UL);
	if (r < 0) {
		int saved = errno;
		close(p[0]);
		close(p[1]);
		errno = saved;
		return -1;
	}
	if (r == 0)
		holder_main(p[0], p[1], wait_mask);
	close(p[0]); // p[1] stays open (close-on-exec) for the keeper's life
	return (pid_t)r;
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
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, kind);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
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
static pid_t start_userns_holder(int share_pid, const char *uid_map, const char *gid_map,
                                 sigset_t *wait_mask, const char **what) {
	unsigned long flags = CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
	if (share_pid)
		flags |= CLONE_NEWPID;
	*what = "create user namespace";
	pid_t holder = start_holder(flags, wait_mask);
	if (holder < 0)
		return -1;
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/uid_map", (int)holder);
	*what = "write uid_map";
	if (write_file(path, uid_map) < 0)
		goto fail;
	snprintf(path, sizeof path, "/proc/%d/gid_map", (int)holder);
	*what = "write gid_map";
	if (write_file(path, gid_map) < 0)
		goto fail;
	*what = "join the pod's namespaces";
	if (join_ns(holder, "net", CLONE_NEWNET) < 0 || join_ns(holder, "ipc", CLONE_NEWIPC) < 0 ||
	    join_ns(holder, "uts", CLONE_NEWUTS) < 0)
		goto fail;
	return holder;
fail:;
	int saved = errno;
	kill(holder, SIGKILL);
	waitpid(holder, NULL, 0);
	errno = saved;
	return -1;
}

// make_listener listens on a unix socket at path, mode 0600, replacing a
// stale socket (but nothing else).
static int make_listener(const char *path) {
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

void peapod_pause_constructor(int argc, char **argv, char **envp) {
	(void)envp;
	if (argc < 2 || strcmp(argv[1], "pod-pause") != 0)
		return;

	int ready = 3;
	if (fcntl(ready, F_GETFD) < 0)
		ready = -1;
	else
		fcntl(ready, F_SETFD, FD_CLOEXEC);

	// Reap what is orphaned below us even when we are not PID 1.
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		fail(ready, "set child subreaper", "");
	// No PR_SET_PDEATHSIG: the pod must outlive a restart of the daemon.

	int share_pid = 0;
	const char *sock_path = NULL, *host = NULL, *uid_map = NULL, *gid_map = NULL;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 && i + 1 < argc) {
			host = argv[++i];
		} else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
			i++; // applied below, once the namespaces are there
		} else if (strcmp(argv[i], "-S") == 0 && i + 1 < argc) {
			sock_path = argv[++i];
		} else if (strcmp(argv[i], "-U") == 0 && i + 1 < argc) {
			uid_map = argv[++i];
		} else if (strcmp(argv[i], "-G") == 0 && i + 1 < argc) {
			gid_map = argv[++i];
		} else if (strcmp(argv[i], "-P") == 0) {
			share_pid = 1;
		} else {
			errno = EINVAL;
			fail(ready, "unknown argument", argv[i]);
		}
	}
	if ((uid_map == NULL) != (gid_map == NULL)) {
		errno = EINVAL;
		fail(ready, "-U and -G go together", "");
	}

	// Signals are taken from a signalfd by the keeper; the handlers matter
	// for the PID holder, and keep a blocked signal from being discarded.
	sigset_t block, wait_mask;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &block, &wait_mask) < 0)
		fail(ready, "block signals", "");
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_child;
	sigaction(SIGCHLD, &sa, NULL);
	sa.sa_handler = SIG_IGN; // writes to gone clients return EPIPE instead
	sigaction(SIGPIPE, &sa, NULL);
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);
	sigdelset(&wait_mask, SIGCHLD);

	// Move off whatever directory we were started in so we pin no mount.
	if (chdir("/") < 0)
		fail(ready, "chdir", "/");
	// fds 0-2 become /dev/null; the keeper's runners inherit them from here.
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		fail(ready, "open", "/dev/null");
	for (int fd = 0; fd <= 2; fd++)
		if (devnull != fd && dup2(devnull, fd) < 0)
			fail(ready, "dup2", "/dev/null");
	if (devnull > 2)
		close(devnull);

	pid_t holder = 0;
	if (uid_map != NULL) {
		const char *what;
		if ((holder = start_userns_holder(share_pid, uid_map, gid_map, &wait_mask, &what)) < 0)
			fail(ready, what, "");
	}
	// The keeper is root in the host user namespace: it may set these in
	// namespaces owned by the pod's user namespace too.
	const char *step = NULL, *arg = "";
	if (host != NULL && sethostname(host, strlen(host)) < 0)
		step = "set hostname", arg = host;
	for (int i = 2; step == NULL && i < argc; i++) {
		if (strcmp(argv[i], "-s") == 0 || strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "-S") == 0 ||
		    strcmp(argv[i], "-U") == 0 || strcmp(argv[i], "-G") == 0) {
			const char *kv = argv[i + 1];
			int r = 0;
			if (argv[i][1] == 's')
				r = uid_map != NULL && is_ipc_sysctl(kv) ? set_sysctl_as(kv, map_root(uid_map), map_root(gid_map))
				                                         : set_sysctl(kv);
			if (r < 0)
				step = "set sysctl", arg = kv;
			i++;
		}
	}
	if (step != NULL) {
		int saved = errno;
		if (holder > 0) {
			kill(holder, SIGKILL);
			waitpid(holder, NULL, 0);
		}
		errno = saved;
		fail(ready, step, arg);
	}
	if (share_pid && uid_map == NULL && (holder = start_holder(CLONE_NEWPID, &wait_mask)) < 0)
		fail(ready, "create PID namespace", "");

	int listen_fd = -1;
	if (sock_path != NULL && (listen_fd = make_listener(sock_path)) < 0)
		fail(ready, "listen on", sock_path);

	int sig_fd = signalfd(-1, &block, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sig_fd < 0)
		fail(ready, "signalfd", "");

	char ok[32];
	snprintf(ok, sizeof ok, "ok %d\n", (int)holder);
	report(ready, ok);
	if (ready >= 0)
		close(ready);

	keeper_run(listen_fd, sig_fd, holder);
}
