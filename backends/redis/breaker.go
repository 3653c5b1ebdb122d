package redisbackend

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// ErrUnavailable is wrapped by the error of every operation refused because
// the circuit breaker is open: Redis failed too often in a row, and the
// backend does not try it again until the cooldown has passed.
var ErrUnavailable = errors.New("redisbackend: redis unavailable (circuit breaker open)")

// breaker is a consecutive-failure circuit breaker. Closed, every operation
// runs; after threshold failures in a row it opens and operations fail fast;
// once cooldown has passed a single operation runs as a probe: success closes
// the breaker, failure opens it for another cooldown.
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

// outcome is what an operation's result says about Redis.
type outcome uint8

const (
	succeeded outcome = iota // Redis answered
	failed                   // Redis did not answer in time, or refused to serve
	neutral                  // the caller gave up: says nothing about Redis
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

// classify tells what err, returned by an operation run on a context derived
// from parent, says about Redis.
func classify(parent context.Context, err error) outcome {
	if err == nil || errors.Is(err, goredis.Nil) {
		return succeeded
	}
	if parent.Err() != nil {
		return neutral
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		// Redis answered; only replies that mean it cannot serve count.
		msg := strings.TrimPrefix(rerr.Error(), "ERR ")
		for _, p := range unavailableReplies {
			if strings.HasPrefix(msg, p) {
				return failed
			}
		}
		return succeeded
	}
	return failed
}

// unavailableReplies are the error replies of a Redis that is up but cannot
// serve.
var unavailableReplies = []string{"LOADING", "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "BUSY ", "MAXCLIENTS", "max number of clients"}
