package region_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// recorder is an Observer keeping every event it is told of.
type recorder struct {
	mu     sync.Mutex
	events []region.Event
}

func (r *recorder) Observe(_ context.Context, e region.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.Keys, e.Tags = slices.Clone(e.Keys), slices.Clone(e.Tags)
	r.events = append(r.events, e)
}

// take returns the events recorded since the last take.
func (r *recorder) take() []region.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

// kinds counts events by kind.
func kinds(es []region.Event) map[region.EventKind]int {
	m := map[region.EventKind]int{}
	for _, e := range es {
		m[e.Kind]++
	}
	return m
}

// A scripted workload on a memory region: every event is told once, with
// its fields, and hits tell nothing.
func TestObserverEvents(t *testing.T) {
	ctx := context.Background()
	rec := &recorder{}
	r := region.New(memory.New(), region.WithName("obs"), region.WithObserver(rec))
	one := func(context.Context) (int, error) { return 1, nil }

	// Two misses, then three hits.
	for _, k := range []string{"a", "b"} {
		if _, err := region.GetOrCreate(ctx, r, k, one, region.WithTags("users")); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if _, err := region.GetOrCreate(ctx, r, "a", one, region.WithTags("users")); err != nil {
			t.Fatal(err)
		}
	}
	es := rec.take()
	if len(es) != 2 {
		t.Fatalf("2 misses and 3 hits told %d events, want 2: %+v", len(es), es)
	}
	for i, k := range []string{"a", "b"} {
		e := es[i]
		if e.Kind != region.EventRegenerated || e.Region != "obs" || !slices.Equal(e.Keys, []string{k}) ||
			!slices.Equal(e.Tags, []string{"users"}) || e.Err != nil || e.Duration <= 0 {
			t.Fatalf("event %d = %+v, want the regeneration of %q", i, e, k)
		}
	}

	// A stampede of K callers on one key: one creator run, K-1 waits.
	const K = 6
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range K {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = region.GetOrCreate(ctx, r, "s", func(context.Context) (int, error) { <-release; return 2, nil })
		}()
	}
	waitFor(t, "the waits", func() bool { return r.Stats().LockWaits == K-1 })
	close(release)
	wg.Wait()
	es = rec.take()
	if got := kinds(es); got[region.EventRegenerated] != 1 || got[region.EventWaited] != K-1 || len(es) != K {
		t.Fatalf("stampede told %v, want 1 regeneration and %d waits", got, K-1)
	}
	for _, e := range es {
		if e.Kind == region.EventWaited && (e.Key != "s" || e.Err != nil) {
			t.Fatalf("wait event %+v", e)
		}
	}

	// Not stored: ShouldCache refuses it.
	if _, err := region.GetOrCreate(ctx, r, "n", one, region.WithTags("orders"), region.ShouldCache(func(any) bool { return false })); err != nil {
		t.Fatal(err)
	}
	es = rec.take()
	if len(es) != 2 || es[1].Kind != region.EventNotStored || es[1].Key != "n" || es[1].Reason != region.ReasonShouldCache ||
		!slices.Equal(es[1].Tags, []string{"orders"}) || es[1].Reason.String() != "should_cache" {
		t.Fatalf("not stored told %+v", es)
	}

	// A stored value that does not decode as the caller's type.
	if err := r.Set(ctx, "d", "text"); err != nil {
		t.Fatal(err)
	}
	if _, err := region.GetOrCreate(ctx, r, "d", one); err != nil {
		t.Fatal(err)
	}
	es = rec.take()
	if got := kinds(es); got[region.EventDecodeFailed] != 1 || got[region.EventRegenerated] != 1 || es[0].Key != "d" || es[0].Err == nil {
		t.Fatalf("decode failure told %+v", es)
	}

	// An invalidation of tags.
	if err := r.InvalidateTags(ctx, "users"); err != nil {
		t.Fatal(err)
	}
	es = rec.take()
	if len(es) != 1 || es[0].Kind != region.EventInvalidated || !slices.Equal(es[0].Tags, []string{"users"}) || es[0].Retried {
		t.Fatalf("invalidation told %+v", es)
	}
	if s := r.Stats(); s.Invalidations != 1 || s.InvalidationFailures != 0 || s.Hits != 3 {
		t.Fatalf("stats %+v", s)
	}
}

