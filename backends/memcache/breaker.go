package memcachebackend

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// ErrUnavailable is wrapped by the error of every operation refused because
// the circuit breaker is open: memcached failed too often in a row, and the
// backend does not try it again until the cooldown has passed.
var ErrUnavailable = errors.New("memcachebackend: memcached unavailable (circuit breaker open)")

// breaker is a consecutive-failure circuit breaker (the same design as the
// Redis backend's). Closed, every operation runs; after threshold failures
// in a row it opens and operations fail fast; once cooldown has passed a
// single operation runs as a probe: success closes the breaker, failure
// opens it for another cooldown.
type breaker struct {
	threshold int // zero: never open
	cooldown  time.Duration

	open     atomic.Bool  // fast path: false means closed
	failures atomic.Int32 // consecutive failures while closed

	mu        sync.Mutex
	openUntil time.Time // guarded by mu
	probing   bool      // guarded by mu; a probe is running
}

// allow reports whether an operation may run now, and whether it is the
// half-open probe.
func (br *breaker) allow() (probe bool, err error) {
	if br.threshold <= 0 || !br.open.Load() {
		return false, nil
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if !br.open.Load() {
		return false, nil
	}
	if br.probing || time.Now().Before(br.openUntil) {
		return false, ErrUnavailable
	}
	br.probing = true
	return true, nil
}

// outcome is what an operation's result says about memcached.
type outcome uint8

const (
	succeeded outcome = iota // memcached answered
	failed                   // memcached did not answer in time, or cannot serve
	neutral                  // the caller gave up: says nothing about memcached
)

// record updates the breaker with the outcome of an operation that allow let
// run.
func (br *breaker) record(probe bool, o outcome) {
	if br.threshold <= 0 {
		return
	}
	switch o {
	case succeeded:
		if !probe && !br.open.Load() {
			if br.failures.Load() != 0 {
				br.failures.Store(0)
			}
			return
		}
		br.mu.Lock()
		br.failures.Store(0)
		br.open.Store(false)
		br.probing = false
		br.mu.Unlock()
	case failed:
		if !probe && int(br.failures.Add(1)) < br.threshold {
			return
		}
		br.mu.Lock()
		if probe || !br.open.Load() {
			br.open.Store(true)
			br.openUntil = time.Now().Add(br.cooldown)
			br.probing = false
		}
		br.mu.Unlock()
	case neutral:
		if probe {
			br.mu.Lock()
			br.probing = false
			br.mu.Unlock()
		}
	}
}

// classify tells what err, returned by an operation run for a caller whose
// context is parent, says about memcached. Only the failures of the network
// (refused, reset, timed out, closed), and a server that answers that it
// cannot store for want of memory, count against it; a reply of any other
// kind means that memcached is there.
func classify(parent context.Context, err error) outcome {
	if err == nil {
		return succeeded
	}
	if parent.Err() != nil {
		return neutral
	}
	var (
		nerr net.Error
		cte  *memcache.ConnectTimeoutError
	)
	switch {
	case errors.As(err, &nerr), errors.As(err, &cte),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, memcache.ErrNoServers):
		return failed
	case strings.Contains(err.Error(), "SERVER_ERROR out of memory"):
		return failed
	}
	return succeeded
}
