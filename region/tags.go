package region

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The tag-invalidation protocol. A value stored WithTags records, in its
// envelope, the counter of each tag as read before its creator ran (its
// stamps). Every read fetches the entry and the counters in one backend call;
// a stamp that differs from its counter, or a counter that is missing, makes
// the entry a miss. Invalidating a tag increments its counter, so every value
// that depended on it is dead at once in every process that shares the
// backend, without finding or deleting the entries. Because stamps are taken
// before the creator reads its source, a value made from data older than an
// invalidation can never carry the counter that invalidation wrote.
//
// A writer that cannot invalidate atomically with its commit does it twice:
// PreInvalidateTags just before the commit counts itself in each tag's
// pending marker (whose time to live is the invalidation lease) and bumps the
// tags; PostInvalidateTags just after bumps them again and counts itself out.
// Values filled while a tag's marker counts a writer live no longer than the
// lease, so a writer that dies between its commit and its second bump leaves
// stale values behind for at most the lease; once every writer has counted
// itself out, values live their normal life again. On a backend that
// implements TagBumper (Redis) each phase, for all its tags, is one call:
// one round trip.
//
// An invalidation that cannot be written (the backend is down) is kept and
// retried in the background, until it lands or the region is closed; until
// it lands, values depending on its tags are neither served nor stored.

// A tag's counter and pending marker share a Redis Cluster hash tag, so they
// live in one slot; different tags spread over the cluster.
func (r *Region) tagKey(tag string) string     { return r.prefix + "t:{" + r.name + ":" + tag + "}" }
func (r *Region) pendingKey(tag string) string { return r.prefix + "p:{" + r.name + ":" + tag + "}" }

// tagSet is the tags of a call, with what they take in each region,
// computed once. A WithTags option shares it between every call it is passed
// to, concurrent ones included.
type tagSet struct {
	tags []string // read-only

	// Safe for concurrent use by themselves.
	info sync.Map                   // *Region → *tagInfo
	last atomic.Pointer[regionInfo] // the region last asked for, before the map
}

// regionInfo is a region's tagInfo for a tagSet. Immutable: a new one
// replaces it.
type regionInfo struct {
	r  *Region
	ti *tagInfo
}

// tagInfo is how a region reads a list of tags. Read-only once built: a
// tagSet shares it between calls.
type tagInfo struct {
	// keys are the counter keys, then (for a shared backend) the pending
	// marker keys: what the region reads from the backend.
	keys []string
	// counters are the counters themselves, for a backend with CounterRefs.
	counters []*atomic.Int64
	// marks are the in-process pending marks of a ProcessLocal backend.
	marks []*localMark
}

func (ts *tagSet) infoFor(r *Region) *tagInfo {
	if l := ts.last.Load(); l != nil && l.r == r {
		return l.ti
	}
	var ti *tagInfo
	if v, ok := ts.info.Load(r); ok {
		ti = v.(*tagInfo)
	} else {
		ti = r.tagInfo(ts.tags)
		ts.info.Store(r, ti)
	}
	ts.last.Store(&regionInfo{r, ti})
	return ti
}

// tagInfo builds what reading tags takes.
func (r *Region) tagInfo(tags []string) *tagInfo {
	ti := &tagInfo{keys: make([]string, 2*len(tags))[:len(tags)]}
	if r.local {
		ti.marks = make([]*localMark, len(tags))
	}
	if r.refs != nil {
		ti.counters = make([]*atomic.Int64, len(tags))
	}
	for i, t := range tags {
		ref := r.tagRef(t)
		ti.keys[i] = ref.key
		if r.local {
			ti.marks[i] = ref.mark
		} else {
			ti.keys = append(ti.keys, ref.pendingKey)
		}
		if r.refs != nil {
			ti.counters[i] = ref.counter
		}
	}
	return ti
}

// maxTagRefs bounds the tags whose tagRef a region keeps.
const maxTagRefs = 1 << 16

// tagRef is what reading one tag takes in a region. Immutable.
type tagRef struct {
	key        string        // the counter's key
	pendingKey string        // the pending marker's key (shared backends)
	mark       *localMark    // the pending mark (ProcessLocal backends)
	counter    *atomic.Int64 // the counter itself (CounterRefs backends)
}

