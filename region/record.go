package region

import (
	"context"
	"fmt"
)

// The region-wide invalidation record. It is two generation counters, hard
// and soft, kept like tag counters: every value is stamped, in its
// envelope, with both as read before its creator ran. A value whose hard
// generation is not the record's is a miss; one whose soft generation is
// not the record's is stale (served while one caller regenerates, dogpile's
// soft invalidation). Invalidate increments one of them.
//
// No clock takes part, so neither a writer's clock nor a reader's can make
// an old value current again, and losing the record cannot either: a
// generation that is missing or unreadable (evicted, deleted, overwritten)
// makes every value of the region a miss, and the next caller that makes a
// value first sets it afresh (a missing counter starts from a random value,
// so it does not repeat one it held), which also repairs it. Clocks serve
// only expiry, where a skewed clock can shorten or lengthen how long a value
// counts as fresh, never make a value older than a commit current.
//
// The hard generation is also a tag, EveryValue, with a pending marker: a
// commit that must invalidate the whole region (a statement whose tables
// are unknown) marks and bumps it in the same call as its other tags, so
// values filled during its commit window live no longer than the lease.
//
// A shared backend holds the record under three keys, read with the
// entries (recordKeys); a ProcessLocal backend's record lives in the
// process.

// EveryValue is the tag every value of a region carries without being
// given it: invalidating it (InvalidateTags, or PreInvalidateTags and
// PostInvalidateTags around a commit) is a hard Invalidate, in the same
// backend call as the other tags passed with it. Tags that begin with a NUL
// byte are reserved for the region.
const EveryValue = "\x00every"

// softTag names the soft generation where tags are listed (the
// unconfirmed set and its retrier); it has no pending marker.
const softTag = "\x00soft"

// recordKeys is how many keys of the record a read of a shared backend
// fetches after the entries: hardKey, recordPending, softKey.
const recordKeys = 3

// initRecord sets the record's keys and references; New calls it once the
// backend's kind is known. The three keys share a Redis Cluster hash tag,
// so the record lives in one slot, and never collide with a tag's keys
// (t: and p:) or an entry's (k:).
func (r *Region) initRecord() {
	hash := "{" + r.name + ":*}"
	r.hardKey, r.recordPending, r.softKey = r.prefix+"H:"+hash, r.prefix+"P:"+hash, r.prefix+"S:"+hash
	r.everyRef = &tagRef{key: r.hardKey, pendingKey: r.recordPending}
	r.softRef = &tagRef{key: r.softKey, pendingKey: r.prefix + "Q:" + hash}
	if !r.local {
		return
	}
	r.everyRef.mark = r.markFor(EveryValue)
	r.softRef.mark = new(localMark) // never counts a writer: soft has no phases
	r.everyRef.counter, r.softRef.counter = &r.hard, &r.soft
	if r.refs != nil {
		// Regions of one name over one backend share their generations.
		r.everyRef.counter, r.softRef.counter = r.refs.Counter(r.hardKey), r.refs.Counter(r.softKey)
	}
}

// record is the region-wide record as one read saw it.
type record struct {
	hard, soft int64
	// hardOK and softOK report that each generation could be read; ok that
	// both could. When ok is false every value is a miss, and the record is
	// set afresh (initStamps) before a value is made.
	hardOK, softOK, ok bool
}

// readRecord fills in s.inv and, from the record's pending marker, whether
// a region-wide invalidation is in progress: from the first recordKeys of
// vals (what the backend returned after the entries) for a shared backend,
// else from the process, together with the pending marks of the call's
// tags. It returns the rest of vals.
func (r *Region) readRecord(s *snapshot, vals [][]byte, ti *tagInfo) [][]byte {
	if !r.local {
		s.inv.hard, s.inv.hardOK = parseCounter(vals[0])
		s.inv.soft, s.inv.softOK = parseCounter(vals[2])
		s.inv.ok = s.inv.hardOK && s.inv.softOK
		if markerPending(vals[1]) {
			s.pending = true
		}
		return vals[recordKeys:]
	}
	s.inv = record{hard: r.everyRef.counter.Load(), soft: r.softRef.counter.Load(), hardOK: true, softOK: true, ok: true}
	if r.everyRef.mark.pending(s.now) {
		s.pending = true
	}
	for _, m := range ti.marks {
		if m.pending(s.now) {
			s.pending = true
		}
	}
	return vals
}

// setRecord gives a shared backend's record the generations it could not
// read in s (missing or unreadable), so that the value about to be made is
// stamped with ones a later invalidation changes. Incr sets a missing or
// unreadable counter to a fresh start: this repairs the record.
func (r *Region) setRecord(ctx context.Context, s *snapshot) error {
	if s.inv.ok {
		return nil
	}
	if !s.inv.hardOK {
		n, err := r.backend.Incr(ctx, r.hardKey)
		if err != nil {
			return fmt.Errorf("set the region's hard generation: %w", err)
		}
		s.inv.hard, s.inv.hardOK = n, true
	}
	if !s.inv.softOK {
		n, err := r.backend.Incr(ctx, r.softKey)
		if err != nil {
			return fmt.Errorf("set the region's soft generation: %w", err)
		}
		s.inv.soft, s.inv.softOK = n, true
	}
	s.inv.ok = true
	return nil
}

// parseCounter reads a counter as a backend returns it, its decimal text;
// ok is false when b is missing or is not a decimal int64.
func parseCounter(b []byte) (n int64, ok bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	if u > 1<<63-1 {
		return 0, false
	}
	if neg {
		return -int64(u), true
	}
	return int64(u), true
}

// markerPending reads a pending marker: whether it counts a writer between
// its two invalidation phases. A marker that cannot be read counts one
// (fills then live no longer than the lease) until the next writer's phase
// sets it afresh.
func markerPending(b []byte) bool {
	if b == nil {
		return false
	}
	n, ok := parseCounter(b)
	return !ok || n > 0
}
