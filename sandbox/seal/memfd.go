package seal

import (
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/runc/libcontainer/system"
	"golang.org/x/sys/unix"
)

// memfdSeals are the seals libcontainer checks (exeseal.IsCloned) before it
// runs its init straight from /proc/self/exe: a runner executed from a
// memfd with them starts containers without copying or mounting anything.
const memfdSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// fSealExec (Linux 6.3) forbids changing the memfd's exec bits.
const fSealExec = 0x20

// Memfd copies size bytes of src into a new memfd named name and seals it:
// nobody, not even its creator, can change its contents from then on, so
// every process executed from it runs the same pages, and a container that
// reaches it through /proc/<pid>/exe cannot write it. The file is
// close-on-exec; execute it through /proc/<pid>/fd/<fd>.
func Memfd(name string, src io.Reader, size int64) (*os.File, error) {
	f, err := system.ExecutableMemfd(name, unix.MFD_ALLOW_SEALING|unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	n, err := io.Copy(f, src)
	if err == nil && n != size {
		err = fmt.Errorf("copied %d bytes of %d", n, size)
	}
	if err == nil {
		err = f.Chmod(0o511)
	}
	if err == nil {
		_, _ = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, fSealExec) // older kernels: not needed
		_, err = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, memfdSeals)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("sealed memfd %s: %w", name, err)
	}
	return f, nil
}

// IsSealed reports whether f is a memfd with the seals of Memfd, F_SEAL_EXEC
// included: neither its contents nor its exec bits can change any more
// (false on kernels before 6.3, which lack F_SEAL_EXEC).
func IsSealed(f *os.File) bool {
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	return err == nil && seals&(memfdSeals|fSealExec) == memfdSeals|fSealExec
}
