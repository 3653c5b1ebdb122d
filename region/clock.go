package region

import (
	"context"
	"sync/atomic"
	"time"
)

// clock is the default clock of a Region, in Unix nanoseconds. Reading the
// system clock costs as much as a tenth of a hit on some machines, and a hit
// needs the time only to check expiry, so while the region is in use a
// goroutine of its own refreshes a coarse reading every clockTick; it stops
// after a second without readers and starts again on the next one. Once the
// region is closed, no refresher starts again: every reading is precise.
//
// The coarse reading lags the true time by at most a tick. Values are dated
// with it, for expiry only, so they can only look older than they are (and
// go stale up to a tick early); invalidation uses no clock (record.go).
//
// bg is set by New and read-only afterwards; the other fields are atomic:
// readers and the refresher share them without a lock.
type clock struct {
	bg      *background  // the region's: runs the refresher
	now     atomic.Int64 // the coarse reading, while running
	running atomic.Bool  // a refresher goroutine runs
	used    atomic.Bool  // read since the refresher's last tick
}

const (
	clockTick = time.Millisecond
	clockIdle = 1000 // ticks without a reader before the refresher stops
)

// nanos returns the coarse reading while the refresher runs; otherwise the
// precise time, starting the refresher unless the region is closed.
func (c *clock) nanos() int64 {
	if c.running.Load() {
		if !c.used.Load() {
			c.used.Store(true)
		}
		return c.now.Load()
	}
	now := time.Now().UnixNano()
	if !c.bg.closed.Load() && c.running.CompareAndSwap(false, true) {
		c.now.Store(now)
		c.used.Store(true)
		if !c.bg.start(c.refresh) {
			c.running.Store(false) // the region closed meanwhile
		}
	}
	return now
}

// refresh refreshes the coarse reading every tick, until it has had no
// reader for clockIdle ticks or ctx is done (Close).
func (c *clock) refresh(ctx context.Context) {
	t := time.NewTicker(clockTick)
	defer t.Stop()
	idle := 0
	for {
		select {
		case <-ctx.Done():
			c.running.Store(false)
			return
		case <-t.C:
		}
		c.now.Store(time.Now().UnixNano())
		if c.used.Swap(false) {
			idle = 0
			continue
		}
		if idle++; idle >= clockIdle {
			c.running.Store(false)
			return
		}
	}
}
