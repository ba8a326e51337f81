// The pod keeper: the pause process's event loop once it has set the pod up.
//
// The keeper is the child subreaper of the pod's containers. It starts each
// container through a short-lived runner process, keeps the container's stdio
// (pipe ends or the terminal master), writes the CRI log, records the exit in
// a file, and serves the daemon on a unix socket. All of this survives a
// restart or crash of the daemon.
//
// Control protocol: one request per connection. A request is a sequence of
// NUL-terminated fields. The first field is the command; each command has a
// fixed number of leading fields (which may be empty), and the request ends
// with the first empty field after them, so the bytes end in "\0\0".
// Replies are "\n"-terminated text lines. The client may half-close its
// writing side after the request. Commands:
//
//   start ID LOGPATH TTY STDIN STDIN_ONCE EXITFILE LOGDIR ARGV0 ARGV...
//        -> "ok <pid>\n" | "error <message>\n"
//        LOGDIR is the pod's log directory (absolute), opened once here;
//        LOGPATH is the log's path beneath it, resolved without symlinks
//        at start and at each reopen (log.c). Both empty: no log.
//   wait ID        -> "exited <code> <finished_unix_nanos>\n" once the exit
//                     is final (log flushed, exit file written); before
//                     it, "log-error <dropped lines> <reason>\n" when log
//                     writes start failing (at once if they are failing)
//                     and "log-ok <dropped lines>\n" when they work again
//   reopen ID      -> "ok\n"
//   attach ID      -> "ok\n", then frames: 1 byte stream (1 stdout, 2
//                     stderr), 4 bytes big-endian length, data
//   stdin ID       -> "ok\n" with the stdin write end (or the terminal master)
//                     as SCM_RIGHTS
//   close-stdin ID -> "ok\n"
//   forget ID      -> "ok\n" ("error container is running\n" if it has not
//                     exited)
// Any of them may instead reply "error <message>\n".
//
// Everything runs on one thread around epoll, and nothing blocks it: a
// `start` forks the runner and returns to the loop; the runner's result pipe
// and its exit are events like any other, and the client gets its reply
// once the runner has reported and exited (or at START_TIMEOUT_MS, the
// runner killed). Meanwhile every container's output keeps draining
// (including the starting one's), exits are reaped and requests served.
#include "keeper.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define REQ_MAX 65536          // largest request, in bytes
#define START_TIMEOUT_MS 60000 // how long a runner may take to report
#define EXIT_GRACE_MS 2000     // how long output may outlive the init
#define UNKNOWN_TTL_MS (START_TIMEOUT_MS + 5000) // how long an unclaimed exit is kept
#define START_FIXED_FIELDS 8   // start ID LOGPATH TTY STDIN STDIN_ONCE EXITFILE LOGDIR

enum client_mode { C_REQUEST, C_WAIT, C_ATTACH, C_START };

struct client {
	struct watch w;
	int fd;
	enum client_mode mode;
	char *buf; // request bytes (C_REQUEST only)
	size_t len, cap;
	struct container *c; // container waited on / attached to
	struct client *next; // in c->waiters or c->attachers
	int dead;
	struct client *next_dead;
};

struct unknown_exit {
	pid_t pid;
	int status;
	long long ns, mono_ms;
};

// A container start in flight: its runner has been forked and has not both
// reported on the result pipe and exited yet.
struct start {
	struct watch w; // W_RUNNER: res_fd is readable
	int res_fd;     // -1 once the report (or EOF) is in
	int tty_sock;   // receives the terminal master (TTY only), else -1
	pid_t runner;
	int runner_exited, runner_status;
	int killed;     // past its deadline: failed, runner killed, not yet reaped
	char line[1536];
	size_t len;
	int have_line, eof;
	long long forked_ms, deadline_ms;
	struct client *cl;     // the `start` client; NULL once it hung up
	struct container *c;   // NULL once the start is decided
	struct start *next, *next_dead;
};

static int ep = -1;
static int listen_fd = -1, sig_fd = -1, spare_fd = -1;
static const char *sock_path;
static pid_t holder_pid;
// The holder's namespaces and PID as the runners are told them, kept after
// the holder is gone: a runner then still joins the dead namespace (and
// fails) instead of a path that may name a new process.
static int holder_pidns = -1, holder_userns = -1;
static pid_t holder_ns_pid;
static struct watch sig_watch = {W_SIGNAL}, listen_watch = {W_LISTEN};
static struct container *containers;
// Objects closed while handling one batch of epoll events are freed only
// after the batch, since a later event of the batch may still point at them.
static struct client *dead_clients;
static struct container *dead_containers;
static struct start *starts, *dead_starts;
// Exits of PIDs that are no registered container: orphans re-parented to
// the keeper, and container inits that exit before their start is decided.
// Only the latter are ever claimed, so exits are kept only while a start is
// in flight, for UNKNOWN_TTL_MS, and at most one per PID (a later exit of a
// reused PID replaces it): the table is bounded by the PIDs that exit
// during a start, and no exit an in-flight start needs is dropped.
static struct unknown_exit *unknown;
static size_t unknown_len, unknown_cap;
// One read buffer for every output: data is logged and forwarded at once.
static char rbuf[LOG_LINE_MAX];

