package helperbin

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Release drops the pages of data, an embedded helper in the daemon's
// read-only data, once Load has copied it into its memfd or compared it
// with one (or failed to): nothing reads them again, yet the ~13 MB read at start would
// otherwise stay resident (file-backed RSS) for the daemon's whole life.
// MADV_DONTNEED takes them out of the daemon's page tables; a private,
// read-only file mapping loses nothing by it (a later read faults them in
// from the file again). POSIX_FADV_DONTNEED then lets the page cache drop
// them too, unless another process maps them. Only whole pages inside
// data are dropped, never a neighbour's.
func Release(data string) error {
	if len(data) == 0 {
		return nil
	}
	base := unsafe.Pointer(unsafe.StringData(data))
	start := uintptr(base)
	end := start + uintptr(len(data))
	m, err := mappingOf(start, end)
	if err != nil {
		return err
	}
	if m.writable || m.inode == 0 {
		// Writable or anonymous (a string built at run time, as in the
		// unit tests): dropping it would lose data.
		return fmt.Errorf("%#x-%#x is not in a read-only file mapping (%s)", start, end, m.line)
	}
	page := uintptr(os.Getpagesize())
	lo, hi := (start+page-1)&^(page-1), end&^(page-1)
	if hi <= lo {
		return nil
	}
	if err := unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(base, lo-start)), hi-lo), unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("madvise %#x-%#x: %w", lo, hi, err)
	}
	// map_files opens the very file mapped, even when the binary was
	// replaced on disk since (an upgrade in place).
	f, err := os.Open(fmt.Sprintf("/proc/self/map_files/%x-%x", m.start, m.end))
	if err != nil {
		return fmt.Errorf("page cache of the embedded copy: %w", err)
	}
	defer f.Close()
	off := int64(lo-m.start) + m.offset
	if err := unix.Fadvise(int(f.Fd()), off, int64(hi-lo), unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise %s at %d: %w", m.path, off, err)
	}
	return nil
}

// mapping is one line of /proc/self/maps.
type mapping struct {
	start, end uintptr
	writable   bool
	offset     int64
	inode      uint64
	path, line string
}

// mappingOf finds the mapping of /proc/self/maps that holds [start, end).
func mappingOf(start, end uintptr) (mapping, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return mapping{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m, err := parseMapping(sc.Text())
		if err != nil {
			return mapping{}, err
		}
		if m.start <= start && start < m.end {
			if end > m.end {
				return mapping{}, fmt.Errorf("%#x-%#x spans more than the mapping %s", start, end, m.line)
			}
			return m, nil
		}
	}
	if err := sc.Err(); err != nil {
		return mapping{}, fmt.Errorf("read /proc/self/maps: %w", err)
	}
	return mapping{}, fmt.Errorf("%#x is in no mapping of /proc/self/maps", start)
}

// parseMapping parses "start-end perms offset dev inode [path]".
func parseMapping(line string) (mapping, error) {
	fields := strings.Fields(line)
	if len(fields) < 5 {
		return mapping{}, fmt.Errorf("bad /proc/self/maps line %q", line)
	}
	lo, hi, ok := strings.Cut(fields[0], "-")
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	offset, err3 := strconv.ParseInt(fields[2], 16, 64)
	inode, err4 := strconv.ParseUint(fields[4], 10, 64)
	if !ok || err1 != nil || err2 != nil || err3 != nil || err4 != nil || len(fields[1]) < 2 {
		return mapping{}, fmt.Errorf("bad /proc/self/maps line %q", line)
	}
	m := mapping{start: uintptr(start), end: uintptr(end), writable: fields[1][1] == 'w', offset: offset, inode: inode, line: line}
	if len(fields) > 5 {
		m.path = strings.Join(fields[5:], " ")
	}
	return m, nil
}
