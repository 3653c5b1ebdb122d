package region

import (
	"context"
	"math/bits"
	"sync/atomic"
	"time"
)

// Metrics is a backend wrapper (see Proxy) that counts, for each operation
// a region asks of its backend and of the backend's locks, the calls, the
// errors and their latency:
//
//	m := region.NewMetrics()
//	r := region.New(region.WrapBackend(b, m.Wrap), region.WithExpiration(time.Minute))
//	...
//	for op, s := range m.Snapshot() {
//		log.Printf("%s: %d calls, %d errors, mean %v, p99 < %v", op, s.Calls, s.Errors, s.Mean(), s.Quantile(0.99))
//	}
//
// The operations are named by the Op constants. A Metrics may wrap several
// backends; it then adds up their calls. It is safe for concurrent use, and
// costs each call two readings of the clock and a few atomic additions.
type Metrics struct {
	ops [numOps]opCounters
}

// The operations Metrics counts, by the name Snapshot gives them.
const (
	OpGetMulti = "get_multi" // Backend.GetMulti
	OpGet      = "get"       // ValueAppender.AppendValue: a region's read of one key from a local backend
	OpSetMulti = "set_multi" // Backend.SetMulti
	OpSetIf    = "set_if"    // Backend.SetIf
	OpDelete   = "delete"    // Backend.Delete
	OpIncr     = "incr"      // Backend.Incr
	OpBumpTags = "bump_tags" // TagBumper.BumpTags
	OpLock     = "lock"      // Mutex.TryLock
	OpUnlock   = "unlock"    // Mutex.Unlock
	OpWait     = "wait"      // Mutex.Wait: waiting for another process's creator, not only the backend
	OpLocked   = "locked"    // LockProber.Locked
)

type opIndex int

const (
	opGetMulti opIndex = iota
	opGet
	opSetMulti
	opSetIf
	opDelete
	opIncr
	opBumpTags
	opLock
	opUnlock
	opWait
	opLocked
	numOps
)

var opNames = [numOps]string{OpGetMulti, OpGet, OpSetMulti, OpSetIf, OpDelete, OpIncr, OpBumpTags, OpLock, OpUnlock, OpWait, OpLocked}

// histBuckets is the number of latency buckets: bucket i counts calls that
// took less than 2^i nanoseconds (and at least 2^(i-1)); the last one counts
// the rest.
const histBuckets = 40

// opCounters are one operation's counters; each is atomic.
type opCounters struct {
	calls, errors atomic.Int64
	total, max    atomic.Int64 // nanoseconds
	hist          [histBuckets]atomic.Int64
}

func (c *opCounters) record(start time.Time, err error) {
	d := int64(time.Since(start))
	d = max(d, 0)
	c.calls.Add(1)
	if err != nil {
		c.errors.Add(1)
	}
	c.total.Add(d)
	for m := c.max.Load(); d > m && !c.max.CompareAndSwap(m, d); m = c.max.Load() {
	}
	c.hist[min(bits.Len64(uint64(d)), histBuckets-1)].Add(1)
}

// OpStats is what Metrics counted for one operation.
type OpStats struct {
	Calls  int64         // calls made
	Errors int64         // calls that returned an error
	Total  time.Duration // time spent in all calls
	Max    time.Duration // the longest call
	// Histogram counts the calls by latency: Histogram[i] those that took
	// less than 2^i nanoseconds and at least 2^(i-1), the last one those
	// that took longer.
	Histogram [histBuckets]int64
}

// Mean returns the mean latency of the calls; zero when there were none.
func (s OpStats) Mean() time.Duration {
	if s.Calls == 0 {
		return 0
	}
	return s.Total / time.Duration(s.Calls)
}

// Quantile returns a bound within which the fraction q (0 to 1) of the
// calls took, from the histogram: at most twice the exact quantile. It
// returns Max when the bound would exceed it, and zero without calls.
func (s OpStats) Quantile(q float64) time.Duration {
	var n int64
	for _, c := range s.Histogram {
		n += c
	}
	if n == 0 {
		return 0
	}
	want := int64(q*float64(n) + 0.5)
	want = min(max(want, 1), n)
	var seen int64
	for i, c := range s.Histogram {
		if seen += c; seen >= want {
			if i == histBuckets-1 {
				return s.Max
			}
			return min(time.Duration(1)<<i, s.Max)
		}
	}
	return s.Max
}

