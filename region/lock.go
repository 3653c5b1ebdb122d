package region

import (
	"bytes"
	"context"
	"fmt"
	"runtime/debug"
	"time"
)

// The dogpile lock. For each backend key at most one creator runs at a time
// in this process (a flight), and, when the backend hands out a Mutex, at
// most one across the processes that share it:
//
//   - fresh value: served, no lock taken;
//   - stale value: the caller that starts the flight regenerates (in the
//     background with WithAsyncRegeneration); every other caller is served
//     the stale value at once;
//   - no value: the caller that starts the flight runs the creator; the others
//     wait for its result, each bounded by its own context and the wait
//     timeout.
//
// Unlike dogpile.cache, a lock that is not obtained is never ignored: a
// caller that finds the key's Mutex held elsewhere serves stale or waits for
// the holder, and runs the creator unlocked only when its wait budget runs
// out. The creator runs in a goroutine of its own, on a context that keeps
// the first caller's values but not its cancellation, so no single caller
// leaving can cancel the work the others wait for.

// maxRetries bounds how often a caller starts over after a flight it waited
// on ended without a value for it.
const maxRetries = 3

// wait is one flight a caller waits on, for the key at index i.
type wait struct {
	i     int
	fl    *flight
	own   bool // this caller started it
	stale bool // the caller already holds a stale value for the key
}

// load is the dogpile lock for a set of keys; s is a snapshot already read
// for bkeys, or nil.
func (r *Region) load(ctx context.Context, keys, bkeys []string, l Loader, co *callOptions, s *snapshot, attempt int) error {
	if s == nil {
		snap, err := r.read(ctx, bkeys, co)
		if err != nil {
			r.stats.errors.Add(1)
		}
		s = &snap
	}
	var (
		env               envelope
		waits             []wait
		led, asyncLed     []int
		ledFl, asyncLedFl []*flight
		seen              map[string]bool
	)
	if len(bkeys) > 1 {
		seen = make(map[string]bool, len(bkeys))
	}
	// First what each key needs, then every flight joined in one step, so
	// that of callers asking for overlapping keys at once one leads them all
	// rather than each leading the keys it happened to reach first.
	states := make([]state, len(bkeys))
	var need []int // keys that join a flight
	for i, k := range bkeys {
		if seen != nil {
			if seen[k] {
				states[i] = fresh // a duplicate: served with the first
				continue
			}
			seen[k] = true
		}
		st := r.classify(s.raw[i], s, i, co, &env)
		if st != miss && !r.decode(env.payload, func(b []byte) error { return l.Decode(keys[i], r.codec, b) }) {
			st = miss
		}
		states[i] = st
		switch st {
		case fresh:
			r.stats.hits.Add(1)
		default:
			need = append(need, i)
		}
	}
	fls, leads := r.flights.joinAll(bkeys, need)
	for n, i := range need {
		fl, lead := fls[n], leads[n]
		switch states[i] {
		case stale:
			switch {
			case !lead:
				r.stats.staleServed.Add(1)
			case r.async != nil:
				fl.seen, fl.stale = s.raw[i], true
				r.stats.staleServed.Add(1)
				asyncLed, asyncLedFl = append(asyncLed, i), append(asyncLedFl, fl)
			default:
				fl.seen, fl.stale = s.raw[i], true
				led, ledFl = append(led, i), append(ledFl, fl)
				waits = append(waits, wait{i: i, fl: fl, own: true, stale: true})
			}
		case miss:
			// Counted once in its flight, so a count of misses is a count
			// of callers already waiting or leading.
			r.stats.misses.Add(1)
			if lead {
				fl.seen = s.raw[i]
				led, ledFl = append(led, i), append(ledFl, fl)
			} else {
				r.stats.lockWaits.Add(1)
			}
			waits = append(waits, wait{i: i, fl: fl, own: lead})
		}
	}
	if len(asyncLed) > 0 {
		select {
		case r.async <- struct{}{}:
			go func() {
				defer func() { <-r.async }()
				r.regenerate(ctx, keys, bkeys, asyncLed, asyncLedFl, l, co)
			}()
		default:
			// Every slot is busy: serve stale now, a later caller retries.
			for j, i := range asyncLed {
				r.flights.land(bkeys[i], asyncLedFl[j])
			}
		}
	}
	if len(led) > 0 {
		go r.regenerate(ctx, keys, bkeys, led, ledFl, l, co)
	}
	if len(waits) == 0 {
		return nil
	}
	return r.await(ctx, keys, bkeys, l, co, s, waits, attempt)
}

