#!/bin/bash
# guest-systemd.sh COMMAND...: run COMMAND under systemd as PID 1, inside
# ../shared/vm's cgroup v2 guest (integration/cgroupv2.sh runs it there).
# The guest's own PID 1 is the kit's init script, which runs its command as
# a child, so systemd gets a PID namespace of its own (unshare --pid, with
# container=peapod-guest so that it stops by exiting, not by powering off).
# COMMAND runs as a service of it, peapod-guest-tests.service, with the
# environment and working directory it was given here, and its exit status
# is systemd's (FailureAction/SuccessAction=exit). Its stdout and stderr
# are this script's (the guest's output ttys), so output streams live.
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: $0 COMMAND..." >&2; exit 2; }
t0=$EPOCHREALTIME
dir=/run/peapod-guest
mkdir -p "$dir"
out=$(readlink -f /proc/$$/fd/1) err=$(readlink -f /proc/$$/fd/2)
case "$out" in /dev/*) ;; *) echo "guest-systemd: stdout is $out, not a device a unit can write to" >&2; exit 2 ;; esac
case "$err" in /dev/*) ;; *) err=$out ;; esac

{
  export -p | grep -v -E '^declare -x (SHLVL|PWD|OLDPWD|_)='
  printf 'cd %q\n' "$PWD"
  printf 'echo "guest-systemd: systemd up in $(( ${EPOCHREALTIME/./} / 1000 - %s ))ms; $(systemctl --version | head -1)"\n' "$(( ${t0/./} / 1000 ))"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} >"$dir/run"

# Units a test run has no use for: devices are static here, nobody logs in.
mask="systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-udev-trigger.service
  systemd-udev-settle.service getty.target console-getty.service getty@tty1.service serial-getty@ttyS0.service
  systemd-logind.service systemd-timesyncd.service systemd-networkd.service systemd-resolved.service
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-tmpfiles-clean.timer
  cron.service systemd-journal-flush.service systemd-remount-fs.service systemd-firstboot.service"
for u in $mask; do ln -sf /dev/null "/etc/systemd/system/$u"; done
# Nor generators (fstab, getty, gpt-auto, ...): each is a process systemd
# waits for at start, and process creation is slow in the guest.
mkdir -p /etc/systemd/system-generators
for g in /lib/systemd/system-generators/*; do ln -sf /dev/null "/etc/systemd/system-generators/${g##*/}"; done

# Only what the tests use is started: the D-Bus socket and bus, not
# sysinit.target (journal, tmpfiles, sysctl, ...: tens of seconds in an
# emulated guest, and the guest's kit has set up the mounts already).
for u in dbus.socket dbus.service; do
  mkdir -p "/etc/systemd/system/$u.d"
  printf '[Unit]\nDefaultDependencies=no\n' >"/etc/systemd/system/$u.d/peapod-guest.conf"
done
cat >/etc/systemd/system/peapod-guest-tests.service <<EOF
[Unit]
Description=peapod tests under systemd
DefaultDependencies=no
Requires=dbus.socket
After=dbus.socket
SuccessAction=exit
FailureAction=exit

[Service]
Type=oneshot
ExecStart=/bin/bash $dir/run
StandardInput=null
StandardOutput=file:$out
StandardError=file:$err
TimeoutStartSec=infinity
# The tests start daemons and containers below this unit; they are stopped
# with it.
KillMode=control-group
Delegate=yes
EOF

# dbus-daemon's socket and systemd's own D-Bus API must both answer: the
# daemon's systemd driver probes the bus.
exec unshare --pid --fork --mount-proc --kill-child \
  env -i container=peapod-guest PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --unit=peapod-guest-tests.service --log-target=console --log-level=warning \
  --show-status=false </dev/null >"$err" 2>&1
