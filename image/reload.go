package image

import (
	"fmt"
	"os"
	"path/filepath"

	"go.podman.io/image/v5/types"
)

// systemContext is the containers/image context of new pulls. Callers
// must not modify it: SetSources replaces it whole.
func (s *Store) systemContext() *types.SystemContext { return s.sysCtx.Load() }

// SetSources switches new pulls to the registries config, its drop-ins,
// registries.d and signature policy of src (SIGHUP reload); an empty
// RegistriesConf means the store's own default (no mirrors, docker.io for
// short names), the other empty fields their defaults (see Config). The
// files are read again even when the paths are the same. Files that do not
// parse are refused and the current ones stay. Pulls in flight keep what
// they started with.
func (s *Store) SetSources(src Sources) error {
	if src.RegistriesConf == "" {
		src.RegistriesConf = filepath.Join(filepath.Dir(s.root), "registries.conf") // written by Open
	}
	if _, err := os.Stat(src.RegistriesConf); err != nil {
		return fmt.Errorf("registries config: %w", err)
	}
	cur := s.systemContext()
	next := systemContextFor(filepath.Dir(s.root), src)
	next.AuthFilePath = cur.AuthFilePath
	pol, err := checkSources(next, src)
	if err != nil {
		return err
	}
	s.policy.Store(pol)
	s.sysCtx.Store(next)
	return nil
}