// await collects the results of the flights a caller waits on.
func (r *Region) await(ctx context.Context, keys, bkeys []string, l Loader, co *callOptions, s *snapshot, waits []wait, attempt int) error {
	var timeout <-chan time.Time
	if r.waitTimeout > 0 {
		t := time.NewTimer(r.waitTimeout)
		defer t.Stop()
		timeout = t.C
	}
	var (
		firstErr  error
		panicked  *flight
		retry     []int
		timedOut  []int
		refused   []int // shared values Adopt would not take
		stopWaits bool
	)
	for _, w := range waits {
		if stopWaits && !w.own {
			timedOut = append(timedOut, w.i)
			continue
		}
		// A caller waits for its own creator without the wait budget: running
		// the creator again would only duplicate it (WithCreatorTimeout bounds
		// it instead).
		budget := timeout
		if w.own {
			budget = nil
		}
		select {
		case <-w.fl.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-budget:
			stopWaits = true
			timedOut = append(timedOut, w.i)
			continue
		}
		fl := w.fl
		switch {
		case fl.panicVal != nil:
			if w.own {
				panicked = fl
			} else if firstErr == nil {
				firstErr = fmt.Errorf("region %s: key %q: %w: %v", r.name, keys[w.i], ErrCreatorPanicked, fl.panicVal)
			}
		case fl.err != nil:
			if !w.stale && firstErr == nil {
				firstErr = fl.err
			}
			// A caller that holds a stale value keeps it when its
			// regeneration fails (stale-if-error).
		case !fl.made:
			if !w.own && !w.stale {
				retry = append(retry, w.i)
			}
		case !w.own && !fl.currentFor(s, w.i):
			// Made from data older than what this caller must see.
			retry = append(retry, w.i)
		case w.own && fl.val != nil:
			l.Adopt(keys[w.i], fl.val, true)
		case fl.payload != nil && l.Decode(keys[w.i], r.codec, fl.payload) == nil:
		case fl.payload == nil && fl.val != nil:
			if !l.Adopt(keys[w.i], fl.val, false) {
				refused = append(refused, w.i)
			}
		default:
			// Found stored by someone else, but unreadable for this caller.
			r.stats.decodeFailures.Add(1)
			retry = append(retry, w.i)
		}
	}
	if panicked != nil {
		panic(panicked.panicVal)
	}
	if firstErr != nil {
		return firstErr
	}
	if len(timedOut) > 0 {
		if r.noWaitFallback {
			return fmt.Errorf("region %s: key %q: %w", r.name, keys[timedOut[0]], ErrWaitTimeout)
		}
		if err := r.createUnlocked(ctx, keys, bkeys, timedOut, l, co); err != nil {
			return err
		}
	}
	if len(refused) > 0 {
		if err := r.createUnlocked(ctx, keys, bkeys, refused, l, co); err != nil {
			return err
		}
	}
	if len(retry) > 0 {
		if attempt >= maxRetries {
			return r.createUnlocked(ctx, keys, bkeys, retry, l, co)
		}
		sub, subB := make([]string, len(retry)), make([]string, len(retry))
		for j, i := range retry {
			sub[j], subB[j] = keys[i], bkeys[i]
		}
		return r.load(ctx, sub, subB, l, co, nil, attempt+1)
	}
	return nil
}

