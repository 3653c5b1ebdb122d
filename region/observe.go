package region

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// What a region tells its observers. Stats counts what a region does; an
// Observer is told the events behind the counts that need more than a
// number to act on: which key was not stored and why, which backend call
// failed with what error, how long a creator ran or a caller waited. A hit
// is not an event: the hit path costs no observer anything, and the counts
// of hits, misses and stale values served are read from Stats.

// EventKind says what an Event reports.
type EventKind uint8

// The kinds of Event, with the fields each one sets (besides Kind and
// Region, which every event sets).
const (
	// EventRegenerated: a creator run ended. Keys are the keys it was
	// asked for, Tags the tags the call gave them (WithTags), Duration how
	// long it ran, Err its error (nil when it returned values; a panic is
	// reported as an error too, the callers get it as a *PanicError).
	EventRegenerated EventKind = iota + 1
	// EventWaited: a caller waited for a value that another caller, in
	// this process or (with a distributed lock) in another, was making.
	// Key is the key, Duration the wait, Err set when the wait did not
	// end with a value (ErrWaitTimeout, the caller's context).
	EventWaited
	// EventNotStored: a value was made but not stored. Key is its key,
	// Tags the tags it depends on, Reason why (the same count as
	// Stats.NotStoredBy).
	EventNotStored
	// EventDecodeFailed: a stored value could not be read back; it is a
	// miss. Key is its key.
	EventDecodeFailed
	// EventBackendError: a backend call failed (Stats.Errors). Op names
	// the call (see the Op constants), Key the caller's key when the call
	// was about one, Err the backend's error.
	EventBackendError
	// EventInvalidated: an invalidation of Tags reached the backend.
	// Retried is set when the region's retrier sent it, after an
	// EventInvalidationFailed for those tags.
	EventInvalidated
	// EventInvalidationFailed: an invalidation of Tags could not be
	// written; Err says why. The region bypasses the values that depend on
	// them in this process and retries the invalidation in the background
	// until it lands (EventInvalidated with Retried).
	EventInvalidationFailed
	// EventBreaker: the backend's circuit breaker opened (Open) or closed
	// again (see BreakerWatcher).
	EventBreaker
)

var eventKindNames = [...]string{
	EventRegenerated:        "regenerated",
	EventWaited:             "waited",
	EventNotStored:          "not_stored",
	EventDecodeFailed:       "decode_failed",
	EventBackendError:       "backend_error",
	EventInvalidated:        "invalidated",
	EventInvalidationFailed: "invalidation_failed",
	EventBreaker:            "breaker",
}

// String returns the kind's name in snake case, as metrics and logs spell
// it ("not_stored").
func (k EventKind) String() string {
	if int(k) < len(eventKindNames) && eventKindNames[k] != "" {
		return eventKindNames[k]
	}
	return "unknown"
}

// The operations an EventBackendError names in its Op, besides OpDelete
// and OpLock (taking, renewing, waiting for or releasing a distributed
// lock).
const (
	OpRead       = "read"       // reading entries and the tags they depend on
	OpStore      = "store"      // storing an entry
	OpInvalidate = "invalidate" // bumping tags
	OpTags       = "tags"       // making the tag counters a value about to be stored depends on
	OpMetadata   = "metadata"   // reading an entry or its lock for Metadata or KeyIsLocked
)

// NotStoredReason says why a value was not stored. The reasons are those
// counted in Stats.NotStoredBy.
type NotStoredReason uint8

// The reasons a value is not stored; NotStoredCounts documents each one.
const (
	ReasonShouldCache NotStoredReason = iota + 1
	ReasonTagsChanged
	ReasonBypassed
	ReasonUnencodable
	ReasonPartial
)

var reasonNames = [...]string{
	ReasonShouldCache: "should_cache",
	ReasonTagsChanged: "tags_changed",
	ReasonBypassed:    "bypassed",
	ReasonUnencodable: "unencodable",
	ReasonPartial:     "partial",
}

