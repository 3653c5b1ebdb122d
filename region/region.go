// Package region is a cache region in the manner of Python's dogpile.cache:
// a backend plus expiration, invalidation, a codec and the dogpile lock, so
// that when a value is missing or expired exactly one caller makes it again
// while the others wait for it or are served the stale one.
//
// A Region works on its own; the GORM plugin in the parent package builds on
// it. The lock algorithm is in lock.go (the flights its callers share in
// flight.go, the backend's Mutex in mutex.go), the envelope format in
// envelope.go, the tag-invalidation protocol in tags.go, the region-wide
// invalidation record (generation counters) in record.go, and the
// goroutines a region runs by itself, which Close stops, in background.go.
//
// Around it, the rest of dogpile.cache's CacheRegion: function caching
// (Func and FuncMulti, in func.go, their typed keys in funckey.go), the
// many-key Get, Set and Delete (multi.go), a value's metadata and
// KeyIsLocked (metadata.go), configuration from a map with a registry of
// backends by name (FromConfig, config.go), and backend middleware (Proxy
// and WrapBackend in proxy.go, the Metrics wrapper in metrics.go).
package region

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// Region is a named cache over a Backend. It is safe for concurrent use.
type Region struct {
	// Set by New and its options; read-only afterwards.
	backend     Backend
	name        string
	prefix      string // the escaped name + ":"; starts every key the region stores
	entryPrefix string // prefix + "k:"; starts every entry key
	// The region-wide invalidation record (record.go): the keys of its
	// hard and soft generation counters and of its pending marker, and what
	// reading its hard generation takes as a tag (EveryValue).
	hardKey, softKey, recordPending string
	everyRef, softRef               *tagRef
	// local is set when the backend serves this process only: the
	// record's generations then live in the process (soft and, without
	// CounterRefs, hard), not in the backend.
	local bool
	refs  CounterRefs // the backend's, when it has them (local only)
	// values is the backend's ValueAppender, for a local backend with
	// CounterRefs: a read of one key is then one lookup (readLocal).
	values ValueAppender
	// bumper and timeouts are the backend's TagBumper and timeoutReporter,
	// when it is shared and has them.
	bumper         TagBumper
	timeouts       timeoutReporter
	expiration     time.Duration
	staleTTL       time.Duration
	staleSet       bool
	mangle         func(string) string
	codec          Codec
	creatorTimeout time.Duration
	waitTimeout    time.Duration
	noWaitFallback bool
	lease          time.Duration
	now            func() time.Time // nil: the default clock
	// async is nil when stale values are regenerated synchronously; else
	// it is a semaphore, a slot per running async regeneration (the channel
	// is made by New; sending and receiving on it is safe).
	async chan struct{}

	// Atomics.
	hard, soft atomic.Int64 // a local backend's generations, when it has no CounterRefs (record.go)
	// creations numbers the creator runs: each takes the next number just
	// before it reads its source. A caller that could not read the backend
	// takes a joined flight's value only if that run read after it arrived.
	creations atomic.Int64
	stats     counters // every counter is atomic

	// Safe for concurrent use by themselves; the fields are set by New.
	marks   sync.Map                      // tag → *localMark: the pending markers of a local backend
	tagRefs *otter.Cache[string, *tagRef] // tag → what reading it takes (bounded)

	// Synchronised by themselves, as each type's doc says.
	clock   clock   // atomics
	flights flights // flights.mu guards the flight map
	// unconfirmed holds tags whose invalidation could not be written to the
	// backend (see tags.go); unconfirmed.mu guards them.
	unconfirmed unconfirmedTags
	// bg runs the region's own goroutines, until Close; bg.mu orders their
	// starts before Close's wait.
	bg background

	// ownsBackend is set by FromConfig, before the region is shared: Close
	// then closes the backend too, once (closed).
	ownsBackend bool
	closed      sync.Once
	closeErr    error // written in closed.Do

	// obs are the region's observers (observe.go), safe for concurrent
	// use by themselves; stopBreaker, set by New, stops the watch of the
	// backend's breaker (nil: none).
	obs         observers
	stopBreaker func()
}

