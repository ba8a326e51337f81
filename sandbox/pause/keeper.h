// Shared declarations of the pod keeper (pause.c, keeper.c, log.c).
// See keeper.c for the control protocol and pause.go for why this is C.
#ifndef PEAPOD_KEEPER_H
#define PEAPOD_KEEPER_H

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// A CRI log line longer than this is split into P pieces of this size.
#define LOG_LINE_MAX 16384

// Every object registered in epoll starts with a watch, so that the event's
// data pointer tells what kind of object became ready.
enum watch_type { W_SIGNAL = 1, W_LISTEN, W_CLIENT, W_STREAM, W_RUNNER };
struct watch {
	enum watch_type type;
};

struct container;

// One output of a container: a pipe read end, or the terminal master.
struct stream {
	struct watch w;
	int fd;          // -1 once at EOF (or never opened)
	int kind;        // 1 = stdout, 2 = stderr (the attach frame's stream byte)
	char *part;      // unterminated line carried over to the next read
	size_t plen, pcap;
	struct container *c;
};

struct client;

struct container {
	struct container *next;
	char *id;
	char *log_path;     // relative to log_dir_fd; NULL: output is discarded
	int log_dir_fd;     // O_PATH fd of the pod's log directory, -1 without a log
	char *exit_file;
	int log_fd;         // -1: not logging (no path, or reopen never worked)
	unsigned long log_drops; // lines lost to failed log writes
	int log_errno;           // errno of the last failed log write; 0 once one succeeds
	int tty, stdin_once;
	int stdin_fd;       // keeper's stdin write end, or the tty master; -1
	struct stream out[2];
	pid_t pid;          // container init in the host PID namespace, 0 = none
	int starting;       // its runner has not reported yet (keeper.c struct start)
	int exited, finalized, dead;
	int code;                  // exit code, 128+signal when killed
	long long finished_ns;     // CLOCK_REALTIME of the exit
	long long exit_mono_ms;    // CLOCK_MONOTONIC of the exit, for the 2 s grace
	struct client *waiters, *attachers;
	struct container *next_dead;
};

// log.c
long long now_realtime_ns(void);
long long now_mono_ms(void);
int write_all(int fd, const void *buf, size_t n);
void stream_feed(struct stream *s, const char *data, size_t n);
void stream_flush(struct stream *s);
int log_open_dir(struct container *c, const char *dir);
int log_reopen(struct container *c);
const char *log_path_hint(int err);
int write_exit_file(const struct container *c);
const char *errno_text(int err);

// keeper.c
void log_state_changed(struct container *c);
// holder_pidns and holder_userns are the holder's namespaces (-1: none),
// handed to every runner at fds RUNNER_PIDNS_FD and RUNNER_USERNS_FD.
// sock_path is where listen_fd is bound: SIGUSR1 binds it again there.
void keeper_run(int listen_fd, const char *sock_path, int sig_fd, pid_t holder, int holder_pidns, int holder_userns) __attribute__((noreturn));

// pause.c
int make_listener(const char *path);
// The keeper's entry for argv "BINARY pod-pause ARGS..." (PEAPOD_PAUSE_COMMAND).
#define PEAPOD_PAUSE_COMMAND "pod-pause"
void peapod_pause_main(int argc, char **argv, char **envp) __attribute__((noreturn));

// The runner's descriptors: 0-2 stdio, 3 result, 4 terminal socket, and the
// holder's namespaces, which the runner's containers join by these handles
// (sandbox/runner). HOLDER_ENV tells the runner the holder's PID and which
// of the two it passed: "PID[ pid][ user]".
#define RUNNER_PIDNS_FD 5
#define RUNNER_USERNS_FD 6
#define RUNNER_FDS 7
#define HOLDER_ENV "PEAPOD_HOLDER_PID"

#endif