// String returns the reason's name in snake case ("tags_changed").
func (r NotStoredReason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "unknown"
}

// NotStoredReasons lists every reason, in the order of NotStoredCounts.
func NotStoredReasons() []NotStoredReason {
	return []NotStoredReason{ReasonShouldCache, ReasonTagsChanged, ReasonBypassed, ReasonUnencodable, ReasonPartial}
}

// Of returns the count of reason r in c.
func (c NotStoredCounts) Of(r NotStoredReason) int64 {
	switch r {
	case ReasonShouldCache:
		return c.ShouldCache
	case ReasonTagsChanged:
		return c.TagsChanged
	case ReasonBypassed:
		return c.Bypassed
	case ReasonUnencodable:
		return c.Unencodable
	case ReasonPartial:
		return c.Partial
	}
	return 0
}

// Event is one thing a region did that its observers are told of. Which
// fields are set depends on Kind (see EventKind). The slices belong to the
// region: an observer that keeps them past Observe copies them.
type Event struct {
	Kind     EventKind
	Region   string // the region's name
	Key      string // the caller's key (after the key mangler, if any), when the event is about one
	Keys     []string
	Tags     []string
	Op       string // EventBackendError
	Reason   NotStoredReason
	Duration time.Duration
	Retried  bool // EventInvalidated
	Open     bool // EventBreaker
	Err      error
}

// Observer is told of a region's events (see WithObserver). Observe is
// called synchronously, on the goroutine of the call that caused the event
// (a caller's, a regeneration's, or the region's retrier), never with a
// lock of the region's held; it must be safe for concurrent use, return
// quickly and not panic. ctx is the context of that call, carrying the
// caller's values (a trace span among them).
type Observer interface {
	Observe(ctx context.Context, e Event)
}

// ObserverFunc is a function that is an Observer.
type ObserverFunc func(ctx context.Context, e Event)

// Observe calls f.
func (f ObserverFunc) Observe(ctx context.Context, e Event) { f(ctx, e) }

// RegenerationTracer is an optional interface of an Observer that wraps
// each creator run, for a trace span around it: StartRegeneration is
// called just before the creator runs with the context it runs on, the
// keys it makes and the tags they depend on (for the GORM plugin, the
// tables the query reads), and
// returns the context to run it on instead (the span's) and a function
// the region calls with the creator's error once it returns. The
// EventRegenerated of that run follows, on the returned context.
type RegenerationTracer interface {
	StartRegeneration(ctx context.Context, region string, keys, tags []string) (context.Context, func(err error))
}

// BreakerWatcher is an optional interface of a Backend with a circuit
// breaker (the Redis and memcached backends): BreakerOpen reports whether
// it is open now, and WatchBreaker calls f each time it opens or closes
// again, until stop is called. A region over such a backend reports the
// changes to its observers as EventBreaker, and BreakerOpen as its own.
type BreakerWatcher interface {
	BreakerOpen() bool
	WatchBreaker(f func(open bool)) (stop func())
}

// WithObserver adds o to the region's observers. Observers may also be
// added later, with AddObserver.
func WithObserver(o Observer) Option {
	return func(r *Region) { r.obs.add(o) }
}

// AddObserver adds o to the region's observers, for instrumentation set up
// after the region was made (the GORM plugin's logger, an OpenTelemetry
// package). It is safe to call while the region is in use.
func (r *Region) AddObserver(o Observer) { r.obs.add(o) }

// BreakerOpen reports whether the circuit breaker of the region's backend
// is open now; known is false when the backend has none (BreakerWatcher).
func (r *Region) BreakerOpen() (open, known bool) {
	w, ok := optional[BreakerWatcher](r.backend)
	if !ok {
		return false, false
	}
	return w.BreakerOpen(), true
}

