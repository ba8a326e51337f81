// The first half of execcg's join (see execcg.go), in "peapod init" before
// libcontainer's nsexec: while still in the host's mount namespace, open
// the tasks files listed in the daemon's memfd at fd 3, and put their
// descriptor numbers, after a magic line, in a new memfd at fd 3 for the
// Go half. All of them are close-on-exec: none reaches the command.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "execcg.h"

static void __attribute__((noreturn)) fail(const char *what, const char *path) {
	dprintf(2, "peapod: join the container's cgroups: %s %s: %s\n", what, path, strerror(errno));
	_exit(EXECCG_EXIT);
}

static char *read_list(int fd) {
	struct stat st;
	if (fstat(fd, &st) < 0)
		fail("stat", "the cgroup list");
	char *buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL)
		fail("allocate", "the cgroup list");
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fail("read", "the cgroup list");
		got += (size_t)r;
	}
	buf[got] = '\0';
	return buf;
}

void execcg_open(int argc, char **argv) {
	if (argc < 2 || strcmp(argv[1], "init") != 0)
		return;
	char link[64];
	ssize_t n = readlink("/proc/self/fd/" EXECCG_FD_STR, link, sizeof link - 1);
	if (n < 0)
		return;
	link[n] = '\0';
	const char *want = "/memfd:" EXECCG_NAME " ";
	if (strncmp(link, want, strlen(want)) != 0)
		return; // fd 3 is someone else's (a container start, a passed file)
	char *list = read_list(EXECCG_FD);
	int out = memfd_create(EXECCG_FDS_NAME, MFD_CLOEXEC);
	if (out < 0)
		fail("create", "the descriptor list");
	dprintf(out, "%s\n", EXECCG_MAGIC);
	for (char *line = list, *next; *line != '\0'; line = next) {
		next = strchr(line, '\n');
		if (next == NULL)
			next = line + strlen(line);
		else
			*next++ = '\0';
		if (*line == '\0')
			continue;
		int fd;
		do
			fd = open(line, O_WRONLY | O_CLOEXEC);
		while (fd < 0 && errno == EINTR);
		if (fd < 0)
			fail("open", line);
		dprintf(out, "%d\n", fd);
	}
	free(list);
	if (dup3(out, EXECCG_FD, O_CLOEXEC) < 0)
		fail("dup", "the descriptor list");
	close(out);
}
