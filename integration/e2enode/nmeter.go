package e2enode

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// nmeterSource stands in for busybox's nmeter applet, which upstream's
// busybox image has and Debian's busybox lacks. The Containers Lifecycle
// specs (container_lifecycle_pod_construction.go) time-stamp each step
// with `date -u +%FT$(nmeter -d0 '%3t' | head -n1)Z`: only the %Nt
// directive (the time of day with N decimals) and -d MSEC are served; a
// line is written every MSEC milliseconds until a write fails (head).
const nmeterSource = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int put(const char *fmt) {
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') { putchar(*p); continue; }
		int n = 0;
		if (p[1] >= '0' && p[1] <= '9') n = *++p - '0';
		if (p[1] != 't') { putchar('%'); continue; }
		p++;
		printf("%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
		if (n > 0) {
			if (n > 9) n = 9;
			char frac[16];
			snprintf(frac, sizeof frac, "%09ld", ts.tv_nsec);
			printf(".%.*s", n, frac);
		}
	}
	putchar('\n');
	return fflush(stdout) == 0 && !ferror(stdout);
}

int main(int argc, char **argv) {
	long ms = 1000;
	int opt;
	while ((opt = getopt(argc, argv, "d:")) != -1) {
		if (opt != 'd') { fprintf(stderr, "usage: nmeter [-d MSEC] FORMAT\n"); return 1; }
		ms = atol(optarg);
	}
	if (optind >= argc) { fprintf(stderr, "usage: nmeter [-d MSEC] FORMAT\n"); return 1; }
	for (;;) {
		if (!put(argv[optind])) return 0;
		if (ms < 0) return 0;
		struct timespec d = { ms / 1000, (ms % 1000) * 1000000L };
		nanosleep(&d, NULL);
	}
}
`

// nmeterTree compiles nmeter (dynamic: the busybox base has glibc) into
// /bin/nmeter of a fresh tree under dir.
func nmeterTree(t *testing.T, dir string) string {
	tree := filepath.Join(dir, "nmeter")
	if err := os.MkdirAll(filepath.Join(tree, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "nmeter.c")
	if err := os.WriteFile(src, []byte(nmeterSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-O2", "-o", filepath.Join(tree, "bin", "nmeter"), src).CombinedOutput(); err != nil {
		t.Fatalf("gcc nmeter: %v: %s", err, out)
	}
	return tree
}
