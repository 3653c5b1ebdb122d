// Package ratelimit is the limiter of the log records of regions and of the
// GORM plugin: per class of record, at most a burst per interval, and a
// count of those dropped for the next one that passes to carry.
package ratelimit

import (
	"sync"
	"time"
)

// Limiter limits records by class K. Burst, Interval and Now are set before
// first use and read-only afterwards; Burst ≤ 0 or Interval ≤ 0 turns the
// limit off. It is safe for concurrent use.
type Limiter[K comparable] struct {
	Burst    int
	Interval time.Duration
	Now      func() time.Time // nil: time.Now

	mu      sync.Mutex
	classes map[K]*window // guarded by mu
}

// window is a class's current interval.
type window struct {
	start      time.Time
	n          int // records allowed since start
	suppressed int // records dropped since the last one allowed
}

// Allow reports whether a record of class k is to be logged now, and how
// many of its class were dropped since the last one allowed.
func (l *Limiter[K]) Allow(k K) (suppressed int, ok bool) {
	if l.Burst <= 0 || l.Interval <= 0 {
		return 0, true
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.classes[k]
	if w == nil {
		if l.classes == nil {
			l.classes = make(map[K]*window)
		}
		w = &window{start: t}
		l.classes[k] = w
	} else if t.Sub(w.start) >= l.Interval {
		w.start, w.n = t, 0
	}
	if w.n >= l.Burst {
		w.suppressed++
		return 0, false
	}
	w.n++
	suppressed, w.suppressed = w.suppressed, 0
	return suppressed, true
}
