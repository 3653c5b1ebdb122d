package region

import (
	"context"
	"fmt"
)

// The dogpile lock. For each backend key at most one creator runs at a time
// in this process (a flight: see flight.go), and, when the backend hands out
// a Mutex, at most one across the processes that share it:
//
//   - fresh value: served, no lock taken;
//   - stale value: the caller that starts the flight regenerates (in the
//     background with WithAsyncRegeneration); every other caller is served
//     the stale value at once;
//   - no value: the caller that starts the flight runs the creator; the others
//     wait for its result, each bounded by its own context and the wait
//     timeout.
//
// A call goes through these steps: load sorts its keys (triage), joins or
// starts their flights (join) and starts the regenerations it leads; await
// waits for the flights within the call's wait budget, hands each result to
// the caller (handOff, by the contract stated on Loader) and settles what is
// left: a panic or an error to report, keys to make unlocked or to look up
// again. A regeneration (regenerate) re-reads its keys (unmade), takes their
// backend Mutexes (lockAll, in mutex.go), re-reads under them, runs the
// creator once for the keys still without a value (create) and lands the
// flights (landAll).
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

// callKeys is the keys of one call: as the caller gave them, and the backend
// key of each, index for index.
type callKeys struct {
	keys  []string
	bkeys []string
}

// subset returns the keys at the indexes idx, in that order.
func (k callKeys) subset(idx []int) callKeys {
	n := len(idx)
	buf := make([]string, 2*n) // both lists in one allocation
	sub := callKeys{keys: buf[:n:n], bkeys: buf[n:]}
	for j, i := range idx {
		sub.keys[j], sub.bkeys[j] = k.keys[i], k.bkeys[i]
	}
	return sub
}

// parts is what a caller does about the keys it joined flights for.
type parts struct {
	waits []wait  // flights to wait on, its own among them
	led   []claim // flights it leads, regenerated at once
	async []claim // flights it leads, regenerated in the background
}

// load is the dogpile lock for the keys of ck; s is a snapshot already read
// for ck.bkeys, or nil.
func (r *Region) load(ctx context.Context, ck callKeys, l Loader, co *callOptions, s *snapshot, attempt int) error {
	if s == nil {
		snap, err := r.read(ctx, ck.bkeys, co)
		if err != nil {
			r.stats.errors.Add(1)
		}
		s = &snap
	}
	need, states := r.triage(ck, l, co, s)
	p := r.join(ck, s, need, states)
	r.regenerateAsync(ctx, ck, p.async, l, co)
	if len(p.led) > 0 {
		go r.regenerate(ctx, ck, p.led, l, co)
	}
	if len(p.waits) == 0 {
		return nil
	}
	return r.await(ctx, ck, l, co, s, p.waits, attempt)
}

// triage decides what s holds for each key: a fresh value is decoded into
// the caller's destination and counted as a hit. It returns the indexes of
// the keys that need a flight, and each key's state. A key given twice is
// served with its first occurrence.
func (r *Region) triage(ck callKeys, l Loader, co *callOptions, s *snapshot) (need []int, states []state) {
	var seen map[string]bool
	if len(ck.bkeys) > 1 {
		seen = make(map[string]bool, len(ck.bkeys))
	}
	var env envelope
	states = make([]state, len(ck.bkeys))
	for i, k := range ck.bkeys {
		if seen != nil {
			if seen[k] {
				states[i] = fresh // a duplicate: served with the first
				continue
			}
			seen[k] = true
		}
		st := r.classify(s.raw[i], s, i, co, &env)
		if st != miss && !r.decode(env.payload, func(b []byte) error { return l.Decode(ck.keys[i], r.codec, b) }) {
			st = miss
		}
		states[i] = st
		if st == fresh {
			r.stats.hits.Add(1)
		} else {
			need = append(need, i)
		}
	}
	return need, states
}

// join joins (or starts) the flights of the keys at need and decides the
// caller's part in each: for a stale value, served at once unless it leads,
// when it regenerates in the background (WithAsyncRegeneration) or now,
// waiting for its own flight but keeping the stale value if that fails; for
// a miss, it leads the flight or waits for it. Every flight is joined in one
// step, so that of callers asking for overlapping keys at once one leads
// them all rather than each leading the keys it happened to reach first.
func (r *Region) join(ck callKeys, s *snapshot, need []int, states []state) parts {
	var p parts
	fls, leads := r.flights.joinAll(ck.bkeys, need)
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
				p.async = append(p.async, claim{i: i, fl: fl})
			default:
				fl.seen, fl.stale = s.raw[i], true
				p.led = append(p.led, claim{i: i, fl: fl})
				p.waits = append(p.waits, wait{i: i, fl: fl, own: true, stale: true})
			}
		case miss:
			// Counted once in its flight, so a count of misses is a count
			// of callers already waiting or leading.
			r.stats.misses.Add(1)
			if lead {
				fl.seen = s.raw[i]
				p.led = append(p.led, claim{i: i, fl: fl})
			} else {
				r.stats.lockWaits.Add(1)
			}
			p.waits = append(p.waits, wait{i: i, fl: fl, own: lead})
		}
	}
	return p
}

