package image

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
)

// RootfsUsage measures the writable layer of a container: the bytes and
// inodes in its overlay upper directory. mountpoint is the containers'
// storage root, as ContainerFsInfo reports it, so kubelet can match the two.
func (s *Store) RootfsUsage(ctx context.Context, containerID string) (mountpoint string, bytes, inodes uint64, err error) {
	if s.store.GraphDriverName() != "overlay" {
		return "", 0, 0, errors.New("writable layer usage: only the overlay driver is measured")
	}
	diff := s.rwDiffDir(containerID)
	if _, ok := s.rw.get(containerID); !ok {
		c, err := s.store.Container(containerID)
		if err != nil {
			return "", 0, 0, fmt.Errorf("writable layer of container %s: %w", containerID, err)
		}
		diff = filepath.Join(s.store.GraphRoot(), "overlay", c.LayerID, "diff")
	}
	// The container writes this directory while it is walked: walkUsage
	// is built for that (layerwalk.go).
	u, err := walkUsage(ctx, diff)
	if err != nil {
		return "", 0, 0, fmt.Errorf("writable layer of container %s: %w", containerID, err)
	}
	return s.containerRoot, u.Bytes, u.Inodes, nil
}
