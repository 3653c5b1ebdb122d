package dogpileotel_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/dogpile-go/dogpile/backends/memory"
	dogpileotel "github.com/dogpile-go/dogpile/otel"
	"github.com/dogpile-go/dogpile/region"
)

// TestMetricsScriptedWorkload: a memory region runs N misses, M hits, one
// creator error, one value not stored (ShouldCache) and one stampede of K
// callers on one key; every metric then has exactly the value the
// workload makes, the histograms one sample per creator run and per wait.
func TestMetricsScriptedWorkload(t *testing.T) {
	const N, M, K = 5, 7, 8
	tel := newTelemetry(t)
	r := region.New(memory.New(), region.WithName("default"), region.WithExpiration(time.Minute))
	t.Cleanup(func() { _ = r.Close() })
	inst, err := dogpileotel.Instrument(r, dogpileotel.WithMeterProvider(tel.mp), dogpileotel.WithTracerProvider(tel.tp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Close() })

	// Nothing done yet: every counter at zero, no histogram, no breaker
	// (memory has none).
	expect(t, "before the workload", tel.metrics(t), counts("default", nil))

	// N misses, each made by its creator.
	for i := range N {
		v, err := region.GetOrCreate(bg, r, fmt.Sprint("k", i), func(context.Context) (int, error) { return i, nil }, region.WithTags("users"))
		if err != nil || v != i {
			t.Fatalf("miss %d: %v, %v", i, v, err)
		}
	}
	// M hits on them.
	for i := range M {
		v, err := region.GetOrCreate(bg, r, fmt.Sprint("k", i%N), func(context.Context) (int, error) { return -1, nil }, region.WithTags("users"))
		if err != nil || v != i%N {
			t.Fatalf("hit %d: %v, %v", i, v, err)
		}
	}
	// A creator that fails, and a value ShouldCache keeps out.
	boom := errors.New("boom")
	if _, err := region.GetOrCreate(bg, r, "bad", func(context.Context) (int, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Fatalf("failing creator: %v", err)
	}
	if _, err := region.GetOrCreate(bg, r, "empty", func(context.Context) (int, error) { return 0, nil },
		region.ShouldCache(func(v int) bool { return v != 0 })); err != nil {
		t.Fatal(err)
	}

	// The stampede: K callers on one key; the creator returns once the
	// K-1 others wait for it.
	before := r.Stats().LockWaits
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for range K {
		wg.Go(func() {
			v, err := region.GetOrCreate(bg, r, "hot", func(context.Context) (string, error) {
				mu.Lock()
				created++
				mu.Unlock()
				waitFor(t, "the other callers to wait", func() bool { return r.Stats().LockWaits-before == K-1 })
				return "hot", nil
			})
			if err != nil || v != "hot" {
				t.Errorf("stampede: %q, %v", v, err)
			}
		})
	}
	wg.Wait()
	if created != 1 {
		t.Fatalf("the stampede ran %d creators, want 1", created)
	}

	want := counts("default", map[string]float64{
		"dogpile.region.hits":          M,
		"dogpile.region.misses":        N + 1 + 1 + K, // the failing creator's, the not stored one's, every stampeder's
		"dogpile.region.regenerations": N + 1 + 1 + 1,
		"dogpile.region.lock_waits":    K - 1,
		"dogpile.region.not_stored{dogpile.region=default,reason=should_cache}":            1,
		"dogpile.region.regeneration.duration.count{dogpile.region=default,outcome=ok}":    N + 1 + 1,
		"dogpile.region.regeneration.duration.count{dogpile.region=default,outcome=error}": 1,
		"dogpile.region.lock_wait.duration.count{dogpile.region=default}":                  K - 1,
	})
	got := tel.metrics(t)
	expect(t, "after the workload", got, want)
	if s := r.Stats(); s.Hits != M || s.LockWaits != K-1 {
		t.Fatalf("the region's own stats disagree: %+v", s)
	}
	// The histograms are in seconds: the stampede's creator waited for the
	// others, each of whom waited for it, so no sample is negative and
	// their sums are those of real durations (well under an hour).
	for _, k := range []string{
		"dogpile.region.regeneration.duration.sum{dogpile.region=default,outcome=ok}",
		"dogpile.region.lock_wait.duration.sum{dogpile.region=default}",
	} {
		if v, ok := got[k]; !ok || v <= 0 || v > 3600 {
			t.Fatalf("%s = %v (present %v): not a sum of seconds", k, v, ok)
		}
	}

	// Spans: one per creator run, the failing one in error.
	spans := tel.spans.GetSpans()
	if len(spans) != N+3 {
		t.Fatalf("%d spans, want one per creator run (%d)", len(spans), N+3)
	}
	outcomes := map[string]int{}
	for _, s := range spans {
		if s.Name != "dogpile.regenerate" {
			t.Fatalf("span %q", s.Name)
		}
		a := spanAttrs(s.Attributes)
		outcomes[a["outcome"].AsString()]++
		if a["dogpile.region"].AsString() != "default" || a["dogpile.keys"].AsInt64() != 1 {
			t.Fatalf("span attributes %v", s.Attributes)
		}
		if a["outcome"].AsString() == "error" {
			if s.Status.Code != codes.Error || s.Status.Description != "boom" || len(s.Events) != 1 || s.Events[0].Name != "exception" {
				t.Fatalf("the failing creator's span: status %+v, events %v", s.Status, s.Events)
			}
		} else if s.Status.Code == codes.Error {
			t.Fatalf("a span of a creator that did not fail has status %+v", s.Status)
		}
	}
	if outcomes["ok"] != N+2 || outcomes["error"] != 1 {
		t.Fatalf("span outcomes %v", outcomes)
	}
}

func spanAttrs(kv []attribute.KeyValue) map[string]attribute.Value {
	m := map[string]attribute.Value{}
	for _, a := range kv {
		m[string(a.Key)] = a.Value
	}
	return m
}

// TestRegenerationSpan: the span of a creator run is a child of the
// caller's span, the creator runs in its context, and dogpile.tables has
// the tags that name tables only.
func TestRegenerationSpan(t *testing.T) {
	tel := newTelemetry(t)
	r := region.New(memory.New(), region.WithName("orders"), region.WithExpiration(time.Minute))
	t.Cleanup(func() { _ = r.Close() })
	inst, err := dogpileotel.Instrument(r, dogpileotel.WithMeterProvider(tel.mp), dogpileotel.WithTracerProvider(tel.tp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Close() })

	ctx, parent := tel.tp.Tracer("test").Start(bg, "handler")
	var inCreator sdktrace.ReadOnlySpan
	keys := []string{"a", "b", "c"}
	_, err = region.GetOrCreateMulti(ctx, r, keys, func(ctx context.Context, missing []string) (map[string]int, error) {
		// The creator runs inside the regeneration span.
		inCreator = spanOf(ctx)
		out := map[string]int{}
		for _, k := range missing {
			out[k] = len(k)
		}
		return out, nil
	}, region.WithTags("orders", "users", "key:recent", "users#rows", "users#id=n1", "*"))
	if err != nil {
		t.Fatal(err)
	}
	parent.End()
	spans := tel.spans.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want the regeneration's and the handler's", len(spans))
	}
	s := spans[0]
	if s.Name != "dogpile.regenerate" || s.Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("span %q with parent %v, want dogpile.regenerate under the handler", s.Name, s.Parent.SpanID())
	}
	if inCreator == nil || inCreator.SpanContext().SpanID() != s.SpanContext.SpanID() {
		t.Fatal("the creator does not run in the regeneration span's context")
	}
	a := spanAttrs(s.Attributes)
	if got := a["dogpile.tables"].AsStringSlice(); fmt.Sprint(got) != "[orders users]" {
		t.Fatalf("dogpile.tables = %q, want [orders users]", got)
	}
	if a["dogpile.keys"].AsInt64() != 3 || a["dogpile.region"].AsString() != "orders" || a["outcome"].AsString() != "ok" {
		t.Fatalf("span attributes %v", s.Attributes)
	}
}