// New returns a region that keeps its values in backend. While in use, the
// region runs goroutines of its own; Close stops them.
func New(backend Backend, opts ...Option) *Region {
	r := &Region{
		backend:     backend,
		name:        "default",
		codec:       MsgpackCodec{},
		waitTimeout: time.Minute,
		lease:       10 * time.Second,
	}
	for _, o := range opts {
		o(r)
	}
	// Escaping ':' keeps regions apart: a caller key of region "a" can never
	// spell an internal key of region "a:k".
	r.prefix = strings.NewReplacer("%", "%25", ":", "%3A").Replace(r.name) + ":"
	r.entryPrefix = r.prefix + "k:"
	// The optional interfaces are looked for through wrappers (see Proxy).
	if l, ok := optional[ProcessLocal](backend); ok && l.ProcessLocal() {
		r.local = true
		r.refs, _ = optional[CounterRefs](backend)
		if r.refs != nil {
			r.values, _ = optional[ValueAppender](backend)
		}
	} else {
		r.bumper, _ = optional[TagBumper](backend)
		r.timeouts, _ = optional[timeoutReporter](backend)
	}
	r.initRecord()
	r.flights.m = make(map[string]*flight)
	r.unconfirmed.r = r
	r.bg.init()
	r.clock.bg = &r.bg
	r.watchBreaker()
	r.tagRefs = otter.Must(&otter.Options[string, *tagRef]{
		MaximumSize: maxTagRefs,
		Executor:    func(fn func()) { fn() }, // drains on the reader's goroutine, not one of their own
	})
	return r
}

// Close stops the goroutines that the region runs by itself and waits for
// them to return: the coarse clock's refresher, and the retrier of tag
// invalidations that could not be written to the backend (see
// InvalidateTags). It may be called more than once, and concurrently. It
// does not close the backend, and returns nil, unless the region owns its
// backend (FromConfig: see below).
//
// A closed region still works: calls behave as before, reading the precise
// clock instead of the coarse one, but no goroutine of the region's starts
// again. An invalidation still unconfirmed when the region closes is no
// longer retried by it, but its tags stay bypassed in this process (their
// values are neither served nor stored), so nothing stale is served; an
// InvalidateTags of those tags that reaches the backend confirms them.
// Regenerations started by calls (WithAsyncRegeneration's among them) are
// not the region's: each ends with its creator.
//
// A region made by FromConfig owns its backend: its first Close closes the
// backend too (if it has a Close method) and returns the backend's error;
// Close called again returns the same error. Calls after that fail as the
// closed backend fails them.
func (r *Region) Close() error {
	r.bg.close()
	r.closed.Do(func() {
		if r.stopBreaker != nil {
			r.stopBreaker()
		}
		r.closeErr = r.closeBackend()
	})
	return r.closeErr
}

// nanos returns the time in Unix nanoseconds.
func (r *Region) nanos() int64 {
	if r.now != nil {
		return r.now().UnixNano()
	}
	return r.clock.nanos()
}

// Name returns the region's name.
func (r *Region) Name() string { return r.name }

// Codec returns the codec the region encodes values with.
func (r *Region) Codec() Codec { return r.codec }

// Backend returns the region's backend.
func (r *Region) Backend() Backend { return r.backend }

// InvalidationLease returns how long an entry filled while an invalidation
// of one of its tags is in progress may live (WithInvalidationLease).
func (r *Region) InvalidationLease() time.Duration { return r.lease }

// Expiration returns the region's default expiration; zero means never.
func (r *Region) Expiration() time.Duration { return r.expiration }

// entryKey is the backend key of a caller's key.
func (r *Region) entryKey(key string) string {
	return r.entryPrefix + r.mangled(key)
}

func (r *Region) mangled(key string) string {
	if r.mangle != nil {
		return r.mangle(key)
	}
	return key
}

// state is what a read found for one key.
type state uint8

const (
	miss  state = iota // nothing usable: wait for or run the creator
	fresh              // serve it
	stale              // serve it, and one caller regenerates
	// undecodable is a miss whose entry the region judged usable but the
	// caller could not decode: a re-read finding the same bytes has found
	// nothing new (flight.seen).
	undecodable
)

