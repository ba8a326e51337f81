// The pause process. See pause.go for why it is C in a constructor.
//
// argv: peapod pod-pause [-h HOSTNAME] [-s KEY=VALUE]...
// It is started by peapod already inside the pod's new namespaces (clone
// flags set by the parent). It sets the hostname and the namespaced sysctls,
// reports on fd 3, then waits: it reaps every child it inherits (it is PID 1
// when the pod shares a PID namespace) and exits on SIGTERM or SIGINT.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
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

static void fail(int fd, const char *what, const char *arg) {
	char buf[512];
	snprintf(buf, sizeof buf, "%s %s: %s\n", what, arg, strerror(errno));
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

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) {
	(void)sig;
	stop_requested = 1;
}

static void on_child(int sig) { (void)sig; }

void peapod_pause_constructor(int argc, char **argv, char **envp) {
	(void)envp;
	if (argc < 2 || strcmp(argv[1], "pod-pause") != 0)
		return;

	int ready = 3;
	if (fcntl(ready, F_GETFD) < 0)
		ready = -1;
	fcntl(ready, F_SETFD, FD_CLOEXEC);

	// Reap what is orphaned below us even when we are not PID 1.
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	// No PR_SET_PDEATHSIG: the pod must outlive a restart of the daemon.

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 && i + 1 < argc) {
			const char *h = argv[++i];
			if (sethostname(h, strlen(h)) < 0)
				fail(ready, "set hostname", h);
		} else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
			const char *kv = argv[++i];
			if (set_sysctl(kv) < 0)
				fail(ready, "set sysctl", kv);
		} else {
			errno = EINVAL;
			fail(ready, "unknown argument", argv[i]);
		}
	}

	sigset_t block, wait_mask;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &wait_mask);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_child;
	sigaction(SIGCHLD, &sa, NULL);
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);
	sigdelset(&wait_mask, SIGCHLD);

	// Move off whatever directory we were started in so we pin no mount.
	(void)!chdir("/");
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
	}

	report(ready, "ok\n");
	if (ready >= 0)
		close(ready);

	while (!stop_requested) {
		sigsuspend(&wait_mask);
		while (waitpid(-1, NULL, WNOHANG) > 0) {
		}
	}
	_exit(0);
}
