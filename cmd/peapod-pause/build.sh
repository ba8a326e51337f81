#!/bin/sh
# build.sh OUT builds the pod's keeper, peapod-pause, into OUT: main.c and
# the keeper's C (sandbox/pause), linked statically against musl and
# stripped. The one build of the keeper: make build, testenv.BuildPeapod and
# the guest scripts all run this.
#
# musl's headers carry no Linux uapi headers, and glibc's must not mix with
# musl's: a temporary directory of symlinks to just linux/, asm/ (the
# arch's) and asm-generic/ is given with -isystem.
#
# Without musl-gcc (Debian: musl-tools) it falls back to gcc -static, glibc,
# with a warning; PEAPOD_KEEPER_LIBC=glibc forces that (for A/B). It prints
# "peapod-pause: LIBC" on stdout.
#
# Hardening: -fstack-protector-strong (musl sets the canary from AT_RANDOM;
# a smashed canary crashes at once, no handler runs) and
# -fstack-clash-protection (a probe per page of a large frame). Not used:
# -D_FORTIFY_SOURCE (glibc's only; musl has no __*_chk functions) and
# static-pie (Debian's musl-gcc specs link no rcrt1.o; the glibc keeper
# that go build made was a non-PIE static binary too, so no ASLR of the
# binary's own code is lost). The stack, heap and mmap areas are randomised
# either way.
set -eu
out=${1:?usage: build.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
src="$here/main.c $here/../../sandbox/pause/pause.c $here/../../sandbox/pause/keeper.c $here/../../sandbox/pause/log.c"
cflags="-static -Os -Wall -Werror -fstack-protector-strong -fstack-clash-protection -ffunction-sections -fdata-sections -Wl,--gc-sections -s"

libc=${PEAPOD_KEEPER_LIBC:-musl}
case $libc in
musl)
	if ! command -v musl-gcc >/dev/null 2>&1; then
		echo "build.sh: musl-gcc not found (apt-get install musl-tools): building the keeper with glibc, about 3 times its memory per pod" >&2
		libc=glibc
	fi ;;
glibc) ;;
*)
	echo "build.sh: PEAPOD_KEEPER_LIBC=$libc: want musl or glibc" >&2
	exit 2 ;;
esac

if [ "$libc" = glibc ]; then
	# shellcheck disable=SC2086 # word splitting of the lists is meant
	${CC:-gcc} $cflags -o "$out" $src
else
	arch=$(gcc -dumpmachine)
	uapi=$(mktemp -d)
	trap 'rm -rf "$uapi"' EXIT
	for d in /usr/include/linux "/usr/include/$arch/asm" /usr/include/asm-generic; do
		if [ ! -d "$d" ]; then
			echo "build.sh: $d missing (Debian: linux-libc-dev)" >&2
			exit 1
		fi
	done
	ln -s /usr/include/linux "$uapi/linux"
	ln -s "/usr/include/$arch/asm" "$uapi/asm"
	ln -s /usr/include/asm-generic "$uapi/asm-generic"
	# shellcheck disable=SC2086
	musl-gcc $cflags -isystem "$uapi" -o "$out" $src
fi
echo "peapod-pause: $libc"