// snapshot is one round trip's view of some entries and what decides their
// validity: the region's invalidation record and the entries' tags. It
// belongs to the goroutine that read it; what a flight takes from it (raw
// entries, stampsOf) is not written afterwards.
type snapshot struct {
	raw     [][]byte // per entry key; nil when missing
	inv     record   // the region-wide generations (record.go)
	tags    []string // the call's tags, then the keys' own tags (WithKeyTags)
	tagKeys []string // the backend key of each tag's counter
	stamps  [][]byte // current value of each tag; nil when the tag has no counter yet
	sel     [][]int  // per entry key, the indexes of its tags; nil: the call's tags
	shared  int      // how many of tags are the call's
	pending bool     // an invalidation is in progress on one of the tags
	bypass  bool     // a tag's invalidation is unconfirmed: neither serve nor store
	since   int64    // with bypass: unconfirmedTags.since when it was read
	failed  bool     // the backend could not be read: nothing here can be compared
	seq     int64    // Region.creations when this was read
	now     int64
}

// stampsOf returns the current values of the tags of entry i.
func (s *snapshot) stampsOf(i int) [][]byte {
	if s.sel == nil {
		return s.stamps[:s.shared]
	}
	out := make([][]byte, len(s.sel[i]))
	for j, t := range s.sel[i] {
		out[j] = s.stamps[t]
	}
	return out
}

// tagsOf returns the names of the tags of entry i, in the order of
// stampsOf.
func (s *snapshot) tagsOf(i int) []string {
	if s.sel == nil {
		return s.tags[:s.shared]
	}
	out := make([]string, len(s.sel[i]))
	for j, t := range s.sel[i] {
		out[j] = s.tags[t]
	}
	return out
}

// tagKeysOf returns the counter keys of the tags of entry i.
func (s *snapshot) tagKeysOf(i int) []string {
	if s.sel == nil {
		return s.tagKeys[:s.shared]
	}
	out := make([]string, len(s.sel[i]))
	for j, t := range s.sel[i] {
		out[j] = s.tagKeys[t]
	}
	return out
}

// ValueAppender is implemented by ProcessLocal backends with CounterRefs
// that can copy one stored value into memory the caller provides: a Region
// over one reads a single key (a hit's read) with one lookup and no memory
// of the backend's, the value, the region's record and the tag versions in
// one allocation.
type ValueAppender interface {
	// AppendValue appends a copy of the value stored under key to buf, as
	// GetMulti would return it, and reports whether there was one (false:
	// missing or expired, buf returned as it was). It keeps neither key
	// nor buf.
	AppendValue(buf []byte, key string) ([]byte, bool)
}

// read fetches entry keys together with the invalidation record and the tag
// counters in one backend call. It may use the spare capacity of keys.
func (r *Region) read(ctx context.Context, keys []string, co *callOptions) (snapshot, error) {
	if r.values != nil && len(keys) == 1 && co.bkeyTags == nil {
		return r.readLocal(keys[0], co), nil
	}
	return r.readOf(ctx, keys, keys, co)
}

// readOf is read of the entries of fetch (keys, or nil to read none) with
// the invalidation record and the tags of keys: the call's, and with
// WithKeyTags each key's own. The snapshot's entries are those of fetch.
func (r *Region) readOf(ctx context.Context, keys, fetch []string, co *callOptions) (snapshot, error) {
	tags, ti, sel := r.readTags(keys, co)
	all := r.fetchList(fetch, ti)
	seq := r.creations.Load()
	// Asked before the backend is: a tag confirmed while the read is under
	// way (the retrier's bump landing) may have been fetched with the
	// counter from before the bump, which its invalidation replaced.
	unconfirmed := r.unconfirmed.any(tags)
	var (
		vals [][]byte
		err  error
	)
	if len(all) > 0 { // a write's read of a local backend has nothing to fetch
		vals, err = r.backend.GetMulti(ctx, all)
	}
	s := snapshot{now: r.nanos(), tags: tags, sel: sel, shared: len(co.tagList()), seq: seq}
	if len(tags) > 0 {
		s.tagKeys = ti.keys[:len(tags)]
	}
	if err != nil || len(vals) != len(all) {
		if err == nil {
			err = fmt.Errorf("region: backend returned %d values for %d keys", len(vals), len(all))
		}
		r.failRead(&s, len(fetch))
		r.setBypass(&s, unconfirmed)
		return s, err
	}
	n := len(fetch)
	s.raw = vals[:n:n]
	rest := r.readRecord(&s, vals[n:], ti)
	r.readStamps(&s, rest, ti)
	r.setBypass(&s, unconfirmed)
	return s, nil
}