// outcomeLoader is a Loader that keeps the outcome Load reports.
type outcomeLoader struct {
	block    chan struct{} // closed to let Create return; nil: at once
	outcomes map[string]region.Outcome
	v        int
}

func (l *outcomeLoader) Create(_ context.Context, keys []string) (map[string]any, error) {
	if l.block != nil {
		<-l.block
	}
	out := map[string]any{}
	for _, k := range keys {
		out[k] = 7
	}
	return out, nil
}
func (l *outcomeLoader) Decode(_ string, c region.Codec, b []byte) error { return c.Unmarshal(b, &l.v) }
func (l *outcomeLoader) Adopt(_ string, v any, _ bool) bool              { l.v = v.(int); return true }
func (l *outcomeLoader) Outcome(key string, o region.Outcome) {
	if l.outcomes == nil {
		l.outcomes = map[string]region.Outcome{}
	}
	l.outcomes[key] = o
}

// Load tells a Loader how each key was served.
func TestLoadOutcomes(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithAsyncRegeneration(1))
	load := func(l *outcomeLoader, keys ...string) map[string]region.Outcome {
		t.Helper()
		if err := r.Load(ctx, keys, l); err != nil {
			t.Fatal(err)
		}
		return l.outcomes
	}
	if got := load(&outcomeLoader{}, "a"); got["a"] != region.OutcomeMiss {
		t.Fatalf("first load: %v", got)
	}
	if got := load(&outcomeLoader{}, "a"); got["a"] != region.OutcomeHit {
		t.Fatalf("second load: %v", got)
	}
	if got := load(&outcomeLoader{}, "a", "b"); got["a"] != region.OutcomeHit || got["b"] != region.OutcomeMiss {
		t.Fatalf("two keys: %v", got)
	}
	if err := r.Invalidate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := load(&outcomeLoader{}, "a"); got["a"] != region.OutcomeStale {
		t.Fatalf("after a soft invalidation: %v", got)
	}

	// A caller that finds another's flight waits for it.
	leader := &outcomeLoader{block: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- r.Load(ctx, []string{"w"}, leader) }()
	waitFor(t, "the leader", func() bool { return r.Stats().Misses == 3 })
	follower := &outcomeLoader{}
	go func() {
		waitFor(t, "the follower", func() bool { return r.Stats().LockWaits == 1 })
		close(leader.block)
	}()
	if got := load(follower, "w"); got["w"] != region.OutcomeWaited || follower.v != 7 {
		t.Fatalf("follower: %v (value %d)", got, follower.v)
	}
	if err := <-done; err != nil || leader.outcomes["w"] != region.OutcomeMiss {
		t.Fatalf("leader: %v %v", err, leader.outcomes)
	}
}

// tracer is an Observer that wraps creator runs, and checks that the
// creator runs on the context it returns.
type tracer struct {
	recorder
	mu    sync.Mutex
	ended []error
}

type spanKey struct{}

func (tr *tracer) StartRegeneration(ctx context.Context, name string, keys, tags []string) (context.Context, func(error)) {
	ctx = context.WithValue(ctx, spanKey{}, fmt.Sprintf("%s/%v/%v", name, keys, tags))
	return ctx, func(err error) {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		tr.ended = append(tr.ended, err)
	}
}