// createUnlocked runs the creator for keys whose wait budget ran out, in the
// caller's own goroutine and context, storing what it makes.
func (r *Region) createUnlocked(ctx context.Context, keys, bkeys []string, idx []int, l Loader, co *callOptions) error {
	sub, subB := make([]string, len(idx)), make([]string, len(idx))
	for j, i := range idx {
		sub[j], subB[j] = keys[i], bkeys[i]
	}
	s, err := r.read(ctx, subB, co)
	if err == nil {
		err = r.initStamps(ctx, &s)
	}
	if err != nil {
		r.stats.errors.Add(1)
		s.bypass = true
	}
	r.stats.regenerations.Add(1)
	vals, err := l.Create(ctx, sub)
	if err != nil {
		return err
	}
	for j, k := range sub {
		v, ok := vals[k]
		if !ok {
			continue
		}
		l.Adopt(k, v, true)
		r.keep(ctx, subB[j], v, &s, j, co, nil)
	}
	return nil
}

// keep encodes v and stores it under bkey unless the call says not to; it
// returns the payload for callers that wait (nil when encoding failed).
func (r *Region) keep(ctx context.Context, bkey string, v any, s *snapshot, i int, co *callOptions, lock Mutex) []byte {
	var payload []byte
	if p, ok := v.(Payloader); ok {
		b, ok := p.Payload()
		if !ok {
			r.stats.notStored.Add(1)
			return nil
		}
		payload = b
	} else {
		b, err := r.codec.Marshal(v)
		if err != nil {
			r.stats.errors.Add(1)
			return nil
		}
		payload = b
	}
	if s.bypass || (co.shouldCache != nil && !co.shouldCache(v)) {
		r.stats.notStored.Add(1)
		return payload
	}
	var fence *Guard
	if f, ok := lock.(Fencer); ok {
		g := f.Fence()
		fence = &g
	}
	ok, err := r.store(ctx, bkey, payload, s, i, co, fence)
	if err != nil {
		r.stats.errors.Add(1)
	} else if !ok {
		r.stats.notStored.Add(1)
	}
	return payload
}

// regenerate runs in its own goroutine for the keys at idx, whose flights
// this call leads. It re-reads them (another caller may have stored a value
// since), takes the backend's Mutex where there is one, runs the creator once
// for every key still without a value, stores the results and lands the
// flights.
func (r *Region) regenerate(callerCtx context.Context, keys, bkeys []string, idx []int, fls []*flight, l Loader, co *callOptions) {
	ctx := context.WithoutCancel(callerCtx)
	var cancel context.CancelFunc = func() {}
	if r.creatorTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, r.creatorTimeout)
	}
	var locks map[string]Mutex // by backend key; held until the flights land
	defer func() {
		if p := recover(); p != nil {
			stack := debug.Stack()
			for _, fl := range fls {
				fl.panicVal, fl.stack = p, stack
			}
		}
		for _, m := range locks {
			_ = m.Unlock(context.WithoutCancel(ctx))
		}
		cancel()
		for j, i := range idx {
			r.flights.land(bkeys[i], fls[j])
		}
	}()

	sub := make([]string, len(idx))
	for j, i := range idx {
		sub[j] = bkeys[i]
	}
	s, err := r.read(ctx, sub, co)
	if err != nil {
		r.stats.errors.Add(1)
	}
	// todo collects the flights that still need the creator; pos is where
	// each flight's key sits in the latest snapshot s.
	var todo []int // positions in idx
	pos := make([]int, len(idx))
	for j := range pos {
		pos[j] = j
	}
	var env envelope
	for j := range idx {
		if r.foundNew(s.raw[j], j, fls[j], &s, co, &env) {
			fls[j].found(&env)
			continue
		}
		todo = append(todo, j)
	}
	todo, locks = r.lockAll(ctx, bkeys, idx, todo, fls, co)
	if len(todo) == 0 {
		return
	}
	if len(locks) > 0 {
		// The lock may have been taken after another process stored a value:
		// read again so we never regenerate what is already there.
		sub = sub[:0]
		for _, j := range todo {
			sub = append(sub, bkeys[idx[j]])
		}
		s, err = r.read(ctx, sub, co)
		if err != nil {
			r.stats.errors.Add(1)
		}
		kept := todo[:0]
		for n, j := range todo {
			pos[j] = n
			if r.foundNew(s.raw[n], n, fls[j], &s, co, &env) {
				fls[j].found(&env)
				continue
			}
			kept = append(kept, j)
		}
		todo = kept
		if len(todo) == 0 {
			return
		}
	}
	if err == nil {
		err = r.initStamps(ctx, &s)
	}
	if err != nil {
		r.stats.errors.Add(1)
		s.bypass = true // unsure what the tags hold: serve the value, store nothing
	}
	names := make([]string, len(todo))
	for n, j := range todo {
		names[n] = keys[idx[j]]
	}
	r.stats.regenerations.Add(1)
	run := r.creations.Add(1)
	vals, cerr := l.Create(ctx, names)
	if cerr != nil {
		for _, j := range todo {
			fls[j].err = cerr
		}
		return
	}
	for n, j := range todo {
		v, ok := vals[names[n]]
		if !ok {
			continue
		}
		fls[j].val, fls[j].made = v, true
		fls[j].created, fls[j].stamps, fls[j].run = s.now, s.stampsOf(pos[j]), run
		fls[j].payload = r.keep(ctx, bkeys[idx[j]], v, &s, pos[j], co, locks[bkeys[idx[j]]])
	}
}

