package integration

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeAttachStdinThreads: a container with stdin that never reads
// it. Attach sessions that send it more than its pipe holds each left one
// of the daemon's OS threads blocked in write(2) on the keeper's blocking
// stdin descriptor, for as long as the container lived, the session's end
// notwithstanding: a user allowed to attach to their own pod could pile up
// threads until Go's limit of 10,000 kills the daemon, and with it every
// pod's runtime. The daemon's copy of stdin must wait in the poller, and a
// session's end must end its write.
func TestEscapeAttachStdinThreads(t *testing.T) {
	const sessions = 120
	d, image := readyDaemon(t)
	for _, tty := range []bool{false, true} {
		name := "attach-stdin"
		if tty {
			name = "attach-stdin-tty"
		}
		t.Run(name, func(t *testing.T) {
			cfg := containerConfig(name, image, "sleep", "1000")
			cfg.Stdin = true
			cfg.Tty = tty
			_, ctr, _ := streamPod(t, d, image, cfg)
			pid := d.Cmd.Process.Pid
			before := threadsOf(t, pid)

			sctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{}, sessions)
			payload := bytes.Repeat([]byte("x"), 128<<10)
			for i := 0; i < sessions; i++ {
				resp, err := d.RT.Attach(ctx(t), &runtimeapi.AttachRequest{ContainerId: ctr, Stdin: true, Stdout: true, Tty: tty, Stderr: !tty})
				if err != nil {
					cancel()
					t.Fatal(err)
				}
				opts := remotecommand.StreamOptions{Stdin: bytes.NewReader(payload), Stdout: io.Discard, Tty: tty}
				if !tty {
					opts.Stderr = io.Discard
				}
				go func() {
					executor(t, resp.Url).StreamWithContext(sctx, opts)
					done <- struct{}{}
				}()
			}
			peak := before
			deadline := time.Now().Add(8 * time.Second * timeoutScale)
			for time.Now().Before(deadline) {
				peak = max(peak, threadsOf(t, pid))
				time.Sleep(200 * time.Millisecond)
			}
			cancel() // every client goes away
			for i := 0; i < sessions; i++ {
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					t.Fatalf("attach session %d did not end when its client went away", i)
				}
			}
			time.Sleep(2 * time.Second)
			after := threadsOf(t, pid)
			t.Logf("daemon threads: %d before %d attach sessions writing to an unread stdin, at most %d during, %d after they ended",
				before, sessions, peak, after)
			if peak-before > 40 {
				t.Errorf("the daemon grew by %d threads for %d attach sessions writing to an unread stdin: each write holds a thread", peak-before, sessions)
			}
			if after-before > 20 {
				t.Errorf("%d daemon threads stayed after the attach sessions ended", after-before)
			}
			// The container's stdin still works for a new client.
			if out, code := execAll(t, d, ctr, "true"); code != 0 {
				t.Errorf("exec after the sessions: %d %q", code, out)
			}
		})
	}
}

// TestStreamingAttachTTY: attach to a TTY container: a resize and a line
// on stdin reach its terminal (through the keeper's terminal master, which
// the daemon makes non-blocking), its output reaches the client.
func TestStreamingAttachTTY(t *testing.T) {
	d, image := readyDaemon(t)
	cfg := containerConfig("attach-tty", image, "sh", "-c", "read line; busybox stty size; echo got:$line; sleep 1000")
	cfg.Stdin = true
	cfg.Tty = true
	_, ctr, _ := streamPod(t, d, image, cfg)
	c := ctx(t)
	resp, err := d.RT.Attach(c, &runtimeapi.AttachRequest{ContainerId: ctr, Stdin: true, Stdout: true, Tty: true})
	if err != nil {
		t.Fatal(err)
	}
	sizes := fixedSize{make(chan remotecommand.TerminalSize, 1)}
	sizes.sizes <- remotecommand.TerminalSize{Width: 123, Height: 45}
	stdinR, stdinW := io.Pipe()
	out := &syncBuffer{}
	sctx, cancel := context.WithCancel(c)
	done := make(chan error, 1)
	go func() {
		done <- executor(t, resp.Url).StreamWithContext(sctx, remotecommand.StreamOptions{Stdin: stdinR, Stdout: out, Tty: true, TerminalSizeQueue: sizes})
	}()
	time.Sleep(500 * time.Millisecond) // let the resize land before the read returns
	io.WriteString(stdinW, "hello\n")
	waitFor(t, 10*time.Second, "the size and the line back from the terminal", func() bool {
		s := out.String()
		return bytes.Contains([]byte(s), []byte("45 123")) && bytes.Contains([]byte(s), []byte("got:hello"))
	})
	cancel()
	close(sizes.sizes)
	stdinW.Close()
	<-done
}

// TestEscapeExecThreads: exec sessions whose process lives on. Each held
// daemon OS threads for the process's life: the wait for its exit (a
// blocking waitid in os.Process.Wait, both exec paths), and with a TTY
// (libcontainer's path, whose terminal master came blocking) one reading
// the terminal and one writing a stdin the process does not read, the
// session's end notwithstanding. A user allowed to exec into their own
// pod could pile up threads until Go's limit of 10,000 kills the daemon.
func TestEscapeExecThreads(t *testing.T) {
	const sessions = 60
	d, image := readyDaemon(t)
	_, ctr, _ := streamPod(t, d, image, containerConfig("exec-threads", image, "sleep", "1000"))
	for _, tty := range []bool{false, true} {
		name := "pipes"
		if tty {
			name = "tty"
		}
		t.Run(name, func(t *testing.T) {
			pid := d.Cmd.Process.Pid
			before := threadsOf(t, pid)
			sctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{}, sessions)
			payload := bytes.Repeat([]byte("x"), 128<<10)
			for i := 0; i < sessions; i++ {
				resp, err := d.RT.Exec(ctx(t), &runtimeapi.ExecRequest{ContainerId: ctr, Cmd: []string{"sleep", "1000"}, Stdin: true, Stdout: true, Stderr: !tty, Tty: tty})
				if err != nil {
					t.Fatal(err)
				}
				opts := remotecommand.StreamOptions{Stdin: bytes.NewReader(payload), Stdout: io.Discard, Tty: tty}
				if !tty {
					opts.Stderr = io.Discard
				}
				go func() {
					executor(t, resp.Url).StreamWithContext(sctx, opts)
					done <- struct{}{}
				}()
			}
			peak := before
			deadline := time.Now().Add(10 * time.Second * timeoutScale)
			for time.Now().Before(deadline) {
				peak = max(peak, threadsOf(t, pid))
				time.Sleep(200 * time.Millisecond)
			}
			cancel()
			for i := 0; i < sessions; i++ {
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					t.Fatalf("exec session %d did not end when its client went away", i)
				}
			}
			time.Sleep(2 * time.Second)
			after := threadsOf(t, pid)
			t.Logf("daemon threads: %d before %d exec sessions (%s), at most %d during, %d after they ended", before, sessions, name, peak, after)
			if peak-before > 30 {
				t.Errorf("the daemon grew by %d threads for %d exec sessions (%s): each holds threads", peak-before, sessions, name)
			}
			if after-before > 20 {
				t.Errorf("%d daemon threads stayed after the exec sessions (%s) ended", after-before, name)
			}
		})
	}
}
