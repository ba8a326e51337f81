package keeper

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"

	"github.com/peapod-cri/peapod/sandbox/pause"
	"github.com/peapod-cri/peapod/sandbox/proc"
)

// Process is a running keeper: its PID, start time and socket.
type Process struct {
	PID    int
	Start  uint64
	Socket string
}

// Running finds "peapod pod-pause ... -S SOCKET" processes whose
// socket is in dir: keepers (their holders read "/pause" and die with them;
// those of an older peapod match too).
func Running(dir string) []Process {
	entries, _ := os.ReadDir("/proc")
	var out []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimSuffix(cmdline, []byte{0}), []byte{0})
		if len(args) < 2 || string(args[1]) != pause.Command {
			continue
		}
		for i := 2; i+1 < len(args); i++ {
			if string(args[i]) == "-S" && filepath.Dir(string(args[i+1])) == dir {
				start, err := proc.StartTime(pid)
				if err == nil {
					out = append(out, Process{PID: pid, Start: start, Socket: string(args[i+1])})
				}
				break
			}
		}
	}
	return out
}

// HolderStart is the start time of the keeper's PID holder holderPID, for
// a pod recorded by a peapod from before holders' start times were: the
// process is taken for the holder only if it is still the running keeper's
// child in a namespace of kind nsKind ("pid", "user") other than the
// keeper's. Otherwise 0, which no process has.
func HolderStart(keeperPID int, keeperStart uint64, holderPID int, nsKind string) uint64 {
	if !proc.Alive(keeperPID, keeperStart) || proc.ParentPID(holderPID) != keeperPID {
		return 0
	}
	ns := func(pid int) (string, error) { return os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/" + nsKind) }
	keeperNS, err1 := ns(keeperPID)
	holderNS, err2 := ns(holderPID)
	if err1 != nil || err2 != nil || keeperNS == holderNS {
		return 0
	}
	start, err := proc.StartTime(holderPID)
	if err != nil || proc.ParentPID(holderPID) != keeperPID {
		return 0
	}
	return start
}
