package harness

import (
	"testing"
	"time"
)

// Eventually polls cond, backing off from 5 ms to 200 ms, until it holds
// or timeout passes. It synchronises on observable state (a container
// gone, a row changed); it never stands in for a measurement.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(delay)
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}
