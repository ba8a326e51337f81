package oci

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The default profile refuses new namespaces through clone and clone3 as
// it does through unshare, unless the container holds CAP_SYS_ADMIN.
func TestDefaultSeccompNamespaceClones(t *testing.T) {
	count := func(p *specs.LinuxSeccomp) (clone, clone3 int) {
		for _, s := range p.Syscalls {
			for _, n := range s.Names {
				switch n {
				case "clone":
					if len(s.Args) != 1 || s.Args[0].Op != specs.OpMaskedEqual || s.Args[0].Value != s.Args[0].ValueTwo {
						t.Errorf("clone rule %+v: want one masked-equal test of a flag", s)
					}
					clone++
				case "clone3":
					if s.ErrnoRet == nil || *s.ErrnoRet != 38 {
						t.Errorf("clone3 rule %+v: want ENOSYS, so that the C library falls back to clone", s)
					}
					clone3++
				}
			}
		}
		return clone, clone3
	}
	if c, c3 := count(defaultSeccomp(nil)); c != 7 || c3 != 1 {
		t.Errorf("without CAP_SYS_ADMIN: %d clone rules, %d clone3, want 7 and 1", c, c3)
	}
	if c, c3 := count(defaultSeccomp([]string{"CAP_SYS_ADMIN"})); c != 0 || c3 != 0 {
		t.Errorf("with CAP_SYS_ADMIN: %d clone rules, %d clone3, want none", c, c3)
	}
}