static int ep_add(int fd, void *ptr, uint32_t events) {
	struct epoll_event ev;
	memset(&ev, 0, sizeof ev);
	ev.events = events;
	ev.data.ptr = ptr;
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void ep_mod(int fd, void *ptr, uint32_t events) {
	struct epoll_event ev;
	memset(&ev, 0, sizeof ev);
	ev.events = events;
	ev.data.ptr = ptr;
	(void)epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

// ep_del ignores errors: the fd may never have been registered (a container
// whose start failed), and it is closed right after anyway.
static void ep_del(int fd) { (void)epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); }

// close_fd closes *fd if open. close is not retried on EINTR: on Linux the
// descriptor is gone either way.
static void close_fd(int *fd) {
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

static int exit_code(int status) {
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 255;
}

static int set_nonblock(int fd) {
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- clients ---- */

static void unlink_client(struct client *cl) {
	if (cl->mode == C_START) {
		for (struct start *s = starts; s != NULL; s = s->next)
			if (s->cl == cl)
				s->cl = NULL;
		cl->c = NULL;
		return;
	}
	if (cl->c == NULL)
		return;
	struct client **pp = cl->mode == C_ATTACH ? &cl->c->attachers : &cl->c->waiters;
	for (; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == cl) {
			*pp = cl->next;
			break;
		}
	}
	cl->c = NULL;
	cl->next = NULL;
}

static void client_close(struct client *cl) {
	if (cl->dead)
		return;
	unlink_client(cl);
	ep_del(cl->fd);
	close_fd(&cl->fd);
	free(cl->buf);
	cl->buf = NULL;
	cl->dead = 1;
	cl->next_dead = dead_clients;
	dead_clients = cl;
}

// send_msg sends a whole reply, optionally passing pass_fd. The socket is
// non-blocking: a client that cannot take a short reply at once is broken.
static int send_msg(struct client *cl, const char *msg, size_t len, int pass_fd) {
	struct iovec iov = {(void *)msg, len};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr mh;
	memset(&mh, 0, sizeof mh);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (pass_fd >= 0) {
		memset(&u, 0, sizeof u);
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof u.buf;
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
	}
	for (;;) {
		ssize_t w = sendmsg(cl->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		return w == (ssize_t)len ? 0 : -1;
	}
}

// reply formats one line (the format includes the "\n") and sends it.
// A too long line is cut, keeping its newline. Returns 0 or -1.
static int __attribute__((format(printf, 3, 4)))
reply_fd(struct client *cl, int pass_fd, const char *fmt, ...) {
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= sizeof buf) {
		n = sizeof buf - 1;
		buf[n - 1] = '\n';
	}
	return send_msg(cl, buf, (size_t)n, pass_fd);
}
#define reply(cl, ...) reply_fd(cl, -1, __VA_ARGS__)

/* ---- containers ---- */

static struct container *find_id(const char *id) {
	for (struct container *c = containers; c != NULL; c = c->next)
		if (strcmp(c->id, id) == 0)
			return c;
	return NULL;
}

static struct container *find_pid(pid_t pid) {
	for (struct container *c = containers; c != NULL; c = c->next)
		if (c->pid == pid && !c->exited) // a PID is reused after the exit
			return c;
	return NULL;
}

static int outputs_done(const struct container *c) {
	return c->out[0].fd < 0 && c->out[1].fd < 0;
}

// stream_close ends an output: it stops watching it, closes it and logs an
// unterminated last line.
static void stream_close(struct stream *s) {
	if (s->fd >= 0) {
		ep_del(s->fd);
		if (s->c->stdin_fd == s->fd) // the terminal master is also stdin
			s->c->stdin_fd = -1;
		close_fd(&s->fd);
	}
	stream_flush(s);
}

static void close_attachers(struct container *c) {
	while (c->attachers != NULL)
		client_close(c->attachers);
}

// finalize makes an exit final: output is closed and the log flushed, the
// exit file written, waiters answered and attach clients closed.
static void finalize(struct container *c) {
	if (c->finalized || !c->exited)
		return;
	c->finalized = 1;
	// Output still open 2 s after the exit is held by a leftover process;
	// it is not waited for.
	stream_close(&c->out[0]);
	stream_close(&c->out[1]);
	close_fd(&c->stdin_fd);
	close_fd(&c->log_fd);
	// A failure here cannot be reported to anyone; waiters still get the
	// exit, and the daemon treats a missing exit file as unknown.
	(void)write_exit_file(c);
	while (c->waiters != NULL) {
		struct client *cl = c->waiters;
		(void)reply(cl, "exited %d %lld\n", c->code, c->finished_ns);
		client_close(cl);
	}
	close_attachers(c);
}

// send_log_state tells one waiter whether log writes fail. A waiter that
// cannot take the line now misses it, and is kept: the exit still counts.
static void send_log_state(struct client *cl, const struct container *c) {
	if (c->log_errno != 0)
		(void)reply(cl, "log-error %lu %s\n", c->log_drops, errno_text(c->log_errno));
	else
		(void)reply(cl, "log-ok %lu\n", c->log_drops);
}

// log_state_changed tells the daemon (through the waiters) that log writes
// started failing (a full disk) or work again.
void log_state_changed(struct container *c) {
	for (struct client *cl = c->waiters; cl != NULL; cl = cl->next)
		send_log_state(cl, c);
}

static void output_ended(struct container *c) {
	if (!outputs_done(c))
		return;
	close_attachers(c);
	if (c->exited)
		finalize(c);
}

static void record_exit(struct container *c, int status, long long ns, long long mono) {
	c->exited = 1;
	c->code = exit_code(status);
	c->finished_ns = ns;
	c->exit_mono_ms = mono;
	if (outputs_done(c))
		finalize(c);
}

// container_free releases a container that is in no list and no epoll set.
static void container_free(struct container *c) {
	stream_close(&c->out[0]);
	stream_close(&c->out[1]);
	close_fd(&c->stdin_fd);
	close_fd(&c->log_fd);
	close_fd(&c->log_dir_fd);
	free(c->id);
	free(c->log_path);
	free(c->exit_file);
	free(c);
}

// attach_send forwards raw output to the attach clients. A client that
// cannot take the whole frame at once is dropped: neither the keeper nor the
// container ever waits for a client.
static void attach_send(struct container *c, int kind, const char *data, size_t n) {
	unsigned char hdr[5] = {(unsigned char)kind, (unsigned char)(n >> 24),
				(unsigned char)(n >> 16), (unsigned char)(n >> 8),
				(unsigned char)n};
	struct client *cl = c->attachers;
	while (cl != NULL) {
		struct client *next = cl->next;
		struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)data, n}};
		struct msghdr mh;
		memset(&mh, 0, sizeof mh);
		mh.msg_iov = iov;
		mh.msg_iovlen = 2;
		ssize_t w;
		do
			w = sendmsg(cl->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (w < 0 && errno == EINTR);
		if (w != (ssize_t)(n + sizeof hdr))
			client_close(cl);
		cl = next;
	}
}

