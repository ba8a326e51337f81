// peapod-pause is the pod's keeper (pause) on its own: the C of
// sandbox/pause with a plain main, linked statically against musl by
// build.sh. One runs per pod, so its private pages are the per-pod memory
// of peapod: with no Go runtime, no dynamic loader and musl's few pages of
// libc state instead of glibc's, a keeper costs about a third of what the
// same C costs in a static glibc binary (docs/performance.md). The daemon
// embeds it (sandbox/helperbin) and starts one per pod from a sealed memfd.
#include "../../sandbox/pause/keeper.h"

#include <string.h>
#include <unistd.h>

// Which libc this binary links, for the build's check (TestKeeperBuild):
// musl defines no macro of its own, glibc does; build.sh uses only these two.
#ifdef __GLIBC__
#define KEEPER_LIBC "glibc"
#else
#define KEEPER_LIBC "musl"
#endif
__attribute__((used, retain)) static const char keeper_libc[] = "peapod-keeper-libc=" KEEPER_LIBC;

int main(int argc, char **argv, char **envp) {
	if (argc >= 2 && strcmp(argv[1], PEAPOD_PAUSE_COMMAND) == 0)
		peapod_pause_main(argc, argv, envp); // does not return
	static const char usage[] = "peapod-pause is started by the peapod daemon, one per pod, not by hand\n";
	(void)!write(2, usage, sizeof usage - 1);
	return 2;
}