// foundNew reports whether a re-read found a fresh value other than the one
// the leading caller already found unusable.
func (r *Region) foundNew(raw []byte, i int, fl *flight, s *snapshot, co *callOptions, env *envelope) bool {
	if raw == nil || (fl.seen != nil && bytes.Equal(raw, fl.seen)) {
		return false
	}
	return r.classify(raw, s, i, co, env) == fresh
}

// lockAll takes the backend Mutex of each key in todo. A key whose Mutex is
// held elsewhere is dropped from todo if its caller holds a stale value (it
// is served); for a missing value the caller waits for the holder, re-reads,
// and either finds the value, takes the lock, or, once the wait budget is
// spent, runs the creator unlocked.
func (r *Region) lockAll(ctx context.Context, bkeys []string, idx, todo []int, fls []*flight, co *callOptions) (kept []int, locks map[string]Mutex) {
	kept = todo[:0:0]
	for _, j := range todo {
		k := bkeys[idx[j]]
		m := r.backend.Mutex(k)
		if m == nil {
			kept = append(kept, j)
			continue
		}
		ok, found := r.acquire(ctx, k, m, co, fls[j])
		if found {
			continue
		}
		if ok {
			if locks == nil {
				locks = make(map[string]Mutex)
			}
			locks[k] = m
			kept = append(kept, j)
			continue
		}
		if !r.noWaitFallback {
			kept = append(kept, j) // budget spent: make it ourselves, unlocked
		}
	}
	return kept, locks
}

// acquire tries to take m for k; while another process holds it, it waits
// for that holder and re-reads k. found reports that a fresh value (or, for a
// stale caller, the holder's regeneration) makes creation unnecessary.
func (r *Region) acquire(ctx context.Context, k string, m Mutex, co *callOptions, fl *flight) (ok, found bool) {
	deadline := time.Now().Add(r.waitTimeout)
	var env envelope
	for {
		ok, err := m.TryLock(ctx)
		if err != nil {
			// The lock service is down: the store is probably down too, so
			// the value is made without it rather than not at all.
			r.stats.errors.Add(1)
			return false, false
		}
		if ok {
			return true, false
		}
		if fl.stale {
			// Another process is regenerating this stale value: our
			// callers are served the stale one, as its callers are.
			return false, true
		}
		s, err := r.read(ctx, []string{k}, co)
		if err == nil && r.foundNew(s.raw[0], 0, fl, &s, co, &env) {
			fl.found(&env)
			return false, true
		}
		if r.waitTimeout > 0 && time.Now().After(deadline) {
			return false, false
		}
		r.stats.lockWaits.Add(1)
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if r.waitTimeout > 0 {
			wctx, cancel = context.WithDeadline(ctx, deadline)
		}
		_ = m.Wait(wctx)
		cancel()
	}
}
