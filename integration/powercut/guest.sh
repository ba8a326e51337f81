#!/bin/bash
# Inside the powercut guest (powercut.sh): mount the persistent disk (ext4
# replays its journal: what the cut left), then run one boot's checks and
# churn (boot_test.go).
set -e
mkdir -p /var/lib/peapod-pc
mount -t ext4 /dev/ubdb /var/lib/peapod-pc
modprobe -a overlay veth bridge 2>/dev/null || true
# The binaries on the disk itself (the hostfs share is slow to read):
# copied and synced once.
bin=/var/lib/peapod-pc/bin
if [ ! -e $bin/.complete ]; then
  rm -rf $bin && mkdir -p $bin && cp "$POWERCUT_WORK"/bin/* $bin/ && sync && touch $bin/.complete && sync
fi
export PEAPOD_BINARY=$bin/peapod
exec $bin/powercut.test -test.run '^TestPowercutBoot$' -test.v -test.count=1 -test.timeout 30m