// stream_read does one read of a ready output (one per readiness, so that a
// terminal master left blocking never blocks the keeper).
static void stream_read(struct stream *s) {
	ssize_t n = read(s->fd, rbuf, sizeof rbuf);
	if (n > 0) {
		attach_send(s->c, s->kind, rbuf, (size_t)n);
		stream_feed(s, rbuf, (size_t)n);
		return;
	}
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	// EOF, EIO (terminal master after the last slave closed) or an error.
	stream_close(s);
	output_ended(s->c);
}

/* ---- exits ---- */

static void remember_unknown(pid_t pid, int status) {
	long long now = now_mono_ms();
	if (starts == NULL) { // no start can claim it
		unknown_len = 0;
		return;
	}
	struct unknown_exit *slot = NULL;
	size_t keep = 0;
	for (size_t i = 0; i < unknown_len; i++) {
		if (now - unknown[i].mono_ms >= UNKNOWN_TTL_MS)
			continue; // expired: dropped
		unknown[keep] = unknown[i];
		if (unknown[keep].pid == pid)
			slot = &unknown[keep];
		keep++;
	}
	unknown_len = keep;
	if (slot == NULL) {
		if (unknown_len == unknown_cap) {
			size_t ncap = unknown_cap ? unknown_cap * 2 : 32;
			struct unknown_exit *nu = realloc(unknown, ncap * sizeof *nu);
			if (nu == NULL)
				return; // out of memory: the start will report "not a child"
			unknown = nu;
			unknown_cap = ncap;
		}
		slot = &unknown[unknown_len++];
	}
	slot->pid = pid;
	slot->status = status;
	slot->ns = now_realtime_ns();
	slot->mono_ms = now;
}

// take_unknown finds the exit of pid reaped since `since` (monotonic ms).
static int take_unknown(pid_t pid, long long since, struct unknown_exit *out) {
	long long now = now_mono_ms();
	for (size_t i = 0; i < unknown_len; i++) {
		struct unknown_exit *u = &unknown[i];
		if (u->pid == pid && u->mono_ms >= since && now - u->mono_ms < UNKNOWN_TTL_MS) {
			*out = *u;
			unknown[i] = unknown[--unknown_len];
			return 1;
		}
	}
	return 0;
}

static void runner_exited(struct start *s, int status);

static void reap(void) {
	for (;;) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);
		if (p < 0 && errno == EINTR)
			continue;
		if (p <= 0) // 0: none ready; ECHILD: no children at all
			return;
		struct container *c = find_pid(p);
		struct start *s = starts;
		while (s != NULL && s->runner != p)
			s = s->next;
		if (c != NULL)
			record_exit(c, st, now_realtime_ns(), now_mono_ms());
		else if (s != NULL)
			runner_exited(s, st);
		else if (p == holder_pid)
			holder_pid = 0; // the pod's PID namespace is gone
		else
			remember_unknown(p, st);
	}
}

/* ---- start ---- */

// close_from closes every fd >= lo (in the runner child).
static void close_from(int lo) {
	if (syscall(SYS_close_range, (unsigned)lo, ~0U, 0) == 0)
		return;
	long max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 65536)
		max = 65536;
	for (int fd = lo; fd < max; fd++)
		close(fd);
}

static void child_fail(int res_fd, const char *what) {
	char buf[256];
	int n = snprintf(buf, sizeof buf, "error %s: %s\n", what, errno_text(errno));
	if (n > 0)
		(void)write_all(res_fd, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
	_exit(127);
}

// exec_runner runs in the forked child: it sets fds 0-6 (keeper.h) and
// execs the runner.
static void __attribute__((noreturn))
exec_runner(int in_fd, int out_fd, int err_fd, int res_fd, int tty_fd, char **argv) {
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++)
		(void)sigaction(sig, &dfl, NULL); // fails harmlessly for KILL, STOP, libc's
	// The keeper's fds 0-2 are /dev/null (pause.c). -1: left closed.
	int src[RUNNER_FDS] = {in_fd >= 0 ? in_fd : 0, out_fd >= 0 ? out_fd : 1,
		      err_fd >= 0 ? err_fd : 2, res_fd, tty_fd, holder_pidns, holder_userns};
	int tmp[RUNNER_FDS];
	// Move the sources above the targets first, so that no dup2 clobbers a
	// source with a low number and every target is a fresh fd (dup2 onto
	// itself would keep FD_CLOEXEC).
	for (int i = 0; i < RUNNER_FDS; i++)
		if ((tmp[i] = src[i] < 0 ? -1 : fcntl(src[i], F_DUPFD_CLOEXEC, RUNNER_FDS)) < 0 && src[i] >= 0)
			child_fail(res_fd, "runner fds");
	for (int i = 0; i < RUNNER_FDS; i++) {
		if (tmp[i] < 0) {
			close(i);
			continue;
		}
		int r;
		do
			r = dup2(tmp[i], i);
		while (r < 0 && errno == EINTR);
		if (r < 0)
			child_fail(tmp[3], "runner fds");
	}
	close_from(RUNNER_FDS);
	// The holder's PID and which of fds 5 and 6 it passed ("PID pid user"),
	// so that the runner knows which namespace paths of the spec mean them.
	if (holder_ns_pid > 0) {
		char pid[40];
		snprintf(pid, sizeof pid, "%d%s%s", (int)holder_ns_pid, holder_pidns >= 0 ? " pid" : "",
			 holder_userns >= 0 ? " user" : "");
		if (setenv(HOLDER_ENV, pid, 1) < 0)
			child_fail(3, "set " HOLDER_ENV);
	} else {
		unsetenv(HOLDER_ENV);
	}
	execve(argv[0], argv, environ);
	char what[300];
	snprintf(what, sizeof what, "exec %s", argv[0]);
	child_fail(3, what);
	_exit(127);
}

