package region

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
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
//
// An outage costs a call a bounded latency (see budget): once one of its
// backend calls has failed, the call asks the backend nothing more. It
// neither locks nor waits for another process's lock; it runs the creator,
// serves the value and stores nothing.

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
// for ck.bkeys, or nil. b is the call's backend budget, made by the call's
// first load (nil) once it finds a key without a fresh value.
func (r *Region) load(ctx context.Context, ck callKeys, l Loader, co *callOptions, s *snapshot, b *budget, attempt int) error {
	if s == nil {
		var snap snapshot
		if b == nil {
			// The call's first read, like the hit path's, is not timed.
			var err error
			if snap, err = r.read(ctx, ck.bkeys, co); err != nil {
				r.failed(ctx, OpRead, firstKey(ck.keys), err)
			}
		} else {
			snap = r.readWithin(ctx, ck.bkeys, co, b)
		}
		s = &snap
	}
	need, states := r.triage(ck, l, co, s)
	if len(need) == 0 {
		return nil // every key fresh
	}
	if b == nil {
		b = r.newBudget(s.failed)
	}
	p := r.join(ck, l, s, need, states)
	r.regenerateAsync(ctx, ck, p.async, l, co)
	if len(p.led) > 0 {
		go r.regenerate(ctx, ck, p.led, l, co, b)
	}
	if len(p.waits) == 0 {
		return nil
	}
	return r.await(ctx, ck, l, co, s, p.waits, b, attempt)
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
		if env.malformed != nil {
			r.decodeFailed(context.Background(), ck.keys[i], env.malformed)
		}
		if st != miss && !r.decode(ck.keys[i], env.payload, func(b []byte) error { return l.Decode(ck.keys[i], r.codec, b) }) {
			st = undecodable
		}
		states[i] = st
		if st == fresh {
			r.stats.hits.Add(1)
			report(l, ck.keys[i], OutcomeHit)
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
func (r *Region) join(ck callKeys, l Loader, s *snapshot, need []int, states []state) parts {
	var p parts
	fls, leads := r.flights.joinAll(ck.bkeys, need)
	for n, i := range need {
		fl, lead := fls[n], leads[n]
		switch states[i] {
		case stale:
			switch {
			case !lead:
				r.stats.staleServed.Add(1)
				report(l, ck.keys[i], OutcomeStale)
			case r.async != nil:
				fl.seen, fl.stale = s.raw[i], true
				r.stats.staleServed.Add(1)
				report(l, ck.keys[i], OutcomeStale)
				p.async = append(p.async, claim{i: i, fl: fl})
			default:
				fl.seen, fl.stale = s.raw[i], true
				report(l, ck.keys[i], OutcomeMiss) // Stale if its regeneration fails (handOff)
				p.led = append(p.led, claim{i: i, fl: fl})
				p.waits = append(p.waits, wait{i: i, fl: fl, own: true, stale: true})
			}
		case miss, undecodable:
			// Counted once in its flight, so a count of misses is a count
			// of callers already waiting or leading.
			r.stats.misses.Add(1)
			if lead {
				if states[i] == undecodable {
					// Its re-read will find these bytes again, and the
					// caller could not use them. Any other miss is not
					// remembered: the caller's view may not have been
					// able to judge the entry (a cold start, a read torn
					// across servers, a lost counter), and the re-read,
					// which sees more, judges it afresh.
					fl.seen = s.raw[i]
				}
				report(l, ck.keys[i], OutcomeMiss)
				p.led = append(p.led, claim{i: i, fl: fl})
			} else {
				r.stats.lockWaits.Add(1)
				report(l, ck.keys[i], OutcomeWaited)
			}
			p.waits = append(p.waits, wait{i: i, fl: fl, own: lead})
		}
	}
	return p
}

// regenerateAsync regenerates the flights of led in the background, when
// one of the region's async slots is free. When every slot is busy the
// flights land at once: the stale value is served now, a later caller
// retries. No caller waits for a background regeneration: it has a budget
// of its own.
func (r *Region) regenerateAsync(ctx context.Context, ck callKeys, led []claim, l Loader, co *callOptions) {
	if len(led) == 0 {
		return
	}
	select {
	case r.async <- struct{}{}:
		go func() {
			defer func() { <-r.async }()
			r.regenerate(ctx, ck, led, l, co, r.newBudget(false))
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
func (r *Region) await(ctx context.Context, ck callKeys, l Loader, co *callOptions, s *snapshot, waits []wait, b *budget, attempt int) error {
	budget := r.newWaitBudget()
	defer budget.stop()
	var a awaited
	var start time.Time
	if r.observed() {
		start = time.Now()
	}
	for _, w := range waits {
		landed, err := budget.wait(ctx, w)
		if !w.own {
			switch {
			case err != nil:
				r.waited(ctx, ck.keys[w.i], start, err)
			case !landed:
				r.waited(ctx, ck.keys[w.i], start, ErrWaitTimeout)
			default:
				r.waited(ctx, ck.keys[w.i], start, nil)
			}
		}
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
	return r.settle(ctx, ck, l, co, &a, b, attempt)
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
			report(l, key, OutcomeStale)
			return settled, nil
		}
		return failed, fl.err
	case !fl.made:
		if w.stale {
			report(l, key, OutcomeStale)
		}
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
		if w.own {
			// Found stored by another caller when its own regeneration
			// re-read the key (after waiting for its lock): not made here.
			report(l, key, OutcomeWaited)
		}
		return settled, nil
	case fl.payload == nil && fl.val != nil:
		if !l.Adopt(key, fl.val, false) {
			return refused, nil
		}
		return settled, nil
	default:
		// Found stored by someone else, but unreadable for this caller.
		r.decodeFailed(context.Background(), key, errUnreadable)
		return retry, nil
	}
}

// settle finishes a call after its waits: the caller's own creator's panic
// is raised again, a flight's error returned; keys whose wait timed out or
// whose shared value was refused are made unlocked, and keys with nothing
// usable are looked up again (made unlocked after maxRetries).
func (r *Region) settle(ctx context.Context, ck callKeys, l Loader, co *callOptions, a *awaited, b *budget, attempt int) error {
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
		if err := r.createUnlocked(ctx, ck.subset(a.timedOut), l, co, b); err != nil {
			return err
		}
	}
	if len(a.refused) > 0 {
		if err := r.createUnlocked(ctx, ck.subset(a.refused), l, co, b); err != nil {
			return err
		}
	}
	if len(a.retry) > 0 {
		sub := ck.subset(a.retry)
		if attempt >= maxRetries {
			return r.createUnlocked(ctx, sub, l, co, b)
		}
		return r.load(ctx, sub, l, co, nil, b, attempt+1)
	}
	return nil
}

// createUnlocked runs the creator for the keys of ck outside the lock (their
// wait budget ran out, or their shared value was refused), in the caller's
// own goroutine and context, storing what it makes (within the call's
// budget b).
func (r *Region) createUnlocked(ctx context.Context, ck callKeys, l Loader, co *callOptions, b *budget) error {
	s := r.readWithin(ctx, ck.bkeys, co, b)
	r.stampsWithin(ctx, &s, b)
	r.stats.regenerations.Add(1)
	vals, err := runCreator(ctx, r, ck.keys, co, func(ctx context.Context) (map[string]any, error) { return l.Create(ctx, ck.keys) })
	if err != nil {
		return err
	}
	for j, k := range ck.keys {
		v, ok := vals[k]
		if !ok {
			continue
		}
		l.Adopt(k, v, true)
		report(l, k, OutcomeMiss)
		r.keepWithin(ctx, ck.bkeys[j], v, &s, j, co, nil, b)
	}
	return nil
}

// regenerate runs in its own goroutine for the flights that a call leads. It
// re-reads their keys (another caller may have stored a value since), takes
// the backend's Mutex where there is one, runs the creator once for every
// key still without a value, stores the results and lands the flights. Its
// backend calls are the leading caller's, within that call's budget b.
func (r *Region) regenerate(callerCtx context.Context, ck callKeys, led []claim, l Loader, co *callOptions, b *budget) {
	ctx, cancel := r.creatorContext(callerCtx)
	var locks map[string]Mutex // by backend key; held until the flights land
	defer func() { r.landAll(ctx, cancel, ck, led, locks, b, recover()) }()

	todo, s := r.unmade(ctx, ck, led, co, b)
	todo, locks = r.lockAll(ctx, ck, todo, co, b)
	if len(todo) > 0 && len(locks) > 0 {
		// The lock may have been taken after another process stored a value:
		// read again so we never regenerate what is already there.
		todo, s = r.unmade(ctx, ck, todo, co, b)
	}
	if len(todo) == 0 {
		return
	}
	r.stampsWithin(ctx, &s, b)
	r.create(ctx, ck, todo, &s, l, co, locks, b)
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
// the backend locks are released (see unlock) and the flights land.
func (r *Region) landAll(ctx context.Context, cancel context.CancelFunc, ck callKeys, led []claim, locks map[string]Mutex, b *budget, p any) {
	if p != nil {
		pe := newPanicError(p)
		for _, c := range led {
			c.fl.panic = pe
		}
	}
	for _, m := range locks {
		r.unlock(context.WithoutCancel(ctx), m, b)
	}
	cancel()
	r.landClaims(ck, led)
}

// unmade reads the keys of cs and returns the claims whose key still has no
// fresh value (other than the one its caller found unusable), each with its
// key's place in the snapshot read, which it also returns. A flight whose
// key has one now is given it. The read is made within the budget b.
func (r *Region) unmade(ctx context.Context, ck callKeys, cs []claim, co *callOptions, b *budget) ([]claim, snapshot) {
	run := r.creations.Add(1) // this read's number, for a value it finds (flight.run)
	s := r.readWithin(ctx, ck.subset(indexes(cs)).bkeys, co, b)
	var (
		env  envelope
		todo []claim
	)
	for n, c := range cs {
		if r.foundNew(s.raw[n], n, c.fl, &s, co, &env) {
			c.fl.found(&env, run)
			continue
		}
		c.at = n
		todo = append(todo, c)
	}
	return todo, s
}

// create runs the creator once for the keys of todo, read in s, and gives
// each flight its value, stored under the backend lock held for its key
// (within the budget b).
func (r *Region) create(ctx context.Context, ck callKeys, todo []claim, s *snapshot, l Loader, co *callOptions, locks map[string]Mutex, b *budget) {
	names := ck.subset(indexes(todo)).keys
	r.stats.regenerations.Add(1)
	run := r.creations.Add(1)
	vals, err := runCreator(ctx, r, names, co, func(ctx context.Context) (map[string]any, error) { return l.Create(ctx, names) })
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
		c.fl.payload = r.keepWithin(ctx, bkey, v, s, c.at, co, locks[bkey], b)
	}
}

// budgetAfterRead is the share of the backend's operation timeout T that a
// call of the dogpile lock may spend on backend calls after its first read
// (see budget), in halves: 1.5T. With that read, which lasts less than T
// unless it times out (and then spends the budget), a call spends at most
// 2.5T on the backend, and keeps half a timeout of the 3T bound for its own
// work.
const budgetAfterRead = 3 // halves of T

// timeoutReporter is implemented by a backend that bounds each of its calls
// by an operation timeout, and reports it (the Redis backend does): a call
// of the dogpile lock then caps the time it spends on the backend (see
// budget).
type timeoutReporter interface {
	Timeout() time.Duration
}

// budget is what one call of the dogpile lock (GetOrCreate,
// GetOrCreateMulti, Load) may still ask of the backend, so that an outage
// (the backend down, paused, out of memory or slow) costs it a bounded
// latency, not one backend timeout for each of its reads, locks, stamps,
// stores and unlocks in turn:
//
//   - Once one of the call's backend calls has failed (an error or a
//     timeout), the call asks the backend nothing more: what it would read
//     is a miss, it neither locks nor waits for another process's lock, it
//     runs the creator, serves the value and stores nothing. A lock it
//     already holds is released in the background.
//   - Over a backend that reports its operation timeout T
//     (timeoutReporter), the backend calls after the first read may take
//     1.5T in all (budgetAfterRead): each runs on a context bounded by
//     what is left, and none starts once it is spent. With the first read,
//     which the hit path makes and does not time, a call spends at most
//     2.5T on the backend, however slowly the backend answers.
//
// Waiting for another process's lock (Mutex.Wait) is waiting for its
// creator, not backend time: it is not counted, but its failure spends the
// budget like any other. A call's budget is used by the caller's goroutine
// and by the goroutine of the regeneration the caller leads, which the
// caller waits for; its fields are atomic.
type budget struct {
	timeout time.Duration // the backend's operation timeout; 0: unknown
	limit   time.Duration // the backend time allowed after the first read; 0: no limit
	used    atomic.Int64  // backend time spent after the first read, in nanoseconds
	failed  atomic.Bool   // a backend call failed
}

// newBudget returns the budget of a call of the dogpile lock; failed tells
// that its first read failed.
func (r *Region) newBudget(failed bool) *budget {
	b := &budget{}
	if t := r.timeouts; t != nil {
		if d := t.Timeout(); d > 0 {
			b.timeout, b.limit = d, budgetAfterRead*d/2
		}
	}
	b.failed.Store(failed)
	return b
}

// spent reports whether the call may ask the backend nothing more.
func (b *budget) spent() bool {
	return b.failed.Load() || (b.limit > 0 && time.Duration(b.used.Load()) >= b.limit)
}

// fail records a failed backend call.
func (b *budget) fail() { b.failed.Store(true) }

// errBudgetSpent is the failure of a backend call that was not made.
var errBudgetSpent = errors.New("region: the call's backend budget is spent")

// do makes one backend call, f, within the budget: not at all once the
// budget is spent (do returns errBudgetSpent), else on ctx bounded by what
// is left of the time allowed. Its time is counted. Its error (its own, or
// the bound's) spends the budget and is returned; so does a call that
// lasted the backend's whole timeout, which timed out even if f could not
// say so (keep does not).
func (b *budget) do(ctx context.Context, f func(ctx context.Context) error) error {
	if b.spent() {
		return errBudgetSpent
	}
	if b.limit == 0 {
		err := f(ctx)
		if err != nil {
			b.fail()
		}
		return err
	}
	if left := b.limit - time.Duration(b.used.Load()); left < b.timeout {
		// The backend's own timeout would outlast the budget.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, left)
		defer cancel()
	}
	start := time.Now()
	err := f(ctx)
	took := time.Since(start)
	b.used.Add(int64(took))
	if err != nil || took >= b.timeout {
		b.fail()
	}
	return err
}

// readWithin reads keys within the budget b. A read the budget does not
// allow is made as read makes one that failed: every entry missing, no tag
// stamp (failedRead).
func (r *Region) readWithin(ctx context.Context, keys []string, co *callOptions, b *budget) snapshot {
	var s snapshot
	err := b.do(ctx, func(ctx context.Context) error {
		var err error
		s, err = r.read(ctx, keys, co)
		return err
	})
	switch {
	case errors.Is(err, errBudgetSpent):
		return r.failedRead(keys, co)
	case err != nil:
		r.failed(ctx, OpRead, "", err)
	}
	return s
}

// failedRead returns the snapshot of a read of keys that was not made, as
// read returns it when the backend fails.
func (r *Region) failedRead(keys []string, co *callOptions) snapshot {
	tags, ti, sel := r.readTags(keys, co)
	s := snapshot{now: r.nanos(), tags: tags, sel: sel, shared: len(co.tagList()), seq: r.creations.Load()}
	if len(tags) > 0 {
		s.tagKeys = ti.keys[:len(tags)]
	}
	r.failRead(&s, len(keys))
	return s
}

// errStamps is the failure of prepareStamps, which reports it by bypassing
// the snapshot.
var errStamps = errors.New("region: tag stamps could not be made")

// stampsWithin gives the tags of s their counters (prepareStamps) within the
// budget b. Once b is spent, s is bypassed: the value is served and not
// stored.
func (r *Region) stampsWithin(ctx context.Context, s *snapshot, b *budget) {
	err := b.do(ctx, func(ctx context.Context) error {
		bypassed := s.bypass
		r.prepareStamps(ctx, s)
		if s.bypass && !bypassed {
			return errStamps
		}
		return nil
	})
	if errors.Is(err, errBudgetSpent) {
		s.bypass = true
	}
}

// keepWithin is keep within the budget b: once b is spent, the value is
// served and not stored (s is bypassed).
func (r *Region) keepWithin(ctx context.Context, bkey string, v any, s *snapshot, i int, co *callOptions, lock Mutex, b *budget) []byte {
	if b.spent() {
		s.bypass = true
		return r.keep(ctx, bkey, v, s, i, co, lock)
	}
	var payload []byte
	_ = b.do(ctx, func(ctx context.Context) error {
		payload = r.keep(ctx, bkey, v, s, i, co, lock)
		return nil
	})
	return payload
}

// unlock releases m, a lock the call holds. Within the budget b it is
// released at once; once b is spent (the backend is failing), it is
// released by a goroutine of the region's, so that the callers waiting for
// the flight are not held by it (Close stops it; a lock not released
// expires with its lease).
func (r *Region) unlock(ctx context.Context, m Mutex, b *budget) {
	if err := b.do(ctx, m.Unlock); !errors.Is(err, errBudgetSpent) {
		return
	}
	if !r.bg.start(func(ctx context.Context) { _ = m.Unlock(ctx) }) {
		_ = m.Unlock(ctx) // closed: no goroutine of the region's starts again
	}
}