// observers are a region's observers, copied on write so that telling
// them takes one atomic load.
type observers struct {
	mu     sync.Mutex                 // orders the writers of list
	list   atomic.Pointer[[]Observer] // nil: none
	tracer atomic.Pointer[[]RegenerationTracer]
}

func (o *observers) add(ob Observer) {
	if ob == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var list []Observer
	if l := o.list.Load(); l != nil {
		list = append(list, *l...)
	}
	list = append(list, ob)
	o.list.Store(&list)
	if t, ok := ob.(RegenerationTracer); ok {
		var ts []RegenerationTracer
		if l := o.tracer.Load(); l != nil {
			ts = append(ts, *l...)
		}
		ts = append(ts, t)
		o.tracer.Store(&ts)
	}
}

// observed reports whether the region has an observer: the events are made
// only then.
func (r *Region) observed() bool { return r.obs.list.Load() != nil }

// emit tells every observer of e.
func (r *Region) emit(ctx context.Context, e Event) {
	l := r.obs.list.Load()
	if l == nil {
		return
	}
	e.Region = r.name
	for _, o := range *l {
		o.Observe(ctx, e)
	}
}

// failed counts a backend error of op (about key, when it is not empty) and
// tells the observers.
func (r *Region) failed(ctx context.Context, op, key string, err error) {
	r.stats.errors.Add(1)
	if r.observed() {
		r.emit(ctx, Event{Kind: EventBackendError, Op: op, Key: key, Err: err})
	}
}

// notStored counts a value not stored under the backend key bkey for
// reason and tells the observers.
func (r *Region) notStored(ctx context.Context, bkey string, co *callOptions, reason NotStoredReason) {
	var c *atomic.Int64
	switch reason {
	case ReasonShouldCache:
		c = &r.stats.shouldCache
	case ReasonTagsChanged:
		c = &r.stats.tagsChanged
	case ReasonBypassed:
		c = &r.stats.bypassed
	case ReasonUnencodable:
		c = &r.stats.unencodable
	default:
		c = &r.stats.partial
	}
	r.stats.notStoredBy(c)
	if r.observed() {
		r.emit(ctx, Event{Kind: EventNotStored, Key: r.callerKey(bkey), Tags: co.tagsOf(bkey), Reason: reason})
	}
}

// decodeFailed counts a stored value of key that could not be read back
// and tells the observers.
func (r *Region) decodeFailed(ctx context.Context, key string, err error) {
	r.stats.decodeFailures.Add(1)
	if r.observed() {
		r.emit(ctx, Event{Kind: EventDecodeFailed, Key: key, Err: err})
	}
}

// runCreator runs create for keys, timed and traced for the observers
// (EventRegenerated), and returns what it returned. A panic of create goes
// on unrecovered, with its stack; the observers are told of it as
// errCreatorPanicked.
func runCreator[T any](ctx context.Context, r *Region, keys []string, co *callOptions, create func(ctx context.Context) (T, error)) (v T, err error) {
	if !r.observed() {
		return create(ctx)
	}
	var ends []func(error)
	if ts := r.obs.tracer.Load(); ts != nil {
		for _, t := range *ts {
			var end func(error)
			ctx, end = t.StartRegeneration(ctx, r.name, keys, co.tagList())
			ends = append(ends, end)
		}
	}
	start := time.Now()
	returned := false
	defer func() {
		if !returned {
			r.endCreator(ctx, keys, co.tagList(), start, ends, errCreatorPanicked)
		}
	}()
	v, err = create(ctx)
	returned = true
	r.endCreator(ctx, keys, co.tagList(), start, ends, err)
	return v, err
}

// errUnreadable is the error observers are told of for a value another
// caller stored that this one could not read.
var errUnreadable = errors.New("region: the value stored by another caller could not be read")

// errCreatorPanicked is the error observers are told of for a creator run
// that panicked (the callers get the panic, as a *PanicError).
var errCreatorPanicked = errors.New("region: the creator panicked")