// regenerateAsync regenerates the flights of led in the background, when
// one of the region's async slots is free. When every slot is busy the
// flights land at once: the stale value is served now, a later caller
// retries.
func (r *Region) regenerateAsync(ctx context.Context, ck callKeys, led []claim, l Loader, co *callOptions) {
	if len(led) == 0 {
		return
	}
	select {
	case r.async <- struct{}{}:
		go func() {
			defer func() { <-r.async }()
			r.regenerate(ctx, ck, led, l, co)
		}()
	default:
		r.landClaims(ck, led)
	}
}

// landClaims lands the flights of cs.
func (r *Region) landClaims(ck callKeys, cs []claim) {
	for _, c := range cs {
		r.flights.land(ck.bkeys[c.i], c.fl)
	}
}

// awaited is what the flights a caller waited on left it to do.
type awaited struct {
	err      error       // the first flight error for a key the caller has no value for
	panicked *PanicError // the caller's own creator panicked
	retry    []int       // keys with nothing usable for this caller: look again
	timedOut []int       // keys whose wait budget ran out
	refused  []int       // keys whose shared value Adopt would not take
}

// outcome is what is left to do for a key once its flight has landed and
// been handed to the caller.
type outcome uint8

const (
	settled  outcome = iota // the destination is filled, or nothing is owed
	failed                  // the flight's error is the caller's
	panicked                // the caller's own creator panicked
	retry                   // nothing usable for this caller: look again
	refused                 // Adopt would not take a shared value
)

// note records the outcome of w.
func (a *awaited) note(w wait, o outcome, err error) {
	switch o {
	case failed:
		if a.err == nil {
			a.err = err
		}
	case panicked:
		a.panicked = w.fl.panic
	case retry:
		a.retry = append(a.retry, w.i)
	case refused:
		a.refused = append(a.refused, w.i)
	}
}

// await collects the results of the flights a caller waits on.
func (r *Region) await(ctx context.Context, ck callKeys, l Loader, co *callOptions, s *snapshot, waits []wait, attempt int) error {
	budget := r.newWaitBudget()
	defer budget.stop()
	var a awaited
	for _, w := range waits {
		landed, err := budget.wait(ctx, w)
		if err != nil {
			return err
		}
		if !landed {
			a.timedOut = append(a.timedOut, w.i)
			continue
		}
		o, err := r.handOff(ck.keys[w.i], l, s, w)
		a.note(w, o, err)
	}
	return r.settle(ctx, ck, l, co, &a, attempt)
}

// handOff gives the caller the result of the flight w, which has landed, for
// key (by the contract stated on Loader) and says what is left to do.
func (r *Region) handOff(key string, l Loader, s *snapshot, w wait) (outcome, error) {
	fl := w.fl
	switch {
	case fl.panic != nil:
		if w.own {
			return panicked, nil
		}
		return failed, fmt.Errorf("region %s: key %q: %w", r.name, key, fl.panic)
	case fl.err != nil:
		if w.stale {
			// A caller that holds a stale value keeps it when its
			// regeneration fails (stale-if-error).
			return settled, nil
		}
		return failed, fl.err
	case !fl.made:
		if w.own || w.stale {
			return settled, nil
		}
		return retry, nil
	case !w.own && !fl.currentFor(s, w.i):
		// Made from data older than what this caller must see.
		return retry, nil
	case w.own && fl.val != nil:
		l.Adopt(key, fl.val, true)
		return settled, nil
	case fl.payload != nil && l.Decode(key, r.codec, fl.payload) == nil:
		return settled, nil
	case fl.payload == nil && fl.val != nil:
		if !l.Adopt(key, fl.val, false) {
			return refused, nil
		}
		return settled, nil
	default:
		// Found stored by someone else, but unreadable for this caller.
		r.stats.decodeFailures.Add(1)
		return retry, nil
	}
}

// settle finishes a call after its waits: the caller's own creator's panic
// is raised again, a flight's error returned; keys whose wait timed out or
// whose shared value was refused are made unlocked, and keys with nothing
// usable are looked up again (made unlocked after maxRetries).
func (r *Region) settle(ctx context.Context, ck callKeys, l Loader, co *callOptions, a *awaited, attempt int) error {
	if a.panicked != nil {
		panic(a.panicked) // in the caller's goroutine, with the creator's stack
	}
	if a.err != nil {
		return a.err
	}
	if len(a.timedOut) > 0 {
		if r.noWaitFallback {
			return fmt.Errorf("region %s: key %q: %w", r.name, ck.keys[a.timedOut[0]], ErrWaitTimeout)
		}
		if err := r.createUnlocked(ctx, ck.subset(a.timedOut), l, co); err != nil {
			return err
		}
	}
	if len(a.refused) > 0 {
		if err := r.createUnlocked(ctx, ck.subset(a.refused), l, co); err != nil {
			return err
		}
	}
	if len(a.retry) > 0 {
		sub := ck.subset(a.retry)
		if attempt >= maxRetries {
			return r.createUnlocked(ctx, sub, l, co)
		}
		return r.load(ctx, sub, l, co, nil, attempt+1)
	}
	return nil
}

