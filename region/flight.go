package region

import (
	"bytes"
	"context"
	"sync"
	"time"
)

// flight is one run of a creator for one key, shared by the callers that wait
// on it.
type flight struct {
	done chan struct{} // closed once the fields below are final

	// seen is the stored entry the leading caller holds stale, or judged
	// fresh but could not decode (nil if none). Written before the
	// creator's goroutine starts; read by it only: a re-read that finds
	// these same bytes has found nothing new. An entry the caller's read
	// merely judged a miss is not kept here: that read may have seen too
	// little to judge it (see undecodable).
	seen []byte
	// stale is set, like seen, when the leading caller holds a stale value
	// it can serve, so it need not wait for another process's regeneration.
	stale bool

	// Written only by the goroutine that runs the creator, before done is
	// closed; read only after done is closed.
	val     any    // the value made for this key, when made is set
	made    bool   // a value exists: made by the creator, or found fresh on re-read
	payload []byte // the value encoded; nil when encoding failed
	err     error  // the creator's error; nothing was stored
	// hard and stamps say what the value was made from (as in its
	// envelope): a caller that joined the flight uses the value only if its
	// own view of the region is no newer.
	hard   int64
	stamps [][]byte
	// run is the number (Region.creations) the creator run took just
	// before reading its source or, for a value found stored, the number
	// the re-read that found it took before it read the backend: either
	// way a caller whose own read began before (its snapshot's seq is
	// lower) may take the value when it cannot compare generations.
	run   int64
	panic *PanicError // non-nil when the creator panicked
}

// found records a stored value that a re-read found fresh; run is the
// number the re-read took before it read the backend.
func (fl *flight) found(env *envelope, run int64) {
	fl.payload, fl.made, fl.run = append([]byte(nil), env.payload...), true, run
	fl.hard = env.hard
	fl.stamps = env.stampList()
	for i, st := range fl.stamps {
		fl.stamps[i] = append([]byte(nil), st...)
	}
}

// currentFor reports whether a flight's value may be given to a caller that
// joined it with the view s of entry i: made under the region's hard
// generation in s, from the same tag versions. A value that was being
// made when a write committed is not given to a caller that began after it.
func (fl *flight) currentFor(s *snapshot, i int) bool {
	if s.failed {
		// Nothing to compare with: only a run that began after the caller
		// arrived is surely as new as what the caller must see.
		return fl.run > s.seq
	}
	if s.bypass && fl.run <= s.since {
		// The caller's stamps are from before an invalidation that could
		// not be written, as are those of a run that began before it
		// failed: equal, they say nothing. A run that began after it read
		// the database after the write, and is compared as usual.
		return false
	}
	// What the caller could not read (a generation or a counter the
	// backend lost) cannot be compared: as for a failed read, only a run
	// that began after the caller arrived will do. That costs no herd at a
	// cold start: a leader sets missing counters before its creator runs,
	// so a caller that still found one missing arrived before the run.
	if !s.inv.hardOK {
		return fl.run > s.seq
	}
	if fl.hard != s.inv.hard {
		return false
	}
	cur := s.stampsOf(i)
	if len(cur) != len(fl.stamps) {
		return false
	}
	for j := range cur {
		if cur[j] == nil {
			return fl.run > s.seq
		}
		if !bytes.Equal(cur[j], fl.stamps[j]) {
			return false
		}
	}
	return true
}

// foundNew reports whether a re-read found a fresh value other than the one
// the leading caller already found unusable.
func (r *Region) foundNew(raw []byte, i int, fl *flight, s *snapshot, co *callOptions, env *envelope) bool {
	if raw == nil || (fl.seen != nil && bytes.Equal(raw, fl.seen)) {
		return false
	}
	return r.classify(raw, s, i, co, env) == fresh
}

// flights is a region's flight map: the flight of each key while its
// creator runs.
type flights struct {
	mu sync.Mutex         // guards m
	m  map[string]*flight // a key is present while its flight runs
}

// joinAll joins (or starts) the flights of bkeys[i] for each i in idx, all
// under one lock.
func (f *flights) joinAll(bkeys []string, idx []int) ([]*flight, []bool) {
	if len(idx) == 0 {
		return nil, nil
	}
	fls, leads := make([]*flight, len(idx)), make([]bool, len(idx))
	f.mu.Lock()
	defer f.mu.Unlock()
	for n, i := range idx {
		if fl, ok := f.m[bkeys[i]]; ok {
			fls[n] = fl
			continue
		}
		fl := &flight{done: make(chan struct{})}
		f.m[bkeys[i]] = fl
		fls[n], leads[n] = fl, true
	}
	return fls, leads
}

// land publishes the flight's result: later callers start a new flight, the
// ones waiting are released.
func (f *flights) land(key string, fl *flight) {
	f.mu.Lock()
	if f.m[key] == fl {
		delete(f.m, key)
	}
	f.mu.Unlock()
	close(fl.done)
}

// claim is a flight that a caller leads, for the key at index i of its call.
// at is where regenerate found the key in the snapshot it read last. A call
// hands its list of claims to the goroutine of their regeneration and does
// not touch it again.
type claim struct {
	i, at int
	fl    *flight
}

// indexes returns the call indexes of the claims' keys.
func indexes(cs []claim) []int {
	idx := make([]int, len(cs))
	for j, c := range cs {
		idx[j] = c.i
	}
	return idx
}

// wait is one flight a caller waits on, for the key at index i. Used by the
// caller's goroutine only.
type wait struct {
	i     int
	fl    *flight
	own   bool // this caller started it
	stale bool // the caller already holds a stale value for the key
}

// waitBudget is the wait timeout of one call, shared by every flight it
// waits on: once it is spent, the caller waits for no other caller's flight.
// A caller waits for its own flights without it: running the creator again
// would only duplicate them (WithCreatorTimeout bounds them instead). Used
// by the caller's goroutine only.
type waitBudget struct {
	timer *time.Timer // nil: no wait timeout
	spent bool
}

// newWaitBudget starts the wait budget of a call.
func (r *Region) newWaitBudget() *waitBudget {
	b := &waitBudget{}
	if r.waitTimeout > 0 {
		b.timer = time.NewTimer(r.waitTimeout)
	}
	return b
}

// stop releases the budget's timer.
func (b *waitBudget) stop() {
	if b.timer != nil {
		b.timer.Stop()
	}
}

// wait blocks until w's flight lands, and reports whether it did; false
// means the budget ran out first. It returns ctx's error if ctx ends first.
func (b *waitBudget) wait(ctx context.Context, w wait) (bool, error) {
	var budget <-chan time.Time
	if !w.own {
		if b.spent {
			return false, nil
		}
		if b.timer != nil {
			budget = b.timer.C
		}
	}
	select {
	case <-w.fl.done:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	case <-budget:
		b.spent = true
		return false, nil
	}
}