// tagRef returns the tagRef of tag, from the region's bounded cache: the
// same row tags come back call after call, each costing string building and
// lookups. Counters and marks keep their address for the region's life, so
// a ref is never out of date.
func (r *Region) tagRef(tag string) *tagRef {
	switch tag {
	case EveryValue:
		return r.everyRef
	case softTag:
		return r.softRef
	}
	if ref, ok := r.tagRefs.GetIfPresent(tag); ok {
		return ref
	}
	ref := &tagRef{key: r.tagKey(tag)}
	if r.local {
		ref.mark = r.markFor(tag)
	} else {
		ref.pendingKey = r.pendingKey(tag)
	}
	if r.refs != nil {
		ref.counter = r.refs.Counter(ref.key)
	}
	r.tagRefs.Set(tag, ref)
	return ref
}

// localMark is a pending marker kept in the process, for a ProcessLocal
// backend: the writers counted in it and when the mark lapses. Both fields
// are atomic (adjustPending writes them, every read of a tag reads them).
type localMark struct {
	writers atomic.Int64
	until   atomic.Int64 // Unix nanoseconds
}

func (r *Region) markFor(tag string) *localMark {
	if m, ok := r.marks.Load(tag); ok {
		return m.(*localMark)
	}
	m, _ := r.marks.LoadOrStore(tag, new(localMark))
	return m.(*localMark)
}

// pending reports whether a writer is counted in the mark at now.
func (m *localMark) pending(now int64) bool {
	return m.writers.Load() > 0 && now < m.until.Load()
}

// initStamps gives every tag in s that has no counter yet (or one that could
// not be read) a fresh one, and the region's record the generations it
// lacks (setRecord), so the value about to be made carries stamps that a
// later invalidation changes. The backend's Incr repairs a counter that
// holds what it cannot increment.
func (r *Region) initStamps(ctx context.Context, s *snapshot) error {
	if err := r.setRecord(ctx, s); err != nil {
		return err
	}
	for i, st := range s.stamps {
		if st != nil {
			continue
		}
		n, err := r.backend.Incr(ctx, s.tagKeys[i])
		if err != nil {
			return fmt.Errorf("init tag %q: %w", s.tags[i], err)
		}
		s.stamps[i] = []byte(strconv.FormatInt(n, 10))
	}
	return nil
}

// prepareStamps gives every tag of s that has no counter yet a fresh one
// (initStamps). When s could not be read, or a counter could not be made,
// the value about to be made is served but not stored: s is bypassed.
func (r *Region) prepareStamps(ctx context.Context, s *snapshot) {
	err := errStampsUnread
	if !s.failed {
		if err = r.initStamps(ctx, s); err == nil {
			return
		}
	}
	r.failed(ctx, OpTags, "", err)
	s.bypass = true // unsure what the tags hold: serve the value, store nothing
}

// errStampsUnread is the backend error observers are told of when a value
// is made after a read that failed: its tags could not be read.
var errStampsUnread = errors.New("region: the tags could not be read")

// InvalidateTags makes every value stored with any of tags a miss, in every
// process that shares the backend. If the backend cannot be written, the
// invalidation is retried in the background until it lands (or the region
// is closed), values depending on those tags are bypassed in this process
// meanwhile, and the error is returned.
func (r *Region) InvalidateTags(ctx context.Context, tags ...string) error {
	return r.bump(ctx, tags, 0)
}

// PreInvalidateTags is the first half of a two-phase invalidation around a
// commit: it marks tags as being invalidated (for at most the invalidation
// lease) and invalidates them. Call PostInvalidateTags after the commit.
func (r *Region) PreInvalidateTags(ctx context.Context, tags ...string) error {
	return r.bump(ctx, tags, +1)
}

// PostInvalidateTags is the second half of a two-phase invalidation: it
// invalidates tags again and withdraws the mark PreInvalidateTags made.
func (r *Region) PostInvalidateTags(ctx context.Context, tags ...string) error {
	return r.bump(ctx, tags, -1)
}

