package region

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The backend's Mutex: the part of the dogpile lock that reaches across the
// processes sharing a backend (see lock.go). regenerate takes the Mutex of
// each key it is about to make; a caller that finds it held waits for the
// holder and re-reads rather than making the value a second time.

// lockAll takes the backend Mutex of the key of each claim in todo. A key
// whose Mutex is held elsewhere is dropped from todo if its caller holds a
// stale value (it is served); for a missing value the caller waits for the
// holder, re-reads, and either finds the value, takes the lock, or, once the
// wait budget is spent, runs the creator unlocked (with WithoutWaitFallback,
// its flight fails with ErrWaitTimeout instead). Once the call's backend
// budget b is spent (the backend failed: see budget), no lock is taken and
// no holder waited for: the creator runs unlocked.
func (r *Region) lockAll(ctx context.Context, ck callKeys, todo []claim, co *callOptions, b *budget) (kept []claim, locks map[string]Mutex) {
	kept = todo[:0:0]
	for _, c := range todo {
		k := ck.bkeys[c.i]
		m := r.backend.Mutex(k)
		if m == nil || b.spent() {
			kept = append(kept, c)
			continue
		}
		ok, found := r.acquire(ctx, k, m, co, c.fl, b)
		switch {
		case found:
		case ok:
			if locks == nil {
				locks = make(map[string]Mutex)
			}
			locks[k] = m
			kept = append(kept, c)
		case b.spent() || !r.noWaitFallback:
			kept = append(kept, c) // make it ourselves, unlocked
		default:
			c.fl.err = fmt.Errorf("region %s: key %q: %w", r.name, ck.keys[c.i], ErrWaitTimeout)
		}
	}
	return kept, locks
}

// acquire tries to take m for k; while another process holds it, it waits
// for that holder and re-reads k. found reports that a fresh value (or, for a
// stale caller, the holder's regeneration) makes creation unnecessary.
// Neither ok nor found means that the wait budget ran out or that a backend
// call failed, which spends the call's budget b: a lock service that cannot
// answer holds no caller any longer, the value is made without it rather
// than not at all.
func (r *Region) acquire(ctx context.Context, k string, m Mutex, co *callOptions, fl *flight, b *budget) (ok, found bool) {
	deadline := time.Now().Add(r.waitTimeout)
	var env envelope
	for {
		err := b.do(ctx, func(ctx context.Context) error {
			var err error
			ok, err = m.TryLock(ctx)
			return err
		})
		if err != nil {
			if !errors.Is(err, errBudgetSpent) {
				r.failed(ctx, OpLock, r.callerKey(k), err)
			}
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
		run := r.creations.Add(1) // this read's number, for a value it finds (flight.run)
		s := r.readWithin(ctx, []string{k}, co, b)
		if s.failed {
			return false, false
		}
		if r.foundNew(s.raw[0], 0, fl, &s, co, &env) {
			fl.found(&env, run)
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
		start := time.Now()
		err = m.Wait(wctx)
		if werr := err; r.observed() {
			if werr != nil && wctx.Err() != nil && ctx.Err() == nil {
				werr = ErrWaitTimeout // the wait budget ran out, not the caller's context
			}
			r.waited(ctx, r.callerKey(k), start, werr)
		}
		if err != nil && wctx.Err() == nil {
			// Not the end of the wait budget: the backend cannot say
			// whether the holder is done, nor would it take its value.
			cancel()
			r.failed(ctx, OpLock, r.callerKey(k), err)
			b.fail()
			return false, false
		}
		cancel()
	}
}