// readLocal is read of one entry key without key tags from a backend with
// a ValueAppender (which a local backend with CounterRefs is): one lookup,
// then the record and the tag counters from the process, in the order read
// takes them; the value, the stamps and the snapshot's slices share one
// allocation (readSpace).
func (r *Region) readLocal(key string, co *callOptions) snapshot {
	ti := noTags
	if co.tags != nil {
		ti = co.tags.infoFor(r)
	}
	tags := co.tagList()
	seq := r.creations.Load()
	unconfirmed := r.unconfirmed.any(tags) // before the read, as in readOf
	sp := new(readSpace)
	room := sp.valueRoom(len(ti.counters))
	if v, ok := r.values.AppendValue(sp.buf[:0:room], key); ok {
		sp.raw[0] = v
	}
	s := snapshot{raw: sp.raw[:], now: r.nanos(), tags: tags, shared: len(tags), seq: seq}
	if len(tags) > 0 {
		s.tagKeys = ti.keys[:len(tags)]
	}
	r.readRecord(&s, nil, ti)
	if len(tags) > 0 {
		s.stamps = sp.stampsOf(ti.counters)
	}
	r.setBypass(&s, unconfirmed)
	return s
}

// setBypass decides whether s is bypassed: a tag of its read was
// unconfirmed before the read (unconfirmed) or is now.
func (r *Region) setBypass(s *snapshot, unconfirmed bool) {
	s.bypass = unconfirmed || r.unconfirmed.any(s.tags)
	if s.bypass {
		s.since = r.unconfirmed.since.Load()
	}
}

// readSpace is the memory of one readLocal: the snapshot's entry, the
// stamps of up to two tags (a query's tables, most often one), and one
// buffer for the bytes of a small value followed by the decimal text of
// those stamps: a value may use what the stamps of its call do not need.
type readSpace struct {
	raw    [1][]byte
	stamps [2][]byte
	buf    [readSpaceValue + 2*20]byte // 20 bytes fit any int64
}

// valueRoom is how many bytes of buf a value may take when the call reads
// n counters: the rest holds their text (stampsOf).
func (sp *readSpace) valueRoom(n int) int {
	if n > len(sp.stamps) {
		return len(sp.buf) // counterStamps: the text goes elsewhere
	}
	return len(sp.buf) - 20*n
}

// stampsOf returns the decimal text of counters, in sp when they are few
// enough (counterStamps otherwise).
func (sp *readSpace) stampsOf(counters []*atomic.Int64) [][]byte {
	if len(counters) > len(sp.stamps) {
		return counterStamps(counters)
	}
	stamps, buf := sp.stamps[:len(counters)], sp.buf[sp.valueRoom(len(counters)):][:0]
	for i, c := range counters {
		at := len(buf)
		buf = strconv.AppendInt(buf, c.Load(), 10)
		stamps[i] = buf[at:len(buf):len(buf)]
	}
	return stamps
}

// readSpaceValue is how many bytes of a value readSpace holds when the
// call reads two counters (more with fewer); a longer value takes an
// allocation of its own.
const readSpaceValue = 128

// readTags returns the tags a read of keys covers (the call's, then the
// keys' own: WithKeyTags), how to read them, and for each key the indexes
// of its tags (nil when every key has the call's).
func (r *Region) readTags(keys []string, co *callOptions) ([]string, *tagInfo, [][]int) {
	ti := noTags
	if co.tags != nil {
		ti = co.tags.infoFor(r)
	}
	if co.bkeyTags == nil {
		return co.tagList(), ti, nil
	}
	return r.keyTagUnion(keys, co, co.tagList(), ti)
}