// spanOf returns the SDK span of ctx, nil when it has none.
func spanOf(ctx context.Context) sdktrace.ReadOnlySpan {
	s, _ := trace.SpanFromContext(ctx).(sdktrace.ReadOnlySpan)
	return s
}

// TestClose: after Close the region's metrics are no longer reported and
// its events are no longer recorded, nor its creator runs traced.
func TestClose(t *testing.T) {
	tel := newTelemetry(t)
	r := region.New(memory.New(), region.WithName("default"), region.WithExpiration(time.Minute))
	t.Cleanup(func() { _ = r.Close() })
	inst, err := dogpileotel.Instrument(r, dogpileotel.WithMeterProvider(tel.mp), dogpileotel.WithTracerProvider(tel.tp))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := region.GetOrCreate(bg, r, "k", func(context.Context) (int, error) { return 1, nil }); err != nil {
		t.Fatal(err)
	}
	expect(t, "open", tel.metrics(t), counts("default", map[string]float64{
		"dogpile.region.misses": 1, "dogpile.region.regenerations": 1,
		"dogpile.region.regeneration.duration.count{dogpile.region=default,outcome=ok}": 1,
	}))
	if err := inst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := inst.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := region.GetOrCreate(bg, r, "k2", func(context.Context) (int, error) { return 1, nil }); err != nil {
		t.Fatal(err)
	}
	// The histogram keeps its one sample (a cumulative SDK keeps what was
	// recorded), the second run is not in it; the counters are gone.
	expect(t, "closed", tel.metrics(t), map[string]float64{
		"dogpile.region.regeneration.duration.count{dogpile.region=default,outcome=ok}": 1,
	})
	if n := len(tel.spans.GetSpans()); n != 1 {
		t.Fatalf("%d spans, want the one made before Close", n)
	}
}