// endCreator ends the spans of a creator run begun at start and tells the
// observers.
func (r *Region) endCreator(ctx context.Context, keys, tags []string, start time.Time, ends []func(error), err error) {
	d := time.Since(start)
	for i := len(ends) - 1; i >= 0; i-- {
		if ends[i] != nil {
			ends[i](err)
		}
	}
	r.emit(ctx, Event{Kind: EventRegenerated, Keys: keys, Tags: tags, Duration: d, Err: err})
}

// waited tells the observers that a caller waited for key since start.
func (r *Region) waited(ctx context.Context, key string, start time.Time, err error) {
	// A zero start: the observer was added while the caller waited.
	if r.observed() && !start.IsZero() {
		r.emit(ctx, Event{Kind: EventWaited, Key: key, Duration: time.Since(start), Err: err})
	}
}

// watchBreaker reports the backend's breaker changes to the observers,
// until the region closes.
func (r *Region) watchBreaker() {
	w, ok := optional[BreakerWatcher](r.backend)
	if !ok {
		return
	}
	r.stopBreaker = w.WatchBreaker(func(open bool) {
		r.emit(context.Background(), Event{Kind: EventBreaker, Open: open})
	})
}

// invalidated counts an invalidation of tags that reached the backend
// (sent by the retrier when retried) and tells the observers.
func (r *Region) invalidated(ctx context.Context, tags []string, retried bool) {
	r.stats.invalidations.Add(1)
	if retried {
		r.stats.invalidationsRetried.Add(1)
	}
	if r.observed() {
		r.emit(ctx, Event{Kind: EventInvalidated, Tags: tags, Retried: retried})
	}
}

// invalidationFailed counts an invalidation of tags that could not be
// written (a backend error too) and tells the observers.
func (r *Region) invalidationFailed(ctx context.Context, tags []string, err error) {
	r.stats.invalidationFailures.Add(1)
	r.failed(ctx, OpInvalidate, "", err)
	if r.observed() {
		r.emit(ctx, Event{Kind: EventInvalidationFailed, Tags: tags, Err: err})
	}
}

// callerKey returns the key of the backend key bkey as the caller gave it
// (after the key mangler, when there is one).
func (r *Region) callerKey(bkey string) string { return strings.TrimPrefix(bkey, r.entryPrefix) }

// firstKey returns keys[0], or "" when there are none.
func firstKey(keys []string) string {
	if len(keys) == 0 {
		return ""
	}
	return keys[0]
}

// Outcome says how a call of Load served one of its keys (see
// OutcomeReporter).
type Outcome uint8

// The outcomes of a key.
const (
	// OutcomeHit: a fresh value was read from the backend.
	OutcomeHit Outcome = iota + 1
	// OutcomeStale: an expired or soft-invalidated value was served while
	// it is regenerated (or because its regeneration failed).
	OutcomeStale
	// OutcomeMiss: there was no usable value, and the call's own creator
	// made it.
	OutcomeMiss
	// OutcomeWaited: there was no usable value, and the call waited for the
	// one another caller's creator was making.
	OutcomeWaited
)

var outcomeNames = [...]string{OutcomeHit: "hit", OutcomeStale: "stale", OutcomeMiss: "miss", OutcomeWaited: "waited"}

// String returns the outcome's name ("hit", "stale", "miss", "waited").
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return "unknown"
}

// OutcomeReporter is an optional interface of a Loader: Load tells it how
// each key was served, on the caller's goroutine, before Load returns. A
// key may be reported more than once (a caller that regenerates a stale
// value reports a miss, then a stale hit if the regeneration fails): the
// last report is the outcome.
type OutcomeReporter interface {
	Outcome(key string, o Outcome)
}

// report tells l, if it is an OutcomeReporter, that key was served as o.
func report(l Loader, key string, o Outcome) {
	if r, ok := l.(OutcomeReporter); ok {
		r.Outcome(key, o)
	}
}
