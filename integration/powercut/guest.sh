#!/bin/bash
# Inside the powercut guest (powercut.sh): mount the persistent disk (ext4
# replays its journal: what the cut left), then run one boot's checks and
# churn (boot_test.go).
set -e
mkdir -p /var/lib/peapod-pc
mount -t ext4 /dev/ubdb /var/lib/peapod-pc
modprobe -a overlay veth bridge 2>/dev/null || true
mkdir -p /tmp/bin && cp "$POWERCUT_WORK"/bin/* /tmp/bin/
export PEAPOD_BINARY=/tmp/bin/peapod
exec /tmp/bin/powercut.test -test.run '^TestPowercutBoot$' -test.v -test.count=1 -test.timeout 30m