// TestTwoRegions: two regions instrumented with one MeterProvider are
// reported apart, by dogpile.region.
func TestTwoRegions(t *testing.T) {
	tel := newTelemetry(t)
	var want = map[string]float64{}
	for i, name := range []string{"a", "b"} {
		r := region.New(memory.New(), region.WithName(name), region.WithExpiration(time.Minute))
		t.Cleanup(func() { _ = r.Close() })
		inst, err := dogpileotel.Instrument(r, dogpileotel.WithMeterProvider(tel.mp), dogpileotel.WithTracerProvider(tel.tp))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = inst.Close() })
		for range i + 1 {
			if _, err := region.GetOrCreate(bg, r, "k", func(context.Context) (int, error) { return 1, nil }); err != nil {
				t.Fatal(err)
			}
		}
		for k, v := range counts(name, map[string]float64{
			"dogpile.region.misses": 1, "dogpile.region.regenerations": 1, "dogpile.region.hits": float64(i),
			"dogpile.region.regeneration.duration.count{dogpile.region=" + name + ",outcome=ok}": 1,
		}) {
			want[k] = v
		}
	}
	expect(t, "two regions", tel.metrics(t), want)
}

func TestInstrumentNil(t *testing.T) {
	if _, err := dogpileotel.Instrument(nil); err == nil {
		t.Fatal("Instrument(nil) returned no error")
	}
}

func TestTables(t *testing.T) {
	got := dogpileotel.Tables([]string{"users", "*", "key:top", "posts#rows", "posts#user_id=n1", "\x00every", "posts"})
	if fmt.Sprint(got) != "[users posts]" {
		t.Fatalf("Tables = %q", got)
	}
}