// fetchList returns what a read asks the backend for: the entry keys, then
// what the region does not hold itself: the region-wide record (shared
// backends: recordKeys), then the tag counters and pending markers (unless
// the backend has CounterRefs). It may use the spare capacity of keys.
func (r *Region) fetchList(keys []string, ti *tagInfo) []string {
	if r.local && r.refs != nil {
		return keys
	}
	fetch := ti.keys
	if r.refs != nil {
		fetch = nil
	}
	all := keys
	if extra := recordKeys + len(fetch); cap(all)-len(all) < extra {
		all = make([]string, len(keys), len(keys)+extra)
		copy(all, keys)
	}
	if !r.local {
		all = append(all, r.hardKey, r.recordPending, r.softKey)
	}
	return append(all, fetch...)
}

// failRead makes s the snapshot of a read of nkeys entries that failed:
// every entry is missing and no tag has a stamp, so nothing in s can be
// compared.
func (r *Region) failRead(s *snapshot, nkeys int) {
	s.failed = true
	s.raw = make([][]byte, nkeys)
	s.stamps = make([][]byte, len(s.tags))
	s.bypass = r.unconfirmed.any(s.tags)
}

// readStamps fills in the stamps of s: from the counters themselves for a
// backend with CounterRefs, else from vals, the counters the backend
// returned, followed for a shared backend by the pending markers.
func (r *Region) readStamps(s *snapshot, vals [][]byte, ti *tagInfo) {
	switch {
	case r.refs != nil && len(s.tags) > 0:
		s.stamps = counterStamps(ti.counters)
	case r.refs == nil:
		s.stamps = vals[:len(s.tags)]
		for i, st := range s.stamps {
			if _, ok := parseCounter(st); !ok {
				s.stamps[i] = nil // unreadable: as if missing, a miss
			}
		}
		if !r.local {
			for _, p := range vals[len(s.tags):] {
				if markerPending(p) {
					s.pending = true
				}
			}
		}
	}
}

// counterStamps returns the values of counters at fixed addresses as a
// backend would return them, their decimal text, in one buffer.
func counterStamps(counters []*atomic.Int64) [][]byte {
	var (
		stamps [][]byte
		buf    []byte
	)
	if len(counters) <= len(stampSpace{}.s) {
		sp := new(stampSpace) // one allocation for the slices and their bytes
		stamps, buf = sp.s[:len(counters)], sp.b[:0]
	} else {
		stamps, buf = make([][]byte, len(counters)), make([]byte, 0, 20*len(counters))
	}
	for i, c := range counters {
		at := len(buf)
		buf = strconv.AppendInt(buf, c.Load(), 10)
		stamps[i] = buf[at:len(buf):len(buf)]
	}
	return stamps
}

// stampSpace holds the decimal text of a few counters and the slices over
// it: 20 bytes fit any int64.
type stampSpace struct {
	s [4][]byte
	b [80]byte
}

// noTags is the tagInfo of a call without tags.
var noTags = &tagInfo{}

