// CRI log writing for the pod keeper, and the exit file.
//
// Each output line becomes
//   <RFC 3339 UTC timestamp with nanoseconds> <stdout|stderr> <F|P> <content>\n
// A line longer than LOG_LINE_MAX is written as P pieces of LOG_LINE_MAX
// bytes followed by an F piece with the rest. An unterminated last line is
// written as P at EOF (stream_flush), as containerd does: the kubelet adds a
// newline to F lines only, so `printf DONE` reads back as "DONE" (the node
// e2e termination-message-from-logs spec checks it). A failed log write drops the line (it is
// counted) and never blocks the container: the keeper keeps reading. A line
// a full disk cut short is taken back out of the file, so that the file
// holds whole lines only. The daemon hears when writes start failing and
// when they work again (log_state_changed).
#include "keeper.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

long long now_realtime_ns(void) {
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		return 0;
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

long long now_mono_ms(void) {
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		return 0;
	return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

// write_all writes n bytes to a blocking fd, retrying short writes and
// EINTR. It returns 0, or -1 with errno set.
int write_all(int fd, const void *buf, size_t n) {
	const char *p = buf;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

// writev_all is write_all for an iovec array; it consumes iov and adds
// the bytes written to *done.
static int writev_all(int fd, struct iovec *iov, int cnt, size_t *done) {
	while (cnt > 0) {
		if (iov->iov_len == 0) {
			iov++, cnt--;
			continue;
		}
		ssize_t w = writev(fd, iov, cnt);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		*done += (size_t)w;
		size_t left = (size_t)w;
		while (cnt > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++, cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
	return 0;
}

// The CRI line header: "2006-01-02T15:04:05.000000000Z stdout F ".
#define LOG_HEADER_MAX 48

// put_digits writes v as n decimal digits, zero-padded, at p.
static void put_digits(char *p, long v, int n) {
	while (n-- > 0) {
		p[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

// log_header formats the header of a line logged now into hdr and returns
// its length. By hand, with the date of the current second kept: musl's
// snprintf took 2.5-3.5 us for it (glibc's 0.6), the keeper's main cost
// per line of a chatty container.
static size_t log_header(char *hdr, int kind, char tag) {
	static time_t cached_sec = -1;
	static char date[19]; // "2006-01-02T15:04:05"
	struct timespec ts;
	struct tm tm;
	int ok = clock_gettime(CLOCK_REALTIME, &ts) == 0;
	if (!ok || ts.tv_sec != cached_sec) {
		if (!ok || gmtime_r(&ts.tv_sec, &tm) == NULL) {
			// As snprintf of a zeroed struct tm wrote it, with 0 ns.
			memset(&tm, 0, sizeof tm);
			ts.tv_nsec = 0;
			cached_sec = -1;
		} else {
			cached_sec = ts.tv_sec;
		}
		put_digits(date, tm.tm_year + 1900L, 4);
		date[4] = '-';
		put_digits(date + 5, tm.tm_mon + 1, 2);
		date[7] = '-';
		put_digits(date + 8, tm.tm_mday, 2);
		date[10] = 'T';
		put_digits(date + 11, tm.tm_hour, 2);
		date[13] = ':';
		put_digits(date + 14, tm.tm_min, 2);
		date[16] = ':';
		put_digits(date + 17, tm.tm_sec, 2);
	}
	char *p = hdr;
	memcpy(p, date, 19);
	p += 19;
	*p++ = '.';
	put_digits(p, ts.tv_nsec, 9);
	p += 9;
	memcpy(p, kind == 2 ? "Z stderr " : "Z stdout ", 9);
	p += 9;
	*p++ = tag;
	*p++ = ' ';
	return (size_t)(p - hdr);
}

// log_piece writes one CRI line whose content is a followed by b.
static void log_piece(struct stream *s, char tag, const char *a, size_t alen,
		      const char *b, size_t blen) {
	struct container *c = s->c;
	if (c->log_fd < 0)
		return;
	char hdr[LOG_HEADER_MAX];
	size_t h = log_header(hdr, s->kind, tag);
	struct iovec iov[4] = {
		{hdr, h},
		{(void *)a, alen},
		{(void *)b, blen},
		{"\n", 1},
	};
	size_t done = 0;
	if (writev_all(c->log_fd, iov, 4, &done) < 0) {
		int err = errno;
		// Disk full or similar: drop the line, keep going.
		c->log_drops++;
		if (done > 0) { // the keeper is the file's only writer (O_APPEND)
			off_t end = lseek(c->log_fd, 0, SEEK_END);
			if (end >= (off_t)done) {
				int rc = ftruncate(c->log_fd, end - (off_t)done);
				(void)rc; // on failure the next line still starts after the cut one
			}
		}
		if (c->log_errno != err) {
			c->log_errno = err;
			log_state_changed(c);
		}
		return;
	}
	if (c->log_errno != 0) {
		c->log_errno = 0;
		log_state_changed(c);
	}
}

// stash appends data to the stream's carried-over partial line. The caller
// guarantees plen + n <= LOG_LINE_MAX. On allocation failure the bytes are
// logged at once as a P piece rather than lost.
static void stash(struct stream *s, const char *data, size_t n) {
	if (s->plen + n > s->pcap) {
		size_t want = s->pcap ? s->pcap : 256;
		while (want < s->plen + n)
			want *= 2;
		if (want > LOG_LINE_MAX)
			want = LOG_LINE_MAX;
		char *p = realloc(s->part, want);
		if (p == NULL) {
			log_piece(s, 'P', s->part, s->plen, data, n);
			s->plen = 0;
			return;
		}
		s->part = p;
		s->pcap = want;
	}
	memcpy(s->part + s->plen, data, n);
	s->plen += n;
}

// drop_part forgets the carried-over line, releasing a large buffer.
static void drop_part(struct stream *s) {
	s->plen = 0;
	if (s->pcap > 4096) {
		free(s->part);
		s->part = NULL;
		s->pcap = 0;
	}
}

// stream_feed logs the bytes just read from a container's output.
void stream_feed(struct stream *s, const char *data, size_t n) {
	if (s->c->log_fd < 0) {
		s->plen = 0;
		return;
	}
	while (n > 0) {
		size_t room = LOG_LINE_MAX - s->plen;
		// A newline right after `room` bytes still ends a full line.
		size_t look = n < room + 1 ? n : room + 1;
		const char *nl = memchr(data, '\n', look);
		if (nl != NULL) {
			size_t take = (size_t)(nl - data);
			log_piece(s, 'F', s->part, s->plen, data, take);
			drop_part(s);
			data += take + 1;
			n -= take + 1;
		} else if (n >= room) {
			log_piece(s, 'P', s->part, s->plen, data, room);
			drop_part(s);
			data += room;
			n -= room;
		} else {
			stash(s, data, n);
			return;
		}
	}
}

// stream_flush writes an unterminated last line as P and frees the buffer.
void stream_flush(struct stream *s) {
	if (s->plen > 0)
		log_piece(s, 'P', s->part, s->plen, NULL, 0);
	free(s->part);
	s->part = NULL;
	s->plen = s->pcap = 0;
}

// The log is opened beneath the pod's log directory by handle: the
// directory is opened once at start (log_open_dir), and the log's relative
// path is resolved from it at start and at every reopen without following
// any symlink and without leaving it (openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS). A directory of the path replaced by a symlink after
// the create (anyone who can write the pod's log directory, such as a
// container with a hostPath mount of it) cannot send the keeper's writes
// elsewhere. Only a regular file is opened for writing: a FIFO there would
// block the keeper, a device node would be opened by host root.

static int openat2_beneath(int dir, const char *name, int flags, mode_t mode) {
	struct open_how how = {
		.flags = (unsigned long long)(flags | O_NOFOLLOW | O_CLOEXEC),
		.mode = (unsigned long long)mode,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long fd;
	do // EAGAIN: a rename raced with the lookup
		fd = syscall(SYS_openat2, dir, name, &how, sizeof how);
	while (fd < 0 && (errno == EINTR || errno == EAGAIN));
	return (int)fd;
}

// log_open_dir opens the pod's log directory for c: the kubelet's
// absolute path, not the container's to choose. Its last component is not
// followed if it is a symlink (ELOOP): the directory is an entry of the
// kubelet's pod logs directory, which a container with a hostPath mount of
// it can replace by a symlink to anywhere on the host. The directories
// above it are the node's (a symlinked /var/log keeps working).
int log_open_dir(struct container *c, const char *dir) {
	if (dir[0] != '/') {
		errno = EINVAL;
		return -1;
	}
	int fd;
	do
		fd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		struct stat st; // say "symlink" rather than "not a directory"
		if (errno == ENOTDIR && lstat(dir, &st) == 0 && S_ISLNK(st.st_mode))
			errno = ELOOP;
		return -1;
	}
	c->log_dir_fd = fd;
	return 0;
}

// open_log_file opens (creating it) the regular file name in dir.
static int open_log_file(int dir, const char *name) {
	for (int try = 0; try < 3; try++) {
		int fd = openat2_beneath(dir, name, O_WRONLY | O_APPEND | O_CREAT | O_EXCL, 0640);
		if (fd >= 0 || errno != EEXIST)
			return fd;
		// It exists: look at what it is before opening it for writing.
		int path = openat2_beneath(dir, name, O_PATH, 0);
		if (path < 0) {
			if (errno == ENOENT)
				continue; // removed meanwhile
			return -1;
		}
		struct stat st;
		if (fstat(path, &st) < 0) {
			int e = errno;
			close(path);
			errno = e;
			return -1;
		}
		if (!S_ISREG(st.st_mode)) {
			close(path);
			errno = S_ISDIR(st.st_mode) ? EISDIR : S_ISLNK(st.st_mode) ? ELOOP : EINVAL;
			return -1;
		}
		// The checked inode itself, through its handle.
		char proc[64];
		snprintf(proc, sizeof proc, "/proc/self/fd/%d", path);
		do
			fd = open(proc, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
		while (fd < 0 && errno == EINTR);
		int e = errno;
		close(path);
		errno = e;
		return fd;
	}
	errno = EAGAIN;
	return -1;
}

// open_log creates the missing directories of the log's path beneath the
// pod's log directory and opens the log, all by handle.
static int open_log(struct container *c) {
	char *rel = strdup(c->log_path);
	if (rel == NULL)
		return -1;
	int dir = fcntl(c->log_dir_fd, F_DUPFD_CLOEXEC, 0);
	if (dir < 0) {
		free(rel);
		return -1;
	}
	int fd = -1;
	char *name = rel;
	for (;;) {
		char *slash = strchr(name, '/');
		if (slash == NULL)
			break;
		*slash = '\0';
		if (name[0] != '\0' && strcmp(name, ".") != 0) {
			if (strcmp(name, "..") == 0) {
				errno = EINVAL;
				goto out;
			}
			if (mkdirat(dir, name, 0755) < 0 && errno != EEXIST)
				goto out;
			int next = openat2_beneath(dir, name, O_PATH | O_DIRECTORY, 0);
			if (next < 0) {
				struct stat st; // say "symlink" rather than "not a directory"
				if (errno == ENOTDIR && fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
					errno = ELOOP;
				goto out;
			}
			close(dir);
			dir = next;
		}
		name = slash + 1;
	}
	if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
		errno = EINVAL;
		goto out;
	}
	fd = open_log_file(dir, name);
out:;
	int e = errno;
	close(dir);
	free(rel);
	errno = e;
	return fd;
}

// log_path_hint explains the refusals of open_log in a reply.
const char *log_path_hint(int err) {
	switch (err) {
	case ELOOP:
	case EXDEV:
	case ENOTDIR:
	case EISDIR:
	case EINVAL:
		return " (a container log must be a regular file beneath the pod's log directory, reached without symlinks)";
	}
	return "";
}

// log_reopen opens the log path again (the kubelet renamed the old file) and
// switches to it. Lines are written whole between event-loop steps, so each
// goes to exactly one of the two files. On failure the old fd is kept.
int log_reopen(struct container *c) {
	if (c->log_path == NULL) {
		if (c->log_fd >= 0)
			close(c->log_fd);
		c->log_fd = -1;
		return 0;
	}
	int fd = open_log(c);
	if (fd < 0)
		return -1;
	if (c->log_fd >= 0)
		close(c->log_fd);
	c->log_fd = fd;
	return 0;
}

// write_exit_file records "<code> <finished_unix_nanos>\n" atomically:
// EXITFILE.tmp is written, then renamed over EXITFILE.
int write_exit_file(const struct container *c) {
	size_t n = strlen(c->exit_file);
	char *tmp = malloc(n + 5);
	if (tmp == NULL)
		return -1;
	memcpy(tmp, c->exit_file, n);
	memcpy(tmp + n, ".tmp", 5);
	char line[64];
	int len = snprintf(line, sizeof line, "%d %lld\n", c->code, c->finished_ns);
	int fd;
	do
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	while (fd < 0 && errno == EINTR);
	int rc = -1;
	if (fd >= 0) {
		int werr = write_all(fd, line, (size_t)len);
		// No fsync: the file only has to survive the daemon, not the host
		// (the containers do not survive a host crash either).
		if (close(fd) == 0 && werr == 0 && rename(tmp, c->exit_file) == 0)
			rc = 0;
		else
			unlink(tmp);
	}
	free(tmp);
	return rc;
}

// errno_text is strerror with glibc's texts where musl's differ, so that
// the keeper's replies and reports read the same whichever libc it links
// (and as Go's syscall.Errno spells them, but for the capital).
const char *errno_text(int err) {
#ifndef __GLIBC__
	switch (err) {
	case EIO: return "Input/output error";
	case ECHILD: return "No child processes";
	case ENOMEM: return "Cannot allocate memory";
	case EBUSY: return "Device or resource busy";
	case EXDEV: return "Invalid cross-device link";
	case EMFILE: return "Too many open files";
	case ENOTTY: return "Inappropriate ioctl for device";
	case ESPIPE: return "Illegal seek";
	case EDOM: return "Numerical argument out of domain";
	case ERANGE: return "Numerical result out of range";
	case EDEADLK: return "Resource deadlock avoided";
	case ENAMETOOLONG: return "File name too long";
	case ELOOP: return "Too many levels of symbolic links";
	case ETIME: return "Timer expired";
	case EOVERFLOW: return "Value too large for defined data type";
	case EILSEQ: return "Invalid or incomplete multibyte or wide character";
	case ENOTSOCK: return "Socket operation on non-socket";
	case EMSGSIZE: return "Message too long";
	case EOPNOTSUPP: return "Operation not supported";
	case EADDRINUSE: return "Address already in use";
	case EADDRNOTAVAIL: return "Cannot assign requested address";
	case ENETUNREACH: return "Network is unreachable";
	case ENETRESET: return "Network dropped connection on reset";
	case ECONNABORTED: return "Software caused connection abort";
	case EISCONN: return "Transport endpoint is already connected";
	case ENOTCONN: return "Transport endpoint is not connected";
	case ESHUTDOWN: return "Cannot send after transport endpoint shutdown";
	case ETIMEDOUT: return "Connection timed out";
	case EHOSTUNREACH: return "No route to host";
	case EINPROGRESS: return "Operation now in progress";
	case EUCLEAN: return "Structure needs cleaning";
	case EDQUOT: return "Disk quota exceeded";
	case EOWNERDEAD: return "Owner died";
	}
#endif
	return strerror(err);
}