// recv_master receives the terminal master that the runner sent on sock.
static int recv_master(int sock) {
	char byte;
	struct iovec iov = {&byte, 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} u;
	struct msghdr mh;
	memset(&mh, 0, sizeof mh);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof u.buf;
	ssize_t n;
	do
		n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	int master = -1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
			if (master < 0)
				master = fd;
			else
				close(fd); // only one is expected
		}
	}
	if (master < 0) {
		errno = ENOENT;
		return -1;
	}
	if (!isatty(master)) {
		close(master);
		errno = ENOTTY;
		return -1;
	}
	return master;
}

/* ---- start: the runner's report and exit, as events ---- */

static void start_retire(struct start *s) {
	for (struct start **pp = &starts; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	if (s->res_fd >= 0)
		ep_del(s->res_fd);
	close_fd(&s->res_fd);
	close_fd(&s->tty_sock);
	s->next_dead = dead_starts;
	dead_starts = s;
}

// start_reply answers the `start` client, if it is still there, and ends it.
static void __attribute__((format(printf, 2, 3)))
start_reply(struct start *s, const char *fmt, ...) {
	if (s->cl == NULL)
		return;
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n >= 0)
		(void)reply(s->cl, "%s\n", buf);
	struct client *cl = s->cl;
	s->cl = NULL;
	client_close(cl);
}

