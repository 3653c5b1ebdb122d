// Package memory is the in-process region backend: bounded by bytes, with a
// time to live per entry, safe and fast under parallel use. Eviction and
// expiry are done by otter (github.com/maypok86/otter/v2), a W-TinyLFU cache.
//
// Values are copied in and out, so a caller that changes the bytes it got
// back can never corrupt the cache. Counters (the region's tag versions) are
// entries of weight zero, which the cache never evicts, so one lookup finds
// either kind.
package memory

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/dogpile-go/dogpile/region"
)

// DefaultMaxBytes is the bound of a Backend made without WithMaxBytes.
const DefaultMaxBytes = 64 << 20

// entryOverhead approximates what an entry costs beyond its key and value
// bytes, so that many tiny entries still count against the bound.
const entryOverhead = 64

// Backend is an in-process region.Backend.
type Backend struct {
	cache *otter.Cache[string, *entry]

	// mu is held by Incr and SetIf, so that SetIf checks its guards and
	// writes as one step with respect to counters. Reads take no lock.
	mu sync.Mutex
}

// entry is a value, or a counter when counter is set.
type entry struct {
	val     []byte
	ttl     time.Duration // zero: no expiry
	counter *atomic.Int64 // a counter: weight zero, never evicted, no expiry
}

// Option configures a Backend.
type Option func(*config)

type config struct{ maxBytes int64 }

// WithMaxBytes bounds the bytes the backend holds (keys, values and a fixed
// overhead per entry); beyond it, entries are evicted. The default is
// DefaultMaxBytes.
func WithMaxBytes(n int64) Option { return func(c *config) { c.maxBytes = n } }

// New returns a memory backend.
func New(opts ...Option) *Backend {
	c := config{maxBytes: DefaultMaxBytes}
	for _, o := range opts {
		o(&c)
	}
	if c.maxBytes < 1 {
		c.maxBytes = 1
	}
	return &Backend{cache: otter.Must(&otter.Options[string, *entry]{
		MaximumWeight: uint64(c.maxBytes),
		// Maintenance (replaying reads into the eviction policy) runs on
		// the goroutine that triggers it: a hot key fills the read buffer
		// every few reads, and a goroutine per drain costs more than the
		// drain. Safe here: no function the cache calls under its locks
		// (the weigher, the expiry calculator, counterLocked's Compute)
		// calls the cache.
		Executor: func(fn func()) { fn() },
		Weigher: func(k string, e *entry) uint32 {
			if e.counter != nil {
				return 0 // never evicted
			}
			n := len(k) + len(e.val) + entryOverhead
			if n > math.MaxUint32 {
				return math.MaxUint32
			}
			return uint32(n)
		},
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, *entry]) time.Duration {
			if e.Value.ttl <= 0 || e.Value.counter != nil {
				return time.Duration(math.MaxInt64)
			}
			return e.Value.ttl
		}),
	})}
}

// GetMulti returns copies of the values stored under keys.
// The copies share one allocation; each is capped at its own length, so
// appending to one never writes over another.
func (b *Backend) GetMulti(_ context.Context, keys []string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	var few [8]*entry
	found := few[:0]
	if len(keys) > len(few) {
		found = make([]*entry, 0, len(keys))
	}
	size := 0
	for _, k := range keys {
		e, ok := b.lookup(k)
		if !ok {
			e = nil
		}
		found = append(found, e)
		if ok {
			if e.counter != nil {
				size += 20 // any int64 in decimal
			} else {
				size += len(e.val)
			}
		}
	}
	buf := make([]byte, 0, size)
	for i, e := range found {
		at := len(buf)
		switch {
		case e == nil:
			continue
		case e.counter != nil:
			buf = strconv.AppendInt(buf, e.counter.Load(), 10)
		default:
			buf = append(buf, e.val...)
		}
		out[i] = buf[at:len(buf):len(buf)]
	}
	return out, nil
}

