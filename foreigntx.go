package dogpile

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Writes in transactions the plugin cannot follow. A *sql.Tx that did not
// begin through the plugin's pool (GORM's Transaction inside db.Connection,
// which begins on the pinned *sql.Conn; a transaction handed to GORM from
// outside) commits where the plugin cannot see it. A write in one is
// pre-invalidated when it is made, and its second phase waits for the
// invalidation lease to pass instead of following the statement: entries
// filled meanwhile, in any process, die when the lease ends. This process,
// which saw the write, neither serves nor fills the tables it wrote until
// then, so a read here after the commit never sees older data; another
// process may, for at most the lease, and only if the transaction commits
// within it (README, Transactions).

// foreignWrites are the invalidations of such writes, until their lease
// ends.
type foreignWrites struct {
	// latest is when the last lease ends (Unix nanoseconds); 0 when there
	// is none. It lets the read path skip the lock.
	latest atomic.Int64

	mu      sync.Mutex
	pending []*foreignWrite // guarded by mu
}

// foreignWrite is one invalidation whose second phase is due at end.
type foreignWrite struct {
	inv invalidation
	end int64
	// posting is set, under foreignWrites.mu, once a reader took the write
	// to send its second phase. The write still bypasses reads of its
	// tables until that call has returned (posted): entries another
	// process filled during the lease live until the second phase lands.
	posting bool
}

// add records inv, pre-invalidated now, for a lease of d.
func (f *foreignWrites) add(inv invalidation, d time.Duration) {
	end := time.Now().UnixNano() + int64(d)
	f.mu.Lock()
	f.pending = append(f.pending, &foreignWrite{inv: inv, end: end})
	if end > f.latest.Load() {
		f.latest.Store(end)
	}
	f.mu.Unlock()
}

// check reports whether a query of tables must bypass the cache, and
// returns the writes whose lease has ended and whose second phase no other
// reader is sending: the caller sends it, then calls posted.
func (f *foreignWrites) check(tables []string) (bypass bool, due []*foreignWrite) {
	if f.latest.Load() == 0 {
		return false, nil
	}
	now := time.Now().UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.pending {
		if w.end < now && !w.posting {
			w.posting = true
			due = append(due, w)
		}
		if w.inv.all || slices.Contains(tables, anyTable) || slices.ContainsFunc(w.inv.tags, func(t string) bool { return slices.Contains(tables, t) }) {
			bypass = true
		}
	}
	return bypass, due
}

// posted drops the writes ws, whose second phase has been sent. If it
// failed, the regions hold their tags unconfirmed (bypassed, and retried).
func (f *foreignWrites) posted(ws []*foreignWrite) {
	f.mu.Lock()
	defer f.mu.Unlock()
	kept := f.pending[:0]
	latest := int64(0)
	for _, w := range f.pending {
		if slices.Contains(ws, w) {
			continue
		}
		kept = append(kept, w)
		latest = max(latest, w.end)
	}
	clear(f.pending[len(kept):])
	f.pending = kept
	f.latest.Store(latest) // 0 once none is left: the read path skips the lock
}

// foreignBypass reports whether a query of tables must bypass the cache
// because a transaction the plugin cannot follow wrote one of them, and
// completes the invalidations whose lease has ended.
func (p *Plugin) foreignBypass(ctx context.Context, tables []string) bool {
	bypass, due := p.foreign.check(tables)
	if len(due) > 0 {
		invs := make([]invalidation, len(due))
		for i, w := range due {
			invs[i] = w.inv
		}
		// Dropped however apply ends: a panic (an observer's, say) must
		// not leave the writes bypassing their tables for ever.
		defer p.foreign.posted(due)
		_ = p.apply(ctx, invs, phasePost) // retried by the regions
	}
	return bypass
}

// writeForeign is the first phase of a write in a transaction the plugin
// cannot follow; foreignBypass does the second once the lease has passed.
func (p *Plugin) writeForeign(ctx context.Context, inv invalidation) error {
	p.foreign.add(inv, p.lease)
	return p.apply(ctx, []invalidation{inv}, phasePre)
}