// keyTagUnion adds the keys' own tags to the call's: it returns every tag
// once, how to read them (as tagInfo does), and for each key the indexes of
// its tags.
func (r *Region) keyTagUnion(keys []string, co *callOptions, shared []string, sharedInfo *tagInfo) ([]string, *tagInfo, [][]int) {
	n := 0 // tags of all keys, counted with repeats
	for _, k := range keys {
		n += len(shared) + len(co.bkeyTags[k])
	}
	tags := make([]string, len(shared), len(shared)+len(keys))
	copy(tags, shared)
	index := make(map[string]int, len(shared)+len(keys))
	for i, t := range shared {
		index[t] = i
	}
	sel := make([][]int, len(keys))
	space := make([]int, 0, n) // every key's indexes, in one array
	for i, k := range keys {
		at := len(space)
		for j := range shared {
			space = append(space, j)
		}
		for _, t := range co.bkeyTags[k] {
			j, ok := index[t]
			if !ok {
				j = len(tags)
				index[t] = j
				tags = append(tags, t)
			}
			if j >= len(shared) {
				space = append(space, j)
			}
		}
		sel[i] = space[at:len(space):len(space)]
	}
	extra := r.tagInfo(tags[len(shared):])
	n = len(shared)
	ti := &tagInfo{
		keys:     make([]string, 0, len(sharedInfo.keys)+len(extra.keys)),
		counters: append(append([]*atomic.Int64(nil), sharedInfo.counters...), extra.counters...),
		marks:    append(append([]*localMark(nil), sharedInfo.marks...), extra.marks...),
	}
	// Counter keys first, then pending keys, as tagInfo lays them out.
	ti.keys = append(ti.keys, sharedInfo.keys[:n]...)
	ti.keys = append(ti.keys, extra.keys[:len(tags)-n]...)
	ti.keys = append(ti.keys, sharedInfo.keys[n:]...)
	ti.keys = append(ti.keys, extra.keys[len(tags)-n:]...)
	return tags, ti, sel
}

// classify decides what raw, the entry at index i of s, means for a caller
// with options co. It fills env.
func (r *Region) classify(raw []byte, s *snapshot, i int, co *callOptions, env *envelope) state {
	env.malformed = nil
	if raw == nil || s.bypass {
		return miss
	}
	if err := env.unmarshal(raw); err != nil {
		if !errors.Is(err, errOldEnvelope) {
			env.malformed = err // counted by the caller (see envelope.malformed)
		}
		return miss
	}
	if !s.inv.ok || env.hard != s.inv.hard || (env.dies != 0 && s.now > env.dies) {
		return miss
	}
	raw = env.rawStamps
	var stored []byte
	if s.sel == nil {
		if env.nstamps != s.shared {
			return miss
		}
		for _, st := range s.stamps[:s.shared] {
			stored, raw = nextStamp(raw)
			if st == nil || !bytes.Equal(st, stored) {
				return miss
			}
		}
	} else {
		if env.nstamps != len(s.sel[i]) {
			return miss
		}
		for _, t := range s.sel[i] {
			stored, raw = nextStamp(raw)
			if st := s.stamps[t]; st == nil || !bytes.Equal(st, stored) {
				return miss
			}
		}
	}
	if co != nil && co.ignoreExpiry {
		return fresh
	}
	if env.soft != s.inv.soft {
		return stale
	}
	if co != nil && co.expirationSet {
		if co.expiration >= 0 && s.now-env.created > int64(co.expiration) {
			return stale
		}
		return fresh
	}
	if env.expires != 0 && s.now > env.expires {
		return stale
	}
	return fresh
}

// decode fills dst from the entry's payload; a failure is counted and makes
// the entry a miss.
func (r *Region) decode(key string, payload []byte, dst func([]byte) error) bool {
	if err := dst(payload); err != nil {
		r.decodeFailed(context.Background(), key, err)
		return false
	}
	return true
}

// lifetimes returns the soft expiry, the hard deadline and the backend TTL
// for a value created at now under co. While an invalidation is pending on
// its tags, the value dies at the end of the invalidation lease.
func (r *Region) lifetimes(now int64, co *callOptions, pending bool) (expires, dies int64, ttl time.Duration) {
	exp := r.expiration
	if co != nil && co.expirationSet {
		exp = co.expiration
	}
	if exp > 0 {
		expires = now + int64(exp)
		ttl = r.hardTTL(exp)
	}
	if pending {
		dies = now + int64(r.lease)
		if ttl == 0 || ttl > r.lease {
			ttl = r.lease
		}
		if expires == 0 || expires > dies {
			expires = dies
		}
	}
	return expires, dies, ttl
}