// start_failed drops the container of a start that did not succeed: the
// client gets msg, anyone who waited for or attached to it meanwhile is
// told and closed.
static void start_failed(struct start *s, const char *msg) {
	struct container *c = s->c;
	s->c = NULL;
	start_reply(s, "error %s", msg);
	if (c == NULL)
		return;
	while (c->waiters != NULL) {
		struct client *cl = c->waiters;
		(void)reply(cl, "error container did not start: %s\n", msg);
		client_close(cl);
	}
	close_attachers(c);
	for (struct container **pp = &containers; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	c->dead = 1;
	c->next_dead = dead_containers;
	dead_containers = c;
}

// start_decide runs once the runner has reported (or closed its result
// pipe) and exited: the container is registered, or dropped.
static void start_decide(struct start *s) {
	char msg[1700];
	struct container *c = s->c;
	if (!s->have_line) {
		snprintf(msg, sizeof msg, "runner exited with status %d without reporting", exit_code(s->runner_status));
		goto fail;
	}
	if (strncmp(s->line, "error ", 6) == 0) {
		snprintf(msg, sizeof msg, "%s", s->line + 6);
		goto fail;
	}
	char *end = NULL;
	long cpid = strncmp(s->line, "ok ", 3) == 0 ? strtol(s->line + 3, &end, 10) : 0;
	if (cpid <= 0 || cpid > 0x7fffffffL || end == NULL || *end != '\0') {
		snprintf(msg, sizeof msg, "bad runner report: %s", s->line);
		goto fail;
	}
	if (c->tty) {
		int m = recv_master(s->tty_sock);
		if (m < 0) {
			snprintf(msg, sizeof msg, "receive terminal from runner: %s", errno_text(errno));
			goto fail;
		}
		// Non-blocking, as the daemon makes its copy for stdin anyway: a
		// read after readiness must never wait for the container.
		(void)set_nonblock(m);
		c->out[0].fd = c->stdin_fd = m;
		if (ep_add(m, &c->out[0].w, EPOLLIN) < 0) {
			snprintf(msg, sizeof msg, "epoll: %s", errno_text(errno));
			goto fail;
		}
	}
	// The init must now be our child (re-parented when the runner exited),
	// or already reaped as an unknown exit; otherwise its exit would never
	// be seen.
	struct unknown_exit early;
	int have_early = take_unknown((pid_t)cpid, s->forked_ms, &early);
	siginfo_t si;
	memset(&si, 0, sizeof si);
	if (!have_early && waitid(P_PID, (id_t)cpid, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
		snprintf(msg, sizeof msg, "container process %ld is not a child of the keeper: %s", cpid, errno_text(errno));
		goto fail;
	}
	s->c = NULL;
	c->pid = (pid_t)cpid;
	c->starting = 0;
	start_reply(s, "ok %ld", cpid);
	start_retire(s);
	if (have_early)
		record_exit(c, early.status, early.ns, early.mono_ms);
	else if (outputs_done(c))
		output_ended(c);
	// An exit of the init not yet reaped is found by the next reap: its
	// SIGCHLD is still pending, or is being handled by the caller's loop.
	return;
fail:
	start_failed(s, msg);
	start_retire(s);
}

static void start_maybe_decide(struct start *s) {
	if (s->killed) {
		if (s->runner_exited)
			start_retire(s);
		return;
	}
	if ((s->have_line || s->eof) && s->runner_exited)
		start_decide(s);
}

static void runner_exited(struct start *s, int status) {
	s->runner_exited = 1;
	s->runner_status = status;
	start_maybe_decide(s);
}

// runner_readable reads the runner's report. Only the first line counts:
// the runner's children may keep the pipe open, so EOF is not waited for.
static void runner_readable(struct start *s) {
	size_t room = sizeof s->line - 1 - s->len;
	ssize_t got = read(s->res_fd, s->line + s->len, room);
	if (got < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (got <= 0) {
		s->eof = 1;
	} else {
		s->len += (size_t)got;
		s->line[s->len] = '\0';
		char *nl = memchr(s->line, '\n', s->len);
		if (nl != NULL) {
			*nl = '\0';
			s->len = (size_t)(nl - s->line);
			s->have_line = 1;
		} else if (s->len == sizeof s->line - 1) {
			s->have_line = 1; // over-long report: cut it
		}
	}
	if (s->have_line || s->eof) {
		ep_del(s->res_fd);
		close_fd(&s->res_fd);
	}
	start_maybe_decide(s);
}

// parent_of returns the parent PID of pid from /proc, or -1.
static pid_t parent_of(pid_t pid) {
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	char *p = strrchr(buf, ')');
	int ppid;
	if (p == NULL || sscanf(p + 1, " %*c %d", &ppid) != 1)
		return -1;
	return (pid_t)ppid;
}

// start_expire fails a start whose runner overstayed: the runner is killed,
// and the start object stays until the runner is reaped.
static void start_expire(struct start *s) {
	s->killed = 1;
	if (s->res_fd >= 0) {
		ep_del(s->res_fd);
		close_fd(&s->res_fd);
	}
	// A runner that reported "ok PID" and then hung: the init it reported
	// would run on with no one to record its exit. It is killed if it is
	// the runner's child (checked while the runner, not yet killed, holds
	// it: then the PID cannot name another process).
	char *end = NULL;
	long cpid = s->have_line && strncmp(s->line, "ok ", 3) == 0 ? strtol(s->line + 3, &end, 10) : 0;
	if (cpid > 1 && cpid <= 0x7fffffffL && end != NULL && *end == '\0' && parent_of((pid_t)cpid) == s->runner)
		kill((pid_t)cpid, SIGKILL);
	kill(s->runner, SIGKILL);
	char msg[80];
	snprintf(msg, sizeof msg, "runner did not report and exit within %d s", START_TIMEOUT_MS / 1000);
	start_failed(s, msg);
}

static int flag_field(const char *s, int *out) {
	if (strcmp(s, "0") == 0 || strcmp(s, "1") == 0) {
		*out = s[0] == '1';
		return 0;
	}
	return -1;
}

static char *dup_or_null(const char *s) { return s[0] != '\0' ? strdup(s) : NULL; }

// start_container_new checks a start request's fixed fields and makes
// its container, with its log open. It replies and returns NULL if either
// fails; *want_stdin is the STDIN field.
static struct container *start_container_new(struct client *cl, char **f, int nf, int *want_stdin) {
	if (nf < START_FIXED_FIELDS + 1) {
		(void)reply(cl, "error start needs ID LOGPATH TTY STDIN STDIN_ONCE EXITFILE LOGDIR ARGV...\n");
		return NULL;
	}
	const char *id = f[1];
	int tty, once;
	if (id[0] == '\0' || strlen(id) > 256 || strchr(id, '/') != NULL) {
		(void)reply(cl, "error bad container ID\n");
		return NULL;
	}
	if (flag_field(f[3], &tty) < 0 || flag_field(f[4], want_stdin) < 0 ||
	    flag_field(f[5], &once) < 0) {
		(void)reply(cl, "error TTY, STDIN and STDIN_ONCE must be 0 or 1\n");
		return NULL;
	}
	if (f[6][0] == '\0') {
		(void)reply(cl, "error empty EXITFILE\n");
		return NULL;
	}
	if (find_id(id) != NULL) {
		(void)reply(cl, "error container %s already exists\n", id);
		return NULL;
	}

	struct container *c = calloc(1, sizeof *c);
	if (c == NULL) {
		(void)reply(cl, "error out of memory\n");
		return NULL;
	}
	c->log_fd = c->stdin_fd = c->log_dir_fd = -1;
	for (int i = 0; i < 2; i++) {
		c->out[i].w.type = W_STREAM;
		c->out[i].fd = -1;
		c->out[i].kind = i + 1;
		c->out[i].c = c;
	}
	c->tty = tty;
	c->stdin_once = once;
	c->id = strdup(id);
	c->exit_file = strdup(f[6]);
	c->log_path = dup_or_null(f[2]);
	if (c->id == NULL || c->exit_file == NULL || (f[2][0] != '\0' && c->log_path == NULL)) {
		(void)reply(cl, "error out of memory\n");
		container_free(c);
		return NULL;
	}
	if (c->log_path != NULL && log_open_dir(c, f[7]) < 0) {
		(void)reply(cl, "error open log directory %s: %s%s\n", f[7], errno_text(errno),
			    errno == ELOOP ? " (the pod's log directory must be a directory, not a symlink: it is opened without following symlinks)" : "");
		container_free(c);
		return NULL;
	}
	if (log_reopen(c) < 0) {
		(void)reply(cl, "error open log %s in %s: %s%s\n", c->log_path, f[7], errno_text(errno), log_path_hint(errno));
		container_free(c);
		return NULL;
	}
	return c;
}

// The runner's ends of a start's descriptors, closed in the keeper after
// the fork, and the keeper's ends that are not the container's.
struct start_fds {
	int in_r, out_w, err_w, tty_child; // the runner's stdio (or tty socket)
	int tty_sock;                      // the keeper's end of the tty socket
	int res[2];                        // the runner's result pipe
};

// start_make_stdio makes the container's stdio pipes (the keeper's ends
// in c) or, with a tty, the socket the runner passes the pty master on,
// and the result pipe. It returns what failed (errno set), or NULL.
static const char *start_make_stdio(struct container *c, int want_stdin, struct start_fds *fds) {
	if (!c->tty) {
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0)
			return "pipe";
		c->out[0].fd = p[0], fds->out_w = p[1];
		if (pipe2(p, O_CLOEXEC) < 0)
			return "pipe";
		c->out[1].fd = p[0], fds->err_w = p[1];
		if (set_nonblock(c->out[0].fd) < 0 || set_nonblock(c->out[1].fd) < 0)
			return "set non-blocking";
		// The stdin write end is the daemon's to write: it gets a copy
		// (the same open file) through `stdin` and makes it non-blocking
		// (sandbox/keeper/client.go).
		if (want_stdin) {
			if (pipe2(p, O_CLOEXEC) < 0)
				return "pipe";
			fds->in_r = p[0], c->stdin_fd = p[1];
		}
	} else {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			return "socketpair";
		fds->tty_sock = sv[0], fds->tty_child = sv[1];
	}
	if (pipe2(fds->res, O_CLOEXEC) < 0)
		return "pipe";
	return NULL;
}

// start_new makes the loop's object of a start and watches the
// container's output and the result pipe. It returns NULL and sets
// *failed (errno set) if that fails.
static struct start *start_new(struct container *c, int res_r, const char **failed) {
	struct start *st = calloc(1, sizeof *st);
	if (st == NULL) {
		errno = ENOMEM;
		*failed = "start";
		return NULL;
	}
	st->w.type = W_RUNNER;
	st->res_fd = st->tty_sock = -1;
	if (set_nonblock(res_r) < 0) {
		free(st);
		*failed = "set non-blocking";
		return NULL;
	}
	for (int i = 0; i < 2; i++) {
		if (c->out[i].fd >= 0 && ep_add(c->out[i].fd, &c->out[i].w, EPOLLIN) < 0) {
			free(st);
			*failed = "epoll";
			return NULL;
		}
	}
	if (ep_add(res_r, &st->w, EPOLLIN) < 0) {
		free(st);
		*failed = "epoll";
		return NULL;
	}
	return st;
}

// start_wait_client makes the client of a start wait for its decision;
// meanwhile it is only watched for hang-up, like a waiter.
static void start_wait_client(struct client *cl) {
	cl->mode = C_START;
	free(cl->buf);
	cl->buf = NULL;
	cl->len = cl->cap = 0;
	ep_mod(cl->fd, &cl->w, EPOLLIN | EPOLLRDHUP);
}

static void cmd_start(struct client *cl, char **f, int nf) {
	int want_stdin;
	struct container *c = start_container_new(cl, f, nf, &want_stdin);
	if (c == NULL)
		return;
	struct start_fds fds = {-1, -1, -1, -1, -1, {-1, -1}};
	struct start *st = NULL;
	const char *failed = start_make_stdio(c, want_stdin, &fds);
	if (failed == NULL)
		st = start_new(c, fds.res[0], &failed);
	if (st == NULL)
		goto fail;

	// The fork comes last, so that nothing after it can fail: from here on
	// the start is an object of the loop. argv points into the request
	// buffer, which outlives the child's exec.
	char **argv = f + START_FIXED_FIELDS;
	f[nf] = NULL;
	st->forked_ms = now_mono_ms();
	st->deadline_ms = st->forked_ms + START_TIMEOUT_MS;
	pid_t pid = fork();
	if (pid < 0) {
		ep_del(fds.res[0]);
		free(st);
		failed = "fork";
		goto fail;
	}
	if (pid == 0)
		exec_runner(fds.in_r, fds.out_w, fds.err_w, fds.res[1], fds.tty_child, argv);
	close_fd(&fds.in_r);
	close_fd(&fds.out_w);
	close_fd(&fds.err_w);
	close_fd(&fds.tty_child);
	close_fd(&fds.res[1]);
	st->runner = pid;
	st->res_fd = fds.res[0];
	st->tty_sock = fds.tty_sock;
	st->c = c;
	st->cl = cl;
	st->next = starts;
	starts = st;
	c->starting = 1;
	c->next = containers;
	containers = c;
	start_wait_client(cl);
	return;

fail:
	(void)reply(cl, "error %s: %s\n", failed, errno_text(errno));
	client_close(cl);
	close_fd(&fds.in_r);
	close_fd(&fds.out_w);
	close_fd(&fds.err_w);
	close_fd(&fds.tty_child);
	close_fd(&fds.tty_sock);
	close_fd(&fds.res[0]);
	close_fd(&fds.res[1]);
	container_free(c);
}

/* ---- requests ---- */

// parse_request splits a request into fields. It returns the number of
// fields when the request is complete, 0 when more bytes are needed, and -1
// when bytes follow the end. f has room for len+1 pointers.
static int parse_request(char *buf, size_t len, char **f) {
	size_t pos = 0;
	int nf = 0, fixed = 1;
	while (pos < len) {
		char *end = memchr(buf + pos, '\0', len - pos);
		if (end == NULL)
			return 0;
		size_t flen = (size_t)(end - (buf + pos));
		if (nf >= fixed && flen == 0)
			return pos + 1 == len ? nf : -1;
		f[nf++] = buf + pos;
		if (nf == 1)
			fixed = strcmp(f[0], "start") == 0 ? START_FIXED_FIELDS : 2;
		pos += flen + 1;
	}
	return 0;
}

static void dispatch(struct client *cl, char **f, int nf) {
	const char *cmd = f[0];
	if (strcmp(cmd, "start") == 0) {
		cmd_start(cl, f, nf);
		if (cl->mode != C_START) // answered at once (an error)
			client_close(cl);
		return;
	}
	static const char *const known[] = {"wait", "reopen", "attach", "stdin",
					    "close-stdin", "forget"};
	int k = -1;
	for (int i = 0; i < (int)(sizeof known / sizeof known[0]); i++)
		if (strcmp(cmd, known[i]) == 0)
			k = i;
	if (k < 0) {
		(void)reply(cl, "error unknown command %.100s\n", cmd);
		client_close(cl);
		return;
	}
	if (nf != 2) {
		(void)reply(cl, "error %s takes one argument, the container ID\n", cmd);
		client_close(cl);
		return;
	}
	struct container *c = find_id(f[1]);
	if (strcmp(cmd, "forget") == 0) {
		if (c != NULL && !c->exited) {
			(void)reply(cl, "error container is running\n");
		} else {
			if (c != NULL) {
				finalize(c);
				for (struct container **pp = &containers; *pp; pp = &(*pp)->next) {
					if (*pp == c) {
						*pp = c->next;
						break;
					}
				}
				c->dead = 1;
				c->next_dead = dead_containers;
				dead_containers = c;
			}
			(void)reply(cl, "ok\n");
		}
		client_close(cl);
		return;
	}
	if (c == NULL) {
		(void)reply(cl, "error unknown container\n");
		client_close(cl);
		return;
	}
	if (strcmp(cmd, "wait") == 0) {
		if (c->finalized) {
			(void)reply(cl, "exited %d %lld\n", c->code, c->finished_ns);
			client_close(cl);
			return;
		}
		cl->mode = C_WAIT;
		cl->c = c;
		cl->next = c->waiters;
		c->waiters = cl;
		if (c->log_errno != 0)
			send_log_state(cl, c);
	} else if (strcmp(cmd, "attach") == 0) {
		if (c->finalized || outputs_done(c)) {
			(void)reply(cl, "error container output has ended\n");
			client_close(cl);
			return;
		}
		if (reply(cl, "ok\n") < 0) {
			client_close(cl);
			return;
		}
		cl->mode = C_ATTACH;
		cl->c = c;
		cl->next = c->attachers;
		c->attachers = cl;
	} else if (strcmp(cmd, "reopen") == 0) {
		if (c->finalized)
			(void)reply(cl, "error container has exited\n");
		else if (log_reopen(c) < 0)
			(void)reply(cl, "error reopen %s: %s%s\n", c->log_path, errno_text(errno), log_path_hint(errno));
		else
			(void)reply(cl, "ok\n");
		client_close(cl);
		return;
	} else if (strcmp(cmd, "stdin") == 0) {
		if (c->stdin_fd < 0)
			(void)reply(cl, "error no stdin\n");
		else
			(void)reply_fd(cl, c->stdin_fd, "ok\n");
		client_close(cl);
		return;
	} else { // close-stdin
		if (!c->tty)
			close_fd(&c->stdin_fd);
		(void)reply(cl, "ok\n");
		client_close(cl);
		return;
	}
	// A waiting or attached client is only watched for hang-up.
	free(cl->buf);
	cl->buf = NULL;
	cl->len = cl->cap = 0;
	ep_mod(cl->fd, &cl->w, EPOLLIN | EPOLLRDHUP);
}

static void client_event(struct client *cl, uint32_t events) {
	if (cl->mode != C_REQUEST) {
		// Only a hang-up matters; stray bytes are discarded. A half-close
		// (EOF on read without EPOLLHUP) is not a hang-up: stop reading
		// and keep the client until EPOLLHUP.
		if (events & (EPOLLHUP | EPOLLERR)) {
			client_close(cl);
			return;
		}
		char junk[256];
		for (;;) {
			ssize_t n = read(cl->fd, junk, sizeof junk);
			if (n > 0)
				continue;
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				return;
			if (n == 0) {
				ep_mod(cl->fd, &cl->w, 0); // EPOLLHUP is always reported
				return;
			}
			client_close(cl);
			return;
		}
	}
	for (;;) {
		if (cl->len == cl->cap) {
			if (cl->cap >= REQ_MAX) {
				(void)reply(cl, "error request larger than %d bytes\n", REQ_MAX);
				client_close(cl);
				return;
			}
			size_t ncap = cl->cap ? cl->cap * 2 : 1024;
			if (ncap > REQ_MAX)
				ncap = REQ_MAX;
			char *nb = realloc(cl->buf, ncap);
			if (nb == NULL) {
				(void)reply(cl, "error out of memory\n");
				client_close(cl);
				return;
			}
			cl->buf = nb;
			cl->cap = ncap;
		}
		ssize_t n = read(cl->fd, cl->buf + cl->len, cl->cap - cl->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) { // gone before the request was complete
			client_close(cl);
			return;
		}
		cl->len += (size_t)n;
		char **f = malloc((cl->len + 1) * sizeof *f);
		if (f == NULL) {
			(void)reply(cl, "error out of memory\n");
			client_close(cl);
			return;
		}
		int nf = parse_request(cl->buf, cl->len, f);
		if (nf < 0) {
			(void)reply(cl, "error malformed request\n");
			client_close(cl);
		} else if (nf > 0) {
			dispatch(cl, f, nf);
		}
		free(f);
		if (nf != 0)
			return;
	}
}

static void accept_clients(void) {
	for (;;) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if ((errno == EMFILE || errno == ENFILE) && spare_fd >= 0) {
				// Out of fds: use the spare to take the connection
				// off the queue and refuse it, instead of spinning.
				close_fd(&spare_fd);
				fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
				if (fd >= 0)
					close(fd);
				spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
				continue;
			}
			return; // EAGAIN, or nothing sensible to do
		}
		struct ucred cr;
		socklen_t crl = sizeof cr;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 || cr.uid != geteuid()) {
			close(fd);
			continue;
		}
		struct client *cl = calloc(1, sizeof *cl);
		if (cl == NULL) {
			close(fd);
			continue;
		}
		cl->w.type = W_CLIENT;
		cl->fd = fd;
		cl->mode = C_REQUEST;
		if (ep_add(fd, &cl->w, EPOLLIN | EPOLLRDHUP) < 0) {
			close(fd);
			free(cl);
		}
	}
}

