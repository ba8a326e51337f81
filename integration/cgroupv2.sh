#!/usr/bin/env bash
# make test-cgroupv2: the cgroup unit tests and the resource integration
# tests under a pure cgroup v2 hierarchy. On a v2 host they run here;
# otherwise they are built here (go test -c, bin/peapod) and run inside
# ../shared/vm's guest. Fails when neither is possible: it never reports
# success without running the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
TAGS=$(cat build-tags.txt)
# The resource tests: limits in the files, 0.2 CPU, live update, stats, OOM;
# and the exec helper's AppArmor tests, which need the AppArmor of
# make test-cgroupv2-full's qemu guest (they skip without it).
TESTS=${CGV2_TESTS:-'^(TestResources|TestExecPathsAgree|TestCgroupV2Only|TestEscapeExecAppArmorProc|TestExecAppArmorWithoutPrivateProcfs)$'}
# Under systemd as PID 1: the systemd driver through D-Bus.
SYSTEMD_TESTS=${CGV2_SYSTEMD_TESTS:-'^TestSystemdDriver$'}
VM_RUN=${VM_RUN:-../shared/vm/vm-run.sh}

if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  echo "test-cgroupv2: this host is cgroup v2: running the tests here"
  $GO test -tags "$TAGS" -count=1 -v ./cgroups/
  $GO test -tags "$TAGS" -count=1 -timeout 20m -v -run "$TESTS|$SYSTEMD_TESTS" ./integration/
  exit
fi
if [ ! -x "$VM_RUN" ]; then
  echo "test-cgroupv2: FAILED: this host is cgroup v1 and $VM_RUN (the cgroup v2 guest) is missing" >&2
  exit 1
fi

# Built on the host: compiling inside the emulated guest is very slow.
out=bin/cgroupv2
rm -rf "$out" && mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
# The shipped single binary, as make build makes it (runner and keeper
# embedded), so the guest runs what an operator installs.
make --no-print-directory build BIN="$out/peapod" GO="$GO" >/dev/null
$GO test -c -tags "$TAGS" -o "$out/cgroups.test" ./cgroups/
$GO test -c -tags "$TAGS" -o "$out/enter.test" ./sandbox/enter/
$GO test -c -tags "$TAGS" -o "$out/integration.test" ./integration/
# The busybox image's .debs and rootfs, cached on the host (the guest has
# no network), and shared into the guest at the same path.
$GO test -tags "$TAGS" -count=1 -run '^TestBusyboxRootfsRuns$' ./integration/testenv/ >/dev/null

# A guest image of our own, with the registry and nft the tests need and
# systemd + dbus to boot as PID 1 for the systemd driver's tests. The kit's
# cache key does not cover extra packages: the list keys the directory.
# (make test-cgroupv2-full passes its own, larger list: with apparmor.)
export CGV2_VM_EXTRA_PACKAGES=${CGV2_VM_EXTRA_PACKAGES:-docker-registry,nftables,systemd,systemd-sysv,dbus}
export CGV2_VM_CACHE=${CGV2_VM_CACHE:-/var/cache/peapod-cgv2-vm/pk-$(printf %s "$CGV2_VM_EXTRA_PACKAGES" | md5sum | cut -c1-8)}

# The UML backend ("auto" here) boots in seconds where it works; it dies at
# boot on some hosts (exit 125), and its kernel cannot run nftables (which
# the built-in network and the tests' guard tables need): where either is
# so, qemu TCG is used.
backend=${CGV2_VM_BACKEND:-}
if [ -z "$backend" ]; then
  backend=tcg
  if "$VM_RUN" --backend auto --timeout 120 -- sh -c 'test -f /sys/fs/cgroup/cgroup.controllers && test -x /usr/bin/docker-registry && nft add table ip peapod-cgv2-probe && nft delete table ip peapod-cgv2-probe' >/dev/null 2>&1; then
    backend=auto
  fi