// hardTTL is the backend's time to live of a value that expires after exp
// (positive), zero for none: long enough past exp for the value to be
// served stale (see WithStaleTTL).
func (r *Region) hardTTL(exp time.Duration) time.Duration {
	var stale time.Duration
	switch {
	case r.staleSet && r.staleTTL > 0:
		stale = r.staleTTL
	case r.staleSet, r.local:
		return 0 // kept until the backend evicts it
	default:
		stale = max(exp, DefaultStaleTTL)
	}
	if exp > math.MaxInt64-stale {
		return 0 // beyond any backend's reach: no expiry
	}
	return exp + stale
}

// Get decodes the fresh value stored under key into dst, a non-nil pointer,
// and reports whether there was one. It never locks and never regenerates:
// an expired, invalidated or undecodable value is reported as not found.
func (r *Region) Get(ctx context.Context, key string, dst any, opts ...CallOption) (bool, error) {
	return r.Peek(ctx, key, func(b []byte) error { return r.codec.Unmarshal(b, dst) }, opts...)
}

// Peek is Get for callers that decode payloads themselves (see Payloader):
// decode receives the stored payload of a fresh value; an error from it
// makes the value a miss, counted as a decode failure.
func (r *Region) Peek(ctx context.Context, key string, decode func(payload []byte) error, opts ...CallOption) (bool, error) {
	return r.peek(ctx, key, decode, collect(opts))
}

// peek is Peek with its options collected.
func (r *Region) peek(ctx context.Context, key string, decode func(payload []byte) error, co *callOptions) (bool, error) {
	s, err := r.read(ctx, []string{r.entryKey(key)}, co)
	if err != nil {
		r.failed(ctx, OpRead, key, err)
		return false, fmt.Errorf("region %s: get %q: %w", r.name, key, err)
	}
	var env envelope
	if r.classify(s.raw[0], &s, 0, co, &env) != fresh || !r.decode(key, env.payload, decode) {
		if env.malformed != nil {
			r.decodeFailed(ctx, key, env.malformed)
		}
		r.stats.misses.Add(1)
		return false, nil
	}
	r.stats.hits.Add(1)
	return true, nil
}

// Set stores v under key, created now, without locking.
func (r *Region) Set(ctx context.Context, key string, v any, opts ...CallOption) error {
	return r.set(ctx, key, v, collect(opts))
}

// set is Set with its options collected.
func (r *Region) set(ctx context.Context, key string, v any, co *callOptions) error {
	payload, err := r.codec.Marshal(v)
	if err != nil {
		return fmt.Errorf("region %s: set %q: encode: %w", r.name, key, err)
	}
	s, err := r.read(ctx, nil, co)
	// After the read, the stamps and the store are one call's backend time
	// (budget, lock.go), as a GetOrCreate's are: an outage costs Set a
	// bounded latency, however many tags need a counter.
	b := r.newBudget(false)
	if err == nil {
		err = b.do(ctx, func(ctx context.Context) error { return r.initStamps(ctx, &s) })
	}
	if err != nil {
		r.failed(ctx, OpTags, key, err)
		return fmt.Errorf("region %s: set %q: %w", r.name, key, err)
	}
	if s.bypass {
		return nil
	}
	err = b.do(ctx, func(ctx context.Context) error {
		_, err := r.store(ctx, r.entryKey(key), payload, &s, 0, co, nil)
		return err
	})
	if err != nil {
		r.failed(ctx, OpStore, key, err)
		return fmt.Errorf("region %s: set %q: %w", r.name, key, err)
	}
	return nil
}

// keep encodes v and stores it under bkey unless the call says not to; it
// returns the payload for callers that wait (nil when encoding failed).
func (r *Region) keep(ctx context.Context, bkey string, v any, s *snapshot, i int, co *callOptions, lock Mutex) []byte {
	var payload []byte
	if p, ok := v.(Payloader); ok {
		b, err := p.Payload()
		if err != nil {
			if errors.Is(err, ErrPartial) {
				r.notStored(ctx, bkey, co, ReasonPartial)
			} else {
				r.notStored(ctx, bkey, co, ReasonUnencodable)
			}
			return nil
		}
		payload = b
	} else {
		b, err := r.codec.Marshal(v)
		if err != nil {
			r.notStored(ctx, bkey, co, ReasonUnencodable)
			return nil
		}
		payload = b
	}
	switch {
	case s.bypass:
		r.notStored(ctx, bkey, co, ReasonBypassed)
		return payload
	case co.shouldCache != nil && !co.shouldCache(v):
		r.notStored(ctx, bkey, co, ReasonShouldCache)
		return payload
	}
	var fence *Guard
	if f, ok := optional[Fencer](lock); ok {
		g := f.Fence()
		fence = &g
	}
	ok, err := r.store(ctx, bkey, payload, s, i, co, fence)
	if err != nil {
		r.failed(ctx, OpStore, r.callerKey(bkey), err)
	} else if !ok {
		r.notStored(ctx, bkey, co, ReasonTagsChanged)
	}
	return payload
}