/* ---- loop ---- */

// relisten binds the socket again (SIGUSR1 from the daemon at its start):
// its path, or the directory holding it, was removed or replaced while the
// keeper ran, and the daemon could no longer reach it. The old listener is
// closed; clients already connected keep their connections.
static void relisten(void) {
	if (sock_path == NULL)
		return;
	int fd = make_listener(sock_path);
	if (fd < 0)
		return; // the daemon sees no socket and says so
	if (listen_fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, listen_fd, NULL);
		close(listen_fd);
	}
	listen_fd = fd;
	if (ep_add(listen_fd, &listen_watch, EPOLLIN) < 0) {
		close(listen_fd);
		listen_fd = -1;
	}
}

static void handle_signals(void) {
	struct signalfd_siginfo si;
	int child = 0;
	for (;;) {
		ssize_t n = read(sig_fd, &si, sizeof si);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof si)
			break;
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			_exit(0);
		if (si.ssi_signo == SIGCHLD)
			child = 1;
		if (si.ssi_signo == SIGUSR1)
			relisten();
	}
	if (child)
		reap();
}

// next_timeout is the epoll timeout until the earliest grace period ends.
static int next_timeout(void) {
	long long now = now_mono_ms(), best = -1;
	for (struct container *c = containers; c != NULL; c = c->next) {
		if (!c->exited || c->finalized)
			continue;
		long long left = c->exit_mono_ms + EXIT_GRACE_MS - now;
		if (left < 0)
			left = 0;
		if (best < 0 || left < best)
			best = left;
	}
	for (struct start *s = starts; s != NULL; s = s->next) {
		if (s->killed)
			continue;
		long long left = s->deadline_ms - now;
		if (left < 0)
			left = 0;
		if (best < 0 || left < best)
			best = left;
	}
	return best > 60000 ? 60000 : (int)best;
}

