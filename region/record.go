package region

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
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
	// hardRaw and softRaw are what a shared backend held for a generation
	// that could not be read (nil: missing), for setRecord's guard.
	hardRaw, softRaw []byte
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
		if !s.inv.ok {
			s.inv.hardRaw, s.inv.softRaw = vals[0], vals[2]
		}
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
// stamped with ones a later invalidation changes. Each is set to a fresh
// random start only if it still holds what s read (SetIf), then both are
// read back: callers that find the record missing together agree on one
// start instead of each moving it past the values the others stamped. This
// also repairs an unreadable generation.
func (r *Region) setRecord(ctx context.Context, s *snapshot) error {
	if s.inv.ok {
		return nil
	}
	for _, g := range []struct {
		ok  bool
		key string
		old []byte
	}{{s.inv.hardOK, r.hardKey, s.inv.hardRaw}, {s.inv.softOK, r.softKey, s.inv.softRaw}} {
		if g.ok {
			continue
		}
		start := strconv.AppendInt(nil, rand.Int64N(1<<48), 10)
		if _, err := r.backend.SetIf(ctx, Item{Key: g.key, Value: start}, []Guard{{Key: g.key, Value: g.old}}); err != nil {
			return fmt.Errorf("set the region's generation %s: %w", g.key, err)
		}
	}
	vals, err := r.backend.GetMulti(ctx, []string{r.hardKey, r.softKey})
	if err != nil || len(vals) != 2 {
		return fmt.Errorf("read the region's generations: %w", errors.Join(err, errShortRead))
	}
	s.inv.hard, s.inv.hardOK = parseCounter(vals[0])
	s.inv.soft, s.inv.softOK = parseCounter(vals[1])
	if s.inv.ok = s.inv.hardOK && s.inv.softOK; !s.inv.ok {
		return fmt.Errorf("region %s: the region's generations are unreadable after being set", r.name)
	}
	return nil
}

// errShortRead is a backend read that returned fewer values than keys.
var errShortRead = errors.New("region: the backend returned too few values")

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
