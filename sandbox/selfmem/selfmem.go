// Package selfmem drops pages of the daemon's own binary that it no longer
// needs resident: the embedded helpers once sealed into memfds. The pages
// are clean, read-only copies of the file: a later read faults them in
// again, so dropping them never loses anything.
package selfmem

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DropString drops the pages of data, a string in the daemon's read-only
// data that is not read again (an embedded helper, once sealed into its
// memfd, ~10.5 MB read at start that would otherwise stay resident,
// file-backed RSS, for the daemon's whole life).
// MADV_DONTNEED takes them out of the daemon's page tables; a private,
// read-only file mapping loses nothing by it (a later read faults them in
// from the file again). POSIX_FADV_DONTNEED then lets the page cache drop
// them too, unless another process maps them. Only whole pages inside
// data are dropped, never a neighbour's.
func DropString(data string) error {
	if len(data) == 0 {
		return nil
	}
	start := uintptr(unsafe.Pointer(unsafe.StringData(data)))
	end := start + uintptr(len(data))
	m, err := mappingOf(start, end)
	if err != nil {
		return err
	}
	if m.writable || m.inode == 0 || m.private {
		// Writable, anonymous (a string built at run time, as in the
		// unit tests) or written: dropping it would lose data.
		return fmt.Errorf("%#x-%#x is not in a read-only file mapping (%s)", start, end, m.line)
	}
	page := uintptr(os.Getpagesize())
	lo, hi := (start+page-1)&^(page-1), end&^(page-1)
	if hi <= lo {
		return nil
	}
	return drop(m, lo, hi-lo)
}

// drop takes the size bytes at address at, inside mapping m, out of the
// daemon's page tables (MADV_DONTNEED) and then out of the page cache
// (POSIX_FADV_DONTNEED; pages another process maps stay). The raw system
// call: the range is not Go memory, only a part of the address space.
func drop(m mapping, at, size uintptr) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, at, size, unix.MADV_DONTNEED); errno != 0 {
		return fmt.Errorf("madvise %#x+%d: %w", at, size, errno)
	}
	// map_files opens the very file mapped, even when the binary was
	// replaced on disk since (an upgrade in place).
	f, err := os.Open(fmt.Sprintf("/proc/self/map_files/%x-%x", m.start, m.end))
	if err != nil {
		return fmt.Errorf("page cache of %s: %w", m.path, err)
	}
	defer f.Close()
	off := int64(at-m.start) + m.offset
	if err := unix.Fadvise(int(f.Fd()), off, int64(size), unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise %s at %d: %w", m.path, off, err)
	}
	return nil
}

// mapping is one mapping of /proc/self/smaps.
type mapping struct {
	start, end uintptr
	writable   bool
	// private: some pages are the process's own copies (Anonymous or Swap
	// not 0), not the file's: a read-only mapping the dynamic loader wrote
	// before protecting it (RELRO: relocated pointers, the GOT). Dropping
	// them would bring back the file's unrelocated bytes.
	private    bool
	offset     int64
	inode      uint64
	path, line string
}

// mappingOf finds the mapping of /proc/self/maps that holds [start, end).
func mappingOf(start, end uintptr) (mapping, error) {
	ms, err := mappings()
	if err != nil {
		return mapping{}, err
	}
	for _, m := range ms {
		if m.start <= start && start < m.end {
			if end > m.end {
				return mapping{}, fmt.Errorf("%#x-%#x spans more than the mapping %s", start, end, m.line)
			}
			return m, nil
		}
	}
	return mapping{}, fmt.Errorf("%#x is in no mapping of /proc/self/maps", start)
}

// mappings are the lines of /proc/self/maps.
// They are read from smaps, which also tells which hold private copies.
func mappings() ([]mapping, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if name, value, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, " ") {
			// An attribute of the mapping above: "Anonymous:  4 kB".
			if len(ms) > 0 && (name == "Anonymous" || name == "Swap") && strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")) != "0" {
				ms[len(ms)-1].private = true
			}
			continue
		}
		m, err := parseMapping(line)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/self/smaps: %w", err)
	}
	return ms, nil
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