static void check_deadlines(void) {
	long long now = now_mono_ms();
	for (struct container *c = containers; c != NULL; c = c->next)
		if (c->exited && !c->finalized && now - c->exit_mono_ms >= EXIT_GRACE_MS)
			finalize(c);
	for (struct start *s = starts; s != NULL; s = s->next)
		if (!s->killed && now >= s->deadline_ms)
			start_expire(s);
}

static void free_dead(void) {
	while (dead_clients != NULL) {
		struct client *cl = dead_clients;
		dead_clients = cl->next_dead;
		free(cl);
	}
	while (dead_containers != NULL) {
		struct container *c = dead_containers;
		dead_containers = c->next_dead;
		container_free(c);
	}
	while (dead_starts != NULL) {
		struct start *s = dead_starts;
		dead_starts = s->next_dead;
		free(s);
	}
}

void keeper_run(int lfd, const char *path, int sfd, pid_t holder, int pidns, int userns) {
	listen_fd = lfd;
	sock_path = path;
	sig_fd = sfd;
	holder_pid = holder_ns_pid = holder;
	holder_pidns = pidns;
	holder_userns = userns;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || ep_add(sig_fd, &sig_watch, EPOLLIN) < 0)
		_exit(1);
	if (listen_fd >= 0 && ep_add(listen_fd, &listen_watch, EPOLLIN) < 0)
		_exit(1);
	spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	reap();
	struct epoll_event ev[32];
	for (;;) {
		int n = epoll_wait(ep, ev, (int)(sizeof ev / sizeof ev[0]), next_timeout());
		if (n < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		for (int i = 0; i < n; i++) {
			struct watch *w = ev[i].data.ptr;
			switch (w->type) {
			case W_SIGNAL:
				handle_signals();
				break;
			case W_LISTEN:
				accept_clients();
				break;
			case W_CLIENT: {
				struct client *cl = (struct client *)w;
				if (!cl->dead)
					client_event(cl, ev[i].events);
				break;
			}
			case W_STREAM: {
				struct stream *s = (struct stream *)w;
				if (s->fd >= 0 && !s->c->dead)
					stream_read(s);
				break;
			}
			case W_RUNNER: {
				struct start *s = (struct start *)w;
				if (s->res_fd >= 0)
					runner_readable(s);
				break;
			}
			}
		}
		check_deadlines();
		free_dead();
	}
}
