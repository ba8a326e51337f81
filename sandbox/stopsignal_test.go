package sandbox

import "testing"

// TestStopSignalOfRecord: a recorded stop signal is used, real-time ones
// included; a record from before stop signals were recorded is stopped
// with SIGTERM.
func TestStopSignalOfRecord(t *testing.T) {
	for rec, want := range map[string]string{"SIGQUIT": "quit", "": "terminated", "SIGRTMIN+3": "signal 37"} {
		if got := stopSignalOf(&Container{StopSignal: rec}).String(); got != want {
			t.Errorf("record with stop signal %q: %q, want %q", rec, got, want)
		}
	}
}
