package redisbackend

import (
	"context"
	"errors"
	"strings"

	cb "github.com/dogpile-go/dogpile/internal/breaker"
	"github.com/dogpile-go/dogpile/region"

	goredis "github.com/redis/go-redis/v9"
)

// ErrUnavailable is wrapped by the error of every operation refused because
// the circuit breaker is open: Redis failed too often in a row, and the
// backend does not try it again until the cooldown has passed.
var ErrUnavailable = errors.New("redisbackend: redis unavailable (circuit breaker open)")

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

// outcome is what an operation's result says about Redis.
type outcome = cb.Outcome

const (
	succeeded = cb.Succeeded // Redis answered
	failed    = cb.Failed    // Redis did not answer in time, or cannot serve
	neutral   = cb.Neutral   // the caller gave up: says nothing about Redis
)

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

// BreakerOpen reports whether the circuit breaker is open now: operations
// fail fast with ErrUnavailable (region.BreakerWatcher).
func (b *Backend) BreakerOpen() bool { return b.breaker.Open() }

// WatchBreaker calls f each time the circuit breaker opens or closes
// again, until stop is called (region.BreakerWatcher); a region over the
// backend reports the changes to its observers.
func (b *Backend) WatchBreaker(f func(open bool)) (stop func()) { return b.breaker.Watch(f) }

var _ region.BreakerWatcher = (*Backend)(nil)