// AppendValue implements region.ValueAppender: it appends a copy of the
// value stored under key to buf, with the one lookup GetMulti makes of a
// key, and reports whether there was one.
func (b *Backend) AppendValue(buf []byte, key string) ([]byte, bool) {
	e, ok := b.lookup(key)
	switch {
	case !ok:
		return buf, false
	case e.counter != nil:
		return strconv.AppendInt(buf, e.counter.Load(), 10), true
	}
	return append(buf, e.val...), true
}

// lookup returns the entry at key. Every readSample-th lookup on average
// (at random) is recorded in the cache's eviction policy, which the others
// leave as it is: recording costs a read buffer's slot and, when the
// buffer is full, a drain into the policy, while the frequencies and the
// recency the policy keeps by key are as good from a sample of the reads of
// the keys read often, which are the ones it has to keep.
func (b *Backend) lookup(key string) (*entry, bool) {
	if rand.Uint32()%readSample == 0 {
		return b.cache.GetIfPresent(key)
	}
	e, ok := b.cache.GetEntryQuietly(key)
	return e.Value, ok
}

// readSample is how many lookups, on average, one recorded in the eviction
// policy stands for.
const readSample = 8

// SetMulti stores copies of the items' values.
func (b *Backend) SetMulti(_ context.Context, items []region.Item) error {
	for _, it := range items {
		b.set(it)
	}
	return nil
}

func (b *Backend) set(it region.Item) {
	b.cache.Set(it.Key, &entry{val: bytes.Clone(it.Value), ttl: it.TTL})
}

// get returns a copy of the value at k, or nil.
func (b *Backend) get(k string) []byte {
	e, ok := b.cache.GetIfPresent(k)
	switch {
	case !ok:
		return nil
	case e.counter != nil:
		return strconv.AppendInt(nil, e.counter.Load(), 10)
	}
	return bytes.Clone(e.val)
}

// SetIf stores item if every guard holds; guards and write are one step with
// respect to Incr.
func (b *Backend) SetIf(_ context.Context, item region.Item, guards []region.Guard) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, g := range guards {
		cur := b.get(g.Key)
		if (cur == nil) != (g.Value == nil) || !bytes.Equal(cur, g.Value) {
			return false, nil
		}
	}
	b.set(item)
	return true, nil
}

// Delete removes keys, counters included.
func (b *Backend) Delete(_ context.Context, keys ...string) error {
	for _, k := range keys {
		b.cache.Invalidate(k)
	}
	return nil
}

// Incr increments the counter at key; a new counter starts at a random value.
// It holds the lock SetIf holds, so guards see increments in order.
func (b *Backend) Incr(_ context.Context, key string) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.counterLocked(key).Add(1), nil
}

// Counter implements region.CounterRefs: it returns the counter at key,
// creating it from a random value when missing. A counter keeps its address
// until Delete removes its key.
func (b *Backend) Counter(key string) *atomic.Int64 {
	if e, ok := b.cache.GetIfPresent(key); ok && e.counter != nil {
		return e.counter
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.counterLocked(key)
}

// counterLocked returns or creates the counter at key; b.mu is held.
func (b *Backend) counterLocked(key string) *atomic.Int64 {
	var c *atomic.Int64
	b.cache.Compute(key, func(old *entry, found bool) (*entry, otter.ComputeOp) {
		if found && old.counter != nil {
			c = old.counter
			return old, otter.CancelOp
		}
		c = new(atomic.Int64)
		c.Store(rand.Int64N(1 << 48))
		return &entry{counter: c}, otter.WriteOp
	})
	return c
}

// Mutex returns nil: the region's in-process lock is all one process needs.
func (b *Backend) Mutex(string) region.Mutex { return nil }

// WeightedSize returns the bytes currently accounted to entries.
func (b *Backend) WeightedSize() uint64 { return b.cache.WeightedSize() }

// Len returns the number of entries, counters excluded.
func (b *Backend) Len() int { return b.cache.EstimatedSize() }

var (
	_ region.Backend       = (*Backend)(nil)
	_ region.CounterRefs   = (*Backend)(nil)
	_ region.ProcessLocal  = (*Backend)(nil)
	_ region.ValueAppender = (*Backend)(nil)
)

// ProcessLocal reports that only this process reaches the backend.
func (b *Backend) ProcessLocal() bool { return true }
