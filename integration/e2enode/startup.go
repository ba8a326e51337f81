package e2enode

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"
)

// maxRegistrationDelay bounds how long after its start the kubelet may
// take to register its node. The kubelet's CSINode initialisation
// (pkg/volume/csi/csi_plugin.go) tries at about 0, 0.03, 0.27, 2.2 and
// 17.6 s, then not before ~140 s: a node registered after the 17.6 s try
// stays NotReady past the suite's 120 s wait. Before the kubelet had
// --node-ip, its DNS lookups of the node name cost 2x10 s here.
const maxRegistrationDelay = 15 * time.Second

// registrationDelay reads a kubelet log (klog lines "I1206 21:53:42.109873
// ...") and returns the time from its first line to "Successfully
// registered node".
func registrationDelay(path string) (time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var first time.Time
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		ts, ok := klogTime(line)
		if !ok {
			continue
		}
		if first.IsZero() {
			first = ts
		}
		if strings.Contains(line, `"Successfully registered node"`) {
			return ts.Sub(first), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	if first.IsZero() {
		return 0, fmt.Errorf("%s: no klog line", path)
	}
	return 0, fmt.Errorf("%s: the kubelet never registered its node", path)
}

// klogTime parses the header of a klog line: severity, MMDD, hh:mm:ss.micros.
func klogTime(line string) (time.Time, bool) {
	if len(line) < 21 || !strings.ContainsRune("IWEF", rune(line[0])) {
		return time.Time{}, false
	}
	ts, err := time.Parse("0102 15:04:05.000000", line[1:21])
	return ts, err == nil
}
