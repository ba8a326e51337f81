package image

import (
	"fmt"
	"os"
	"path/filepath"

	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
)

// systemContext is the containers/image context of new pulls. Callers
// must not modify it: SetRegistriesConf replaces it whole.
func (s *Store) systemContext() *types.SystemContext { return s.sysCtx.Load() }

// SetRegistriesConf switches new pulls to the registries config at path
// (SIGHUP reload); "" means the store's own default (no mirrors, docker.io
// for short names). The file is read again even when the path is the same.
// A file that does not parse is refused and the current one stays. Pulls
// in flight keep the config they started with.
func (s *Store) SetRegistriesConf(path string) error {
	if path == "" {
		path = filepath.Join(filepath.Dir(s.root), "registries.conf") // written by Open
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("registries config: %w", err)
	}
	next := *s.systemContext()
	next.SystemRegistriesConfPath = path
	sysregistriesv2.InvalidateCache() // containers/image caches parsed files by path
	if _, err := sysregistriesv2.GetRegistries(&next); err != nil {
		return fmt.Errorf("registries config %s: %w", path, err)
	}
	s.sysCtx.Store(&next)
	return nil
}