func TestRegenerationTracer(t *testing.T) {
	ctx := context.Background()
	tr := &tracer{}
	r := region.New(memory.New(), region.WithName("tr"))
	r.AddObserver(tr)
	var seen any
	boom := errors.New("boom")
	_, err := region.GetOrCreate(ctx, r, "k", func(ctx context.Context) (int, error) {
		seen = ctx.Value(spanKey{})
		return 0, boom
	}, region.WithTags("users"))
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if seen != "tr/[k]/[users]" {
		t.Fatalf("the creator ran on %v, not the tracer's context", seen)
	}
	if len(tr.ended) != 1 || !errors.Is(tr.ended[0], boom) {
		t.Fatalf("ended %v", tr.ended)
	}
	if es := tr.take(); len(es) != 1 || es[0].Kind != region.EventRegenerated || !errors.Is(es[0].Err, boom) {
		t.Fatalf("events %+v", es)
	}

	// A creator that panics: the span ends, the panic reaches the caller.
	func() {
		defer func() {
			var pe *region.PanicError
			if p := recover(); p == nil {
				t.Fatal("no panic")
			} else if e, ok := p.(error); !ok || !errors.As(e, &pe) {
				t.Fatalf("panic %v", p)
			}
		}()
		_, _ = region.GetOrCreate(ctx, r, "p", func(context.Context) (int, error) { panic("creator") })
	}()
	if len(tr.ended) != 2 || tr.ended[1] == nil {
		t.Fatalf("ended after a panic: %v", tr.ended)
	}
}

// A Redis outage: backend errors are told with their operation, the
// invalidation that could not be written is told failed, then landed by
// the retrier; the breaker's opening and closing are told.
func TestObserverOutage(t *testing.T) {
	ctx := context.Background()
	srv := testharness.Redis(t)
	b, _ := redisOn(t, srv.Addr, "outage", redisbackend.WithBreaker(2, 50*time.Millisecond), redisbackend.WithTimeout(300*time.Millisecond))
	rec := &recorder{}
	r := region.New(b, region.WithName("out"), region.WithObserver(rec))
	defer r.Close()
	if open, known := r.BreakerOpen(); open || !known {
		t.Fatalf("breaker open %v known %v", open, known)
	}
	if _, err := region.GetOrCreate(ctx, r, "a", func(context.Context) (int, error) { return 1, nil }); err != nil {
		t.Fatal(err)
	}
	rec.take()

	srv.Kill()
	if err := r.InvalidateTags(ctx, "users"); err == nil {
		t.Fatal("an invalidation with Redis down succeeded")
	}
	if _, err := region.GetOrCreate(ctx, r, "b", func(context.Context) (int, error) { return 2, nil }); err != nil {
		t.Fatalf("a read with Redis down failed: %v", err)
	}
	waitFor(t, "the breaker to open", func() bool { open, _ := r.BreakerOpen(); return open })
	es := rec.take()
	got := kinds(es)
	if got[region.EventInvalidationFailed] < 1 || got[region.EventBackendError] < 2 || got[region.EventBreaker] != 1 {
		t.Fatalf("outage told %v: %+v", got, es)
	}
	ops := map[string]bool{}
	for _, e := range es {
		switch e.Kind {
		case region.EventBackendError:
			if e.Err == nil || e.Op == "" {
				t.Fatalf("backend error event %+v", e)
			}
			ops[e.Op] = true
		case region.EventInvalidationFailed:
			if !slices.Equal(e.Tags, []string{"users"}) {
				t.Fatalf("failed invalidation %+v", e)
			}
		case region.EventBreaker:
			if !e.Open {
				t.Fatalf("breaker event %+v", e)
			}
		}
	}
	if !ops[region.OpInvalidate] || !ops[region.OpRead] {
		t.Fatalf("backend errors by op %v, want invalidate and read", ops)
	}

	srv.Restart(t)
	waitFor(t, "the retry", func() bool { return r.Stats().InvalidationsRetried >= 1 })
	waitFor(t, "the breaker to close", func() bool {
		_, _ = region.GetOrCreate(ctx, r, "c", func(context.Context) (int, error) { return 3, nil })
		open, _ := r.BreakerOpen()
		return !open
	})
	var landed, closed bool
	for _, e := range rec.take() {
		landed = landed || (e.Kind == region.EventInvalidated && e.Retried && slices.Contains(e.Tags, "users"))
		closed = closed || (e.Kind == region.EventBreaker && !e.Open)
	}
	if !landed || !closed {
		t.Fatalf("after the restart: landed %v, breaker closed %v", landed, closed)
	}
	if s := r.Stats(); s.InvalidationFailures < 1 || s.InvalidationRetries < 1 {
		t.Fatalf("stats %+v", s)
	}
}