fi
echo "test-cgroupv2: this host is cgroup v1: running the tests in $VM_RUN --backend $backend"
# The qemu guest's kernel has AppArmor. With apparmor_parser in the image
# (make test-cgroupv2-full's) it is used, so that the tests run under
# peapod's profiles as on an AppArmor host (TestExecPathsAgree then checks
# that execs run under the init's profile); without it (this target's
# image) it is hidden, as on the (AppArmor-less) build hosts.
APPARMOR_SETUP='if grep -q Y /sys/module/apparmor/parameters/enabled 2>/dev/null; then
      if command -v apparmor_parser >/dev/null; then
        mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security
        echo "guest: AppArmor enabled, $(apparmor_parser --version | head -1)"
      else
        echo N >/run/apparmor-off && mount --bind /run/apparmor-off /sys/module/apparmor/parameters/enabled
      fi
    fi'
# An emulated guest can freeze (seen once under qemu TCG: no output, the
# Go test timeout never fired). vm-run.sh then exits 124 (timeout) or 125
# (guest gone without an exit code): the whole run is tried once more, and
# the tests' own failures (any other code) are never retried.
run_guest() {
"$VM_RUN" --backend "$backend" --mem 3G --timeout "${CGV2_TIMEOUT:-1500}" \
  --share /var/cache/peapod-test --env PEAPOD_TEST_TIMEOUT_SCALE=10 -- \
  bash -c "set -e; uname -r; cat /sys/fs/cgroup/cgroup.controllers
    # The guest kernel has AppArmor but its image no apparmor_parser to load
    # profiles with; hide it, as on the (AppArmor-less) build hosts.
    $APPARMOR_SETUP
    # The daemon runs from the guest's tmpfs: executables on the 9p share
    # are slow to page in, and the daemon execs itself for every container.
    mkdir -p /tmp/peapod-bin && cp $out/peapod* /tmp/peapod-bin/ && export PEAPOD_BINARY=/tmp/peapod-bin/peapod
    (cd sandbox/enter && ../../$out/enter.test -test.count=1 -test.v)
    cd cgroups && ../$out/cgroups.test -test.count=1 -test.v
    cd ../integration && ../$out/integration.test -test.count=${CGV2_COUNT:-1} -test.timeout=45m -test.v -test.run '$TESTS'"
}
# The systemd driver under a real systemd: a second boot of the same image
# in which integration/guest-systemd.sh starts systemd as PID 1 (of a PID
# namespace) and runs the tests as its service. A boot of its own because
# the resource tests nest cgroups under their own, which v2 allows only in
# the guest's root cgroup (no internal processes below it).
run_guest_systemd() {
"$VM_RUN" --backend "$backend" --mem 3G --timeout "${CGV2_TIMEOUT:-1500}" \
  --share /var/cache/peapod-test --env PEAPOD_TEST_TIMEOUT_SCALE=10 --env PEAPOD_REQUIRE_SYSTEMD=1 -- \
  bash -c "set -e
    $APPARMOR_SETUP
    mkdir -p /tmp/peapod-bin && cp $out/peapod* $out/integration.test /tmp/peapod-bin/ && export PEAPOD_BINARY=/tmp/peapod-bin/peapod
    cd integration && exec ./guest-systemd.sh /tmp/peapod-bin/integration.test -test.count=${CGV2_SYSTEMD_COUNT:-1} -test.timeout=30m -test.v -test.run '$SYSTEMD_TESTS'"
}
# CGV2_SKIP_RESOURCES=1 / CGV2_SKIP_SYSTEMD=1 leave out one of the two;
# CGV2_SYSTEMD_COUNT=N runs the systemd tests N times (a race hunt).
# Runs fn; a guest that hung or died (vm-run exit 124/125) is tried once
# more, the tests' own failures (any other code) never.
with_retry() {
  local rc=0
  "$1" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 125 ]; then
    echo "test-cgroupv2: the guest hung or died (vm-run exit $rc); running the tests once more" >&2
    rc=0
    "$1" || rc=$?
  fi
  return "$rc"
}
rc=0
if [ "${CGV2_SKIP_RESOURCES:-}" != 1 ]; then
  t0=$SECONDS
  with_retry run_guest || rc=$?
  echo "test-cgroupv2: resource tests: exit $rc in $((SECONDS - t0))s"
fi
src=0
if [ "${CGV2_SKIP_SYSTEMD:-}" != 1 ]; then
  t0=$SECONDS
  with_retry run_guest_systemd || src=$?
  echo "test-cgroupv2: systemd driver tests under systemd as PID 1: exit $src in $((SECONDS - t0))s"
fi
[ "$rc" = 0 ] || exit "$rc"
exit "$src"
