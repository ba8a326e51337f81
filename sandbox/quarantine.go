package sandbox

import (
	"errors"
	"fmt"
	"github.com/peapod-cri/peapod/sandbox/runner"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/peapod-cri/peapod/sandbox/store"
)

// A metadata record that cannot be used never keeps the daemon from
// starting: it is moved aside (store.Quarantine) and the daemon starts
// without it; reconcileHalfDone then removes what no record names (keeper,
// bundle, pod files), as after a crash.

// badRecord is a record recover could not use, and why.
type badRecord struct {
	bucket []byte
	id     string
	data   []byte
	err    error
}

// quarantineAll moves the bad records aside, logging each.
func (r *Runtime) quarantineAll(bad []badRecord) {
	for _, b := range bad {
		if err := r.store.Quarantine(b.bucket, b.id, b.data); err != nil {
			r.log.Error("metadata record cannot be used, and moving it aside failed; it is ignored", "bucket", string(b.bucket), "id", b.id, "reason", b.err, "err", err)
			continue
		}
		r.log.Warn("metadata record cannot be used; moved aside", "bucket", string(b.bucket), "id", b.id,
			"reason", b.err, "moved_to", string(store.QuarantineBucket(b.bucket)))
	}
}

// validRecordID checks that a record's own ID is the key it is stored
// under and looks like an ID peapod made (64 hex digits), so that a record
// that decodes by chance ("{}") is not taken for a pod.
func validRecordID(key, id string) error {
	if id != key {
		return fmt.Errorf("record of %q says it is %q", key, id)
	}
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return fmt.Errorf("bad ID %q", id)
	}
	return nil
}

// checkSpecs looks at the OCI spec of every container that is created or
// running: one that cannot be decoded (a power cut in the middle of an
// older, non-atomic write; a bad disk) is renamed to
// "config.json.unreadable-<unix>" and logged, so that the operator learns
// it at start rather than at the next exec, which then fails with "no
// such file" instead of a decode error.
func (r *Runtime) checkSpecs() {
	for id, c := range r.containers {
		if c.State != ContainerCreated && c.State != ContainerRunning {
			continue
		}
		_, err := runner.ReadSpec(c.Bundle)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			continue
		}
		path := filepath.Join(c.Bundle, "config.json")
		aside := fmt.Sprintf("%s.unreadable-%d", path, time.Now().Unix())
		if rerr := os.Rename(path, aside); rerr != nil {
			r.log.Error("OCI spec cannot be used, and moving it aside failed", "container", id, "reason", err, "err", rerr)
			continue
		}
		r.log.Warn("OCI spec cannot be used; moved aside (execs into the container fail)", "container", id, "reason", err, "moved_to", aside)
	}
}