// bump invalidates tags; mark +1 counts a writer into their pending markers
// first, -1 counts it out afterwards.
func (r *Region) bump(ctx context.Context, tags []string, mark int) error {
	if r.bumper != nil {
		return r.bumpBatch(ctx, r.bumper, tags, mark, false)
	}
	var errs []error
	if mark > 0 {
		for _, t := range tags {
			if err := r.adjustPending(ctx, t, +1); err != nil {
				errs = append(errs, err)
			}
		}
	}
	defer func() {
		if mark < 0 {
			for _, t := range tags {
				// A marker that cannot be withdrawn expires with the lease.
				_ = r.adjustPending(ctx, t, -1)
			}
		}
	}()
	at := r.unconfirmed.mark()
	for _, t := range tags {
		if ref := r.tagRef(t); r.local && ref.counter != nil {
			ref.counter.Add(1) // the process's own generation, or a CounterRefs one
			continue
		}
		if _, err := r.backend.Incr(ctx, r.tagRef(t).key); err != nil {
			r.unconfirmed.add(t)
			errs = append(errs, fmt.Errorf("tag %q: %w", t, err))
			continue
		}
		r.unconfirmed.remove(t, at)
	}
	if len(errs) > 0 {
		err := errors.Join(errs...)
		r.invalidationFailed(ctx, tags, err)
		return fmt.Errorf("region %s: invalidate tags: %w", r.name, err)
	}
	r.invalidated(ctx, tags, false)
	return nil
}

// bumpBatch is bump in one call of a TagBumper backend: a commit phase is
// one round trip whatever the number of tags. If it fails, every tag is
// unconfirmed (bypassed here, and retried), as a failed Incr makes one.
func (r *Region) bumpBatch(ctx context.Context, tb TagBumper, tags []string, mark int, retried bool) error {
	counters := make([]string, len(tags))
	var markers []string
	if mark != 0 {
		markers = make([]string, len(tags))
	}
	for i, t := range tags {
		ref := r.tagRef(t)
		counters[i] = ref.key
		if markers != nil {
			markers[i] = ref.pendingKey
		}
	}
	at := r.unconfirmed.mark()
	if err := tb.BumpTags(ctx, counters, markers, int64(mark), r.lease); err != nil {
		for _, t := range tags {
			r.unconfirmed.addFailure(t, !retried)
		}
		if retried {
			// Still the one failed invalidation: a backend error of its
			// retry, not another failure.
			r.failed(ctx, OpInvalidate, "", err)
		} else {
			r.invalidationFailed(ctx, tags, err)
		}
		return fmt.Errorf("region %s: invalidate tags: %w", r.name, err)
	}
	for _, t := range tags {
		r.unconfirmed.remove(t, at)
	}
	r.invalidated(ctx, tags, retried)
	return nil
}

// adjustPending adds delta to the number of writers counted in tag's pending
// marker and renews its lease, by compare-and-set on the marker.
func (r *Region) adjustPending(ctx context.Context, tag string, delta int64) error {
	ref := r.tagRef(tag)
	if r.local {
		// A backend private to the process: the marker lives here.
		m := ref.mark
		if m.writers.Add(delta) < 0 {
			m.writers.Store(0)
		}
		m.until.Store(r.nanos() + int64(r.lease))
		return nil
	}
	key := ref.pendingKey
	_, ok, err := r.compareAndSet(ctx, key, 16, func(old []byte) Item {
		n := max(pendingCount(old)+delta, 0)
		return Item{Key: key, Value: strconv.AppendInt(nil, n, 10), TTL: r.lease}
	})
	if err != nil {
		return fmt.Errorf("pending marker of %q: %w", tag, err)
	}
	if !ok && delta > 0 {
		// Heavy contention: over-count rather than not mark at all.
		return r.backend.SetMulti(ctx, []Item{{Key: key, Value: []byte("1"), TTL: r.lease}})
	}
	return nil
}

// pendingCount reads a pending marker: the number of writers between their
// two invalidation phases. A writer's phase sets an unreadable one afresh.
func pendingCount(b []byte) int64 {
	n, ok := parseCounter(b)
	if !ok {
		return 0
	}
	return n
}