// store writes payload under the backend key k, stamped with the tag values
// in s, and only while those tags still hold them.
func (r *Region) store(ctx context.Context, k string, payload []byte, s *snapshot, i int, co *callOptions, fence *Guard) (bool, error) {
	// A value is as old as the read that preceded its making, and carries
	// the generations and stamps that read saw: an invalidation made while
	// its creator ran changed them.
	now := s.now
	expires, dies, ttl := r.lifetimes(now, co, s.pending)
	stamps := s.stampsOf(i)
	env := envelope{created: now, expires: expires, dies: dies, hard: s.inv.hard, soft: s.inv.soft, stamps: stamps, tags: s.tagsOf(i), payload: payload}
	item := Item{Key: k, Value: env.marshal(), TTL: ttl}
	if len(stamps) == 0 && fence == nil {
		return true, r.backend.SetMulti(ctx, []Item{item})
	}
	guards := make([]Guard, len(stamps), len(stamps)+1)
	for j, tk := range s.tagKeysOf(i) {
		guards[j] = Guard{Key: tk, Value: stamps[j]}
	}
	if fence != nil {
		guards = append(guards, *fence)
	}
	return r.backend.SetIf(ctx, item, guards)
}

// Delete removes the value stored under key.
func (r *Region) Delete(ctx context.Context, key string) error {
	if err := r.backend.Delete(ctx, r.entryKey(key)); err != nil {
		r.failed(ctx, OpDelete, key, err)
		return fmt.Errorf("region %s: delete %q: %w", r.name, key, err)
	}
	return nil
}

// Invalidate invalidates every value of the region made so far, in every
// process that shares the backend. Hard invalidation makes them misses:
// callers wait for a new value. Soft invalidation makes them stale: one
// caller regenerates while the others are served the old value. Soft
// invalidation works without an expiration time too.
//
// The region-wide record is a pair of counters, not a time (record.go):
// losing it (eviction, deletion) makes every value a miss, and no clock
// takes part. If the backend cannot be written, the invalidation is
// retried in the background as InvalidateTags' is, and the region's values
// are bypassed in this process until it lands.
func (r *Region) Invalidate(ctx context.Context, hard bool) error {
	if hard {
		return r.bump(ctx, []string{EveryValue}, 0)
	}
	return r.bump(ctx, []string{softTag}, 0)
}

// compareAndSet replaces what the backend holds under key with the item
// next makes of it (old is nil when key is missing), provided key still
// holds old at the write; when it does not, it reads key and tries again,
// attempts times in all. It returns the last item made and whether it was
// stored; the caller decides what to do when none was. An error is the
// backend's, from reading or writing key.
func (r *Region) compareAndSet(ctx context.Context, key string, attempts int, next func(old []byte) Item) (last Item, stored bool, err error) {
	for range attempts {
		vals, err := r.backend.GetMulti(ctx, []string{key})
		if err != nil {
			return last, false, err
		}
		var old []byte
		if len(vals) == 1 {
			old = vals[0]
		}
		last = next(old)
		ok, err := r.backend.SetIf(ctx, last, []Guard{{Key: key, Value: old}})
		if err != nil || ok {
			return last, ok, err
		}
	}
	return last, false, nil
}

func collect(opts []CallOption) *callOptions {
	co := &callOptions{}
	for _, o := range opts {
		o(co)
	}
	return co
}
