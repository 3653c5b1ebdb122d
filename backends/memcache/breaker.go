package memcachebackend

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"

	cb "github.com/dogpile-go/dogpile/internal/breaker"
	"github.com/dogpile-go/dogpile/region"

	"github.com/bradfitz/gomemcache/memcache"
)

// ErrUnavailable is wrapped by the error of every operation refused because
// the circuit breaker is open: memcached failed too often in a row, and the
// backend does not try it again until the cooldown has passed.
var ErrUnavailable = errors.New("memcachebackend: memcached unavailable (circuit breaker open)")

// breaker is the circuit breaker of internal/breaker, failing with
// ErrUnavailable while open.
type breaker struct{ cb.Breaker }

// allow reports whether an operation may run now, and whether it is the
// half-open probe; ErrUnavailable while the breaker is open.
func (br *breaker) allow() (probe bool, err error) {
	probe, ok := br.Allow()
	if !ok {
		return false, ErrUnavailable
	}
	return probe, nil
}

// record updates the breaker with the outcome of an operation that allow
// let run.
func (br *breaker) record(probe bool, o outcome) { br.Record(probe, o) }

// outcome is what an operation's result says about memcached.
type outcome = cb.Outcome

const (
	succeeded = cb.Succeeded // memcached answered
	failed    = cb.Failed    // memcached did not answer in time, or cannot serve
	neutral   = cb.Neutral   // the caller gave up: says nothing about memcached
)

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

// BreakerOpen reports whether the circuit breaker is open now: operations
// fail fast with ErrUnavailable (region.BreakerWatcher).
func (b *Backend) BreakerOpen() bool { return b.breaker.Open() }

// WatchBreaker calls f each time the circuit breaker opens or closes
// again, until stop is called (region.BreakerWatcher); a region over the
// backend reports the changes to its observers.
func (b *Backend) WatchBreaker(f func(open bool)) (stop func()) { return b.breaker.Watch(f) }

var _ region.BreakerWatcher = (*Backend)(nil)
