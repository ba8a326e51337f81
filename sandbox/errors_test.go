package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

// TestInternalKeepsMessage: an error marked internal is ErrInternal (codes.Internal
// in cri/) and keeps its message and its chain.
func TestInternalKeepsMessage(t *testing.T) {
	cause := fmt.Errorf("remove pod p files: %w", fs.ErrPermission)
	err := fmt.Errorf("remove pod p: %w", internal(cause))
	if !errors.Is(err, ErrInternal) || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("%v: Is(ErrInternal)=%v Is(cause)=%v", err, errors.Is(err, ErrInternal), errors.Is(err, fs.ErrPermission))
	}
	if err.Error() != "remove pod p: remove pod p files: permission denied" {
		t.Errorf("message changed: %q", err)
	}
	if internal(nil) != nil {
		t.Error("internal(nil) is not nil")
	}
}
