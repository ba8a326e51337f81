package store

import "testing"

// TestStopSignalOfRecord: a recorded stop signal is used; a record from
// before stop signals were recorded is stopped with SIGTERM.
func TestStopSignalOfRecord(t *testing.T) {
	if got := (&Container{StopSignal: "SIGQUIT"}).StopSignalNum().String(); got != "quit" {
		t.Errorf("SIGQUIT record: %q", got)
	}
	if got := (&Container{}).StopSignalNum().String(); got != "terminated" {
		t.Errorf("record without a stop signal: %q", got)
	}
}