// NewMetrics returns a Metrics that has counted nothing yet.
func NewMetrics() *Metrics { return &Metrics{} }

// Snapshot returns the counters of every operation that has been called at
// least once, by operation name (the Op constants). The counters of one
// operation are read one after another while calls go on, so they may be
// a call apart.
func (m *Metrics) Snapshot() map[string]OpStats {
	out := make(map[string]OpStats)
	for i := range m.ops {
		c := &m.ops[i]
		if c.calls.Load() == 0 {
			continue
		}
		s := OpStats{
			Calls: c.calls.Load(), Errors: c.errors.Load(),
			Total: time.Duration(c.total.Load()), Max: time.Duration(c.max.Load()),
		}
		for j := range c.hist {
			s.Histogram[j] = c.hist[j].Load()
		}
		out[opNames[i]] = s
	}
	return out
}

// Wrap returns b wrapped so that m counts its calls and those of its locks;
// pass it to WrapBackend. The wrapper keeps b's optional interfaces (see
// Proxy), and its Mutex is nil where b's is.
func (m *Metrics) Wrap(b Backend) Backend { return metered{Proxy{Next: b}, m} }

// metered is the Backend that Metrics.Wrap returns.
type metered struct {
	Proxy
	m *Metrics
}

func (w metered) GetMulti(ctx context.Context, keys []string) ([][]byte, error) {
	start := time.Now()
	v, err := w.Next.GetMulti(ctx, keys)
	w.m.ops[opGetMulti].record(start, err)
	return v, err
}

func (w metered) AppendValue(buf []byte, key string) ([]byte, bool) {
	start := time.Now()
	v, ok := w.Proxy.AppendValue(buf, key)
	w.m.ops[opGet].record(start, nil)
	return v, ok
}

func (w metered) SetMulti(ctx context.Context, items []Item) error {
	start := time.Now()
	err := w.Next.SetMulti(ctx, items)
	w.m.ops[opSetMulti].record(start, err)
	return err
}

func (w metered) SetIf(ctx context.Context, item Item, guards []Guard) (bool, error) {
	start := time.Now()
	ok, err := w.Next.SetIf(ctx, item, guards)
	w.m.ops[opSetIf].record(start, err)
	return ok, err
}

func (w metered) Delete(ctx context.Context, keys ...string) error {
	start := time.Now()
	err := w.Next.Delete(ctx, keys...)
	w.m.ops[opDelete].record(start, err)
	return err
}

func (w metered) Incr(ctx context.Context, key string) (int64, error) {
	start := time.Now()
	n, err := w.Next.Incr(ctx, key)
	w.m.ops[opIncr].record(start, err)
	return n, err
}

func (w metered) BumpTags(ctx context.Context, counters, markers []string, delta int64, lease time.Duration) error {
	start := time.Now()
	err := w.Proxy.BumpTags(ctx, counters, markers, delta, lease)
	w.m.ops[opBumpTags].record(start, err)
	return err
}

func (w metered) Mutex(key string) Mutex {
	mu := w.Next.Mutex(key)
	if mu == nil {
		return nil // the region locks in-process only: keep it so
	}
	return meteredMutex{MutexProxy{Next: mu}, w.m}
}

// meteredMutex is the Mutex of a metered backend.
type meteredMutex struct {
	MutexProxy
	m *Metrics
}

func (w meteredMutex) TryLock(ctx context.Context) (bool, error) {
	start := time.Now()
	ok, err := w.Next.TryLock(ctx)
	w.m.ops[opLock].record(start, err)
	return ok, err
}

func (w meteredMutex) Unlock(ctx context.Context) error {
	start := time.Now()
	err := w.Next.Unlock(ctx)
	w.m.ops[opUnlock].record(start, err)
	return err
}

func (w meteredMutex) Wait(ctx context.Context) error {
	start := time.Now()
	err := w.Next.Wait(ctx)
	w.m.ops[opWait].record(start, err)
	return err
}

func (w meteredMutex) Locked(ctx context.Context) (bool, error) {
	start := time.Now()
	ok, err := w.MutexProxy.Locked(ctx)
	w.m.ops[opLocked].record(start, err)
	return ok, err
}