// unconfirmedTags are tags whose invalidation did not reach the backend.
// While one is unconfirmed, the region bypasses values depending on it in
// this process, and a goroutine of the region's (retry) bumps it until it
// lands or the region is closed.
type unconfirmedTags struct {
	r *Region // set by New; read-only afterwards

	// has mirrors len(tags) > 0 so that the common case, nothing
	// unconfirmed, costs one atomic load on the read path.
	has atomic.Bool

	// seq numbers the adds; written under mu, read by mark without it.
	seq atomic.Uint64
	// since is Region.creations at the last failure of an invalidation
	// that follows a write (not the retrier's), written under mu after
	// has: a run numbered above it (flight.run) began after every such
	// failure, so after the writes they follow, and its reads were
	// bypassed.
	since atomic.Int64

	mu      sync.Mutex        // guards tags and retrier
	tags    map[string]uint64 // the unconfirmed tags, with the seq of their last add
	retrier bool              // a retry goroutine is running
}

// add marks tag unconfirmed: an invalidation of it, following a write,
// failed.
func (u *unconfirmedTags) add(tag string) { u.addFailure(tag, true) }

// addFailure marks tag unconfirmed after a failed invalidation; write is
// false for the retrier's own attempts, which follow no new write and do not
// move since.
func (u *unconfirmedTags) addFailure(tag string, write bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.tags == nil {
		u.tags = make(map[string]uint64)
	}
	u.tags[tag] = u.seq.Add(1)
	// has first: a run numbered above since took its number after has was
	// set, so its reads see the tag (any waits for mu) and are bypassed.
	u.has.Store(true)
	if write {
		u.since.Store(u.r.creations.Load())
	}
	if !u.retrier {
		u.retrier = u.r.bg.start(u.retry)
	}
}

// mark returns what remove needs to know that an invalidation sent after it
// covers a tag: an add made later (a failure of another invalidation of the
// tag, racing with this one) is not undone by this one's success.
func (u *unconfirmedTags) mark() uint64 { return u.seq.Load() }

// remove confirms tag, by an invalidation sent after mark returned at: the
// tag stays unconfirmed if it was added again since.
func (u *unconfirmedTags) remove(tag string, at uint64) {
	if !u.has.Load() {
		return
	}
	u.mu.Lock()
	if s, ok := u.tags[tag]; ok && s <= at {
		delete(u.tags, tag)
	}
	u.has.Store(len(u.tags) > 0)
	u.mu.Unlock()
}

// any reports whether one of tags, or the region-wide record, has an
// unconfirmed invalidation.
func (u *unconfirmedTags) any(tags []string) bool {
	if !u.has.Load() {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.tags[EveryValue]; ok {
		return true
	}
	if _, ok := u.tags[softTag]; ok {
		return true
	}
	for _, t := range tags {
		if _, ok := u.tags[t]; ok {
			return true
		}
	}
	return false
}

// retry bumps every unconfirmed tag with backoff until all have landed, or
// until ctx is done (Close): it sleeps on ctx, and its backend calls run on
// it.
func (u *unconfirmedTags) retry(ctx context.Context) {
	delay := 50 * time.Millisecond
	sleep := time.NewTimer(delay)
	defer sleep.Stop()
	for {
		select {
		case <-ctx.Done():
			u.mu.Lock()
			u.retrier = false
			u.mu.Unlock()
			return
		case <-sleep.C:
		}
		at := u.mark() // what the bump below, sent after it, confirms
		tags := u.listOrStop()
		if len(tags) == 0 {
			return
		}
		bctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		u.r.stats.invalidationRetries.Add(1)
		if tb := u.r.bumper; tb != nil {
			// One round trip for all of them, repairing unreadable counters.
			_ = u.r.bumpBatch(bctx, tb, tags, 0, true)
		} else {
			var landed []string
			for _, t := range tags {
				if _, err := u.r.backend.Incr(bctx, u.r.tagRef(t).key); err == nil {
					u.remove(t, at)
					landed = append(landed, t)
				} else {
					u.r.failed(bctx, OpInvalidate, "", fmt.Errorf("tag %q: %w", t, err))
				}
			}
			if len(landed) > 0 {
				u.r.invalidated(bctx, landed, true)
			}
		}
		cancel()
		if delay < 2*time.Second {
			delay *= 2
		}
		sleep.Reset(delay)
	}
}

// listOrStop returns the unconfirmed tags. When there are none it returns
// nil and records that the retrier stops, under the same lock, so that the
// next add starts another.
func (u *unconfirmedTags) listOrStop() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	tags := make([]string, 0, len(u.tags))
	for t := range u.tags {
		tags = append(tags, t)
	}
	if len(tags) == 0 {
		u.retrier = false
		return nil
	}
	return tags
}