// createUnlocked runs the creator for the keys of ck outside the lock (their
// wait budget ran out, or their shared value was refused), in the caller's
// own goroutine and context, storing what it makes.
func (r *Region) createUnlocked(ctx context.Context, ck callKeys, l Loader, co *callOptions) error {
	s, _ := r.read(ctx, ck.bkeys, co)
	r.prepareStamps(ctx, &s)
	r.stats.regenerations.Add(1)
	vals, err := l.Create(ctx, ck.keys)
	if err != nil {
		return err
	}
	for j, k := range ck.keys {
		v, ok := vals[k]
		if !ok {
			continue
		}
		l.Adopt(k, v, true)
		r.keep(ctx, ck.bkeys[j], v, &s, j, co, nil)
	}
	return nil
}

// regenerate runs in its own goroutine for the flights that a call leads. It
// re-reads their keys (another caller may have stored a value since), takes
// the backend's Mutex where there is one, runs the creator once for every
// key still without a value, stores the results and lands the flights.
func (r *Region) regenerate(callerCtx context.Context, ck callKeys, led []claim, l Loader, co *callOptions) {
	ctx, cancel := r.creatorContext(callerCtx)
	var locks map[string]Mutex // by backend key; held until the flights land
	defer func() { r.landAll(ctx, cancel, ck, led, locks, recover()) }()

	todo, s := r.unmade(ctx, ck, led, co)
	todo, locks = r.lockAll(ctx, ck, todo, co)
	if len(todo) > 0 && len(locks) > 0 {
		// The lock may have been taken after another process stored a value:
		// read again so we never regenerate what is already there.
		todo, s = r.unmade(ctx, ck, todo, co)
	}
	if len(todo) == 0 {
		return
	}
	r.prepareStamps(ctx, &s)
	r.create(ctx, ck, todo, &s, l, co, locks)
}

// creatorContext returns the context a creator runs on: the caller's values
// without its cancellation, bounded by WithCreatorTimeout.
func (r *Region) creatorContext(callerCtx context.Context) (context.Context, context.CancelFunc) {
	ctx := context.WithoutCancel(callerCtx)
	if r.creatorTimeout > 0 {
		return context.WithTimeout(ctx, r.creatorTimeout)
	}
	return ctx, func() {}
}

// landAll ends a regeneration: a panic of the creator (p, from recover)
// becomes every flight's result, as a *PanicError with the creator's stack;
// the backend locks are released and the flights land.
func (r *Region) landAll(ctx context.Context, cancel context.CancelFunc, ck callKeys, led []claim, locks map[string]Mutex, p any) {
	if p != nil {
		pe := newPanicError(p)
		for _, c := range led {
			c.fl.panic = pe
		}
	}
	for _, m := range locks {
		_ = m.Unlock(context.WithoutCancel(ctx))
	}
	cancel()
	r.landClaims(ck, led)
}

// unmade reads the keys of cs and returns the claims whose key still has no
// fresh value (other than the one its caller found unusable), each with its
// key's place in the snapshot read, which it also returns. A flight whose
// key has one now is given it.
func (r *Region) unmade(ctx context.Context, ck callKeys, cs []claim, co *callOptions) ([]claim, snapshot) {
	s, err := r.read(ctx, ck.subset(indexes(cs)).bkeys, co)
	if err != nil {
		r.stats.errors.Add(1)
	}
	var (
		env  envelope
		todo []claim
	)
	for n, c := range cs {
		if r.foundNew(s.raw[n], n, c.fl, &s, co, &env) {
			c.fl.found(&env)
			continue
		}
		c.at = n
		todo = append(todo, c)
	}
	return todo, s
}

// create runs the creator once for the keys of todo, read in s, and gives
// each flight its value, stored under the backend lock held for its key.
func (r *Region) create(ctx context.Context, ck callKeys, todo []claim, s *snapshot, l Loader, co *callOptions, locks map[string]Mutex) {
	names := ck.subset(indexes(todo)).keys
	r.stats.regenerations.Add(1)
	run := r.creations.Add(1)
	vals, err := l.Create(ctx, names)
	if err != nil {
		for _, c := range todo {
			c.fl.err = err
		}
		return
	}
	for n, c := range todo {
		v, ok := vals[names[n]]
		if !ok {
			continue
		}
		bkey := ck.bkeys[c.i]
		c.fl.val, c.fl.made = v, true
		c.fl.hard, c.fl.stamps, c.fl.run = s.inv.hard, s.stampsOf(c.at), run
		c.fl.payload = r.keep(ctx, bkey, v, s, c.at, co, locks[bkey])
	}
}
