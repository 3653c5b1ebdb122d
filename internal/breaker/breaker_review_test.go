package breaker

import (
	"testing"
	"time"
)

// hangs reports whether f has not returned after a generous while (a
// deadlock detector, not a speed assertion).
func hangs(f func()) bool {
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
		return false
	case <-time.After(10 * time.Second):
		return true
	}
}

// Review: a watcher that, told the breaker opened, runs an operation
// through the breaker (a region observer that reads the region, a health
// check) must not deadlock when that operation changes the breaker again:
// Watch's callers are told under watchMu, which changed takes again.
func TestReviewWatcherMayUseTheBreaker(t *testing.T) {
	br := &Breaker{Threshold: 1, Cooldown: 0}
	var told []bool
	br.Watch(func(open bool) {
		told = append(told, open)
		if open {
			if probe, ok := br.Allow(); ok {
				br.Record(probe, Succeeded) // the probe succeeds: closes it
			}
		}
	})
	if hangs(func() { br.Record(false, Failed) }) {
		t.Fatal("a watcher that probed the breaker it was told of deadlocked")
	}
	if len(told) != 2 || !told[0] || told[1] || br.Open() {
		t.Fatalf("told %v, open %v; want [true false], closed", told, br.Open())
	}
}

// Review: a watcher may stop itself (a region closed by its observer).
func TestReviewWatcherMayStop(t *testing.T) {
	br := &Breaker{Threshold: 1, Cooldown: time.Hour}
	var stop func()
	n := 0
	stop = br.Watch(func(bool) { n++; stop() })
	if hangs(func() { br.Record(false, Failed) }) {
		t.Fatal("a watcher that stopped its watch deadlocked")
	}
	if n != 1 {
		t.Fatalf("told %d times, want 1", n)
	}
}
