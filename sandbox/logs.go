package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// criLog writes container output in the CRI log format kubelet and crictl
// read: "<RFC3339Nano> <stream> <F|P> <content>\n", P marking a line that
// was split because it exceeded maxLogLine.
type criLog struct {
	mu sync.Mutex
	f  *os.File // nil: the kubelet asked for no log; output is discarded
}

const maxLogLine = 16 * 1024

func openContainerLog(path string) (*criLog, error) {
	if path == "" {
		return &criLog{}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	return &criLog{f: f}, nil
}

// reopen closes and reopens the file at the same path, after the kubelet
// renamed it for rotation. No line is lost: writers wait on the lock.
func (l *criLog) reopen(path string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("reopen container log: %w", err)
	}
	l.f.Close()
	l.f = f
	return nil
}

func (l *criLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}

// writeLine writes one record; content excludes the newline.
func (l *criLog) writeLine(stream string, partial bool, content []byte) {
	if l.f == nil {
		return
	}
	tag := "F"
	if partial {
		tag = "P"
	}
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	buf := make([]byte, 0, len(ts)+len(stream)+len(content)+5)
	buf = append(buf, ts...)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, content...)
	buf = append(buf, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Write(buf)
}

// copyLogs copies every stream into the log, and to attached clients,
// until all reach EOF.
func copyLogs(l *criLog, streams []logStream, live *liveIO) {
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.r.Close()
			copyStream(l, s.name, io.TeeReader(s.r, live.streamWriter(s.name)))
		}()
	}
	wg.Wait()
}

func copyStream(l *criLog, name string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			l.writeLine(name, false, line[:len(line)-1])
		case errors.Is(err, bufio.ErrBufferFull):
			l.writeLine(name, true, line)
		default:
			// EOF (or a read error) with an unterminated last line: it is
			// complete as far as anyone will ever know.
			if len(line) > 0 {
				l.writeLine(name, false, line)
			}
			return
		}
	}
}
