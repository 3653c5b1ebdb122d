// Package breaker is the consecutive-failure circuit breaker the shared
// backends (Redis, memcached) put in front of their server; each backend
// decides what an error says about its server.
package breaker

import (
	"sync"
	"sync/atomic"
	"time"
)

// Breaker is a consecutive-failure circuit breaker, safe for concurrent use. Closed, every operation
// runs; after threshold failures in a row it opens and operations fail fast;
// once cooldown has passed a single operation runs as a probe: success closes
// the breaker, failure opens it for another cooldown.
type Breaker struct {
	// Threshold is how many failures in a row open it; zero: never.
	Threshold int
	// Cooldown is how long it stays open before a probe.
	Cooldown time.Duration

	open     atomic.Bool  // fast path: false means closed
	failures atomic.Int32 // consecutive failures while closed

	mu        sync.Mutex
	openUntil time.Time // guarded by mu
	probing   bool      // guarded by mu; a probe is running

	// watchMu guards watchers, next, told and telling. A change is queued
	// in told under mu, so in the order of the changes, and told to the
	// watchers outside both locks by one goroutine at a time (telling), so
	// that a watcher may use the breaker or stop its watch.
	watchMu  sync.Mutex
	watchers map[int]func(open bool)
	next     int
	told     []bool
	telling  bool
}

// Open reports whether the breaker is open now (failing fast, or probing).
func (br *Breaker) Open() bool { return br.open.Load() }

// Watch calls f each time the breaker opens or closes again, until stop
// is called. f runs on the goroutine of the operation whose outcome
// changed the breaker; it must return quickly.
func (br *Breaker) Watch(f func(open bool)) (stop func()) {
	br.watchMu.Lock()
	defer br.watchMu.Unlock()
	if br.watchers == nil {
		br.watchers = make(map[int]func(open bool))
	}
	id := br.next
	br.next++
	br.watchers[id] = f
	return func() {
		br.watchMu.Lock()
		defer br.watchMu.Unlock()
		delete(br.watchers, id)
	}
}

// changed queues the news that the breaker opened or closed; the caller
// holds mu and calls tell once it has released it.
func (br *Breaker) changed(open bool) {
	br.watchMu.Lock()
	br.told = append(br.told, open)
	br.watchMu.Unlock()
}

// tell tells the watchers the queued changes, in order, unless another
// goroutine (or a watcher's call up the stack) is telling them already.
func (br *Breaker) tell() {
	br.watchMu.Lock()
	if br.telling {
		br.watchMu.Unlock()
		return
	}
	br.telling = true
	for len(br.told) > 0 {
		open := br.told[0]
		br.told = br.told[1:]
		fs := make([]func(bool), 0, len(br.watchers))
		for _, f := range br.watchers {
			fs = append(fs, f)
		}
		br.watchMu.Unlock()
		for _, f := range fs {
			f(open)
		}
		br.watchMu.Lock()
	}
	br.telling = false
	br.watchMu.Unlock()
}

// Allow reports whether an operation may run now (false: the breaker is
// open, fail fast), and whether it is the half-open probe.
func (br *Breaker) Allow() (probe, ok bool) {
	if br.Threshold <= 0 || !br.open.Load() {
		return false, true
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if !br.open.Load() {
		return false, true
	}
	if br.probing || time.Now().Before(br.openUntil) {
		return false, false
	}
	br.probing = true
	return true, true
}

// Outcome is what an operation's result says about the server.
type Outcome uint8

// Outcomes.
const (
	Succeeded Outcome = iota // the server answered
	Failed                   // it did not answer in time, or cannot serve
	Neutral                  // the caller gave up: says nothing about the server
)

// Record updates the breaker with the outcome of an operation that Allow
// let run.
func (br *Breaker) Record(probe bool, o Outcome) {
	if br.Threshold <= 0 {
		return
	}
	switch o {
	case Succeeded:
		if !probe && !br.open.Load() {
			if br.failures.Load() != 0 {
				br.failures.Store(0)
			}
			return
		}
		br.mu.Lock()
		br.failures.Store(0)
		if br.open.Swap(false) {
			br.changed(false)
		}
		br.probing = false
		br.mu.Unlock()
		br.tell()
	case Failed:
		if !probe && int(br.failures.Add(1)) < br.Threshold {
			return
		}
		br.mu.Lock()
		if probe || !br.open.Load() {
			if !br.open.Swap(true) {
				br.changed(true)
			}
			br.openUntil = time.Now().Add(br.Cooldown)
			br.probing = false
		}
		br.mu.Unlock()
		br.tell()
	case Neutral:
		if probe {
			br.mu.Lock()
			br.probing = false
			br.mu.Unlock()
		}
	}
}
