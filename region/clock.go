package region

import (
	"sync/atomic"
	"time"
)

// clock is the default wall clock of a Region, in Unix nanoseconds. Reading
// the wall clock costs as much as a quarter of a hit on some machines, so it
// is read at most every clockResync and advanced by the monotonic clock in
// between, which costs a single cheaper reading. A step of the wall clock
// is therefore seen within clockResync.
type clock struct {
	anchor atomic.Pointer[clockAnchor]
}

type clockAnchor struct {
	wall int64     // Unix nanoseconds at mono
	mono time.Time // carries the monotonic reading
}

const clockResync = 50 * time.Millisecond

func (c *clock) nanos() int64 {
	if a := c.anchor.Load(); a != nil {
		if d := time.Since(a.mono); d >= 0 && d < clockResync {
			return a.wall + int64(d)
		}
	}
	t := time.Now()
	c.anchor.Store(&clockAnchor{wall: t.UnixNano(), mono: t})
	return t.UnixNano()
}
