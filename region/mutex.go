package region

import (
	"context"
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
// wait budget is spent, runs the creator unlocked.
func (r *Region) lockAll(ctx context.Context, ck callKeys, todo []claim, co *callOptions) (kept []claim, locks map[string]Mutex) {
	kept = todo[:0:0]
	for _, c := range todo {
		k := ck.bkeys[c.i]
		m := r.backend.Mutex(k)
		if m == nil {
			kept = append(kept, c)
			continue
		}
		ok, found := r.acquire(ctx, k, m, co, c.fl)
		if found {
			continue
		}
		if ok {
			if locks == nil {
				locks = make(map[string]Mutex)
			}
			locks[k] = m
			kept = append(kept, c)
			continue
		}
		if !r.noWaitFallback {
			kept = append(kept, c) // budget spent: make it ourselves, unlocked
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
