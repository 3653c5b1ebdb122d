package dogpileotel_test

import (
	"context"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	dogpileotel "github.com/dogpile-go/dogpile/otel"
	"github.com/dogpile-go/dogpile/region"
)

// TestWrapMemory: a memory backend behind WrapBackend stays what the
// region takes it for (no distributed lock, no breaker), the region's
// writes to it are spans, and its hits, read by the one-key lookup of a
// local backend, make none.
func TestWrapMemory(t *testing.T) {
	tel := newTelemetry(t)
	b := dogpileotel.WrapBackend(memory.New(), "local", dogpileotel.WithTracerProvider(tel.tp))
	if b.Mutex("k") != nil {
		t.Fatal("the wrapped memory backend hands out a Mutex")
	}
	r := region.New(b, region.WithName("local"), region.WithExpiration(time.Minute))
	t.Cleanup(func() { _ = r.Close() })
	if _, known := r.BreakerOpen(); known {
		t.Fatal("a region over wrapped memory reports a breaker")
	}
	create := func(context.Context) (int, error) { return 1, nil }
	if _, err := region.GetOrCreate(bg, r, "k", create); err != nil {
		t.Fatal(err)
	}
	after := len(tel.spans.GetSpans())
	if after == 0 {
		t.Fatal("the miss made no backend span (its store)")
	}
	for range 5 {
		if _, err := region.GetOrCreate(bg, r, "k", create); err != nil {
			t.Fatal(err)
		}
	}
	if s := r.Stats(); s.Hits != 5 {
		t.Fatalf("stats %+v", s)
	}
	if n := len(tel.spans.GetSpans()); n != after {
		t.Fatalf("5 hits on wrapped memory made %d spans", n-after)
	}
}

// TestHitAllocs: a hit through the plugin allocates as much with the
// metrics on as off: the instrumentation adds nothing to the hit path. The
// mean over many hits is compared, within half an allocation: the race
// detector makes sync.Pool drop items at random, so a count of one run may
// differ by one.
func TestHitAllocs(t *testing.T) {
	const hits = 3000
	allocs := func(on bool) float64 {
		tel := newTelemetry(t)
		var instrument func(*region.Region)
		if on {
			instrument = func(r *region.Region) {
				inst, err := dogpileotel.Instrument(r, dogpileotel.WithMeterProvider(tel.mp), dogpileotel.WithTracerProvider(tel.tp))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = inst.Close() })
			}
		}
		db, r := gormDB(t, instrument)
		hit := func() {
			var u User
			if err := db.Scopes(dogpile.FromCache("default")).First(&u, 42).Error; err != nil {
				t.Fatal(err)
			}
		}
		hit() // the miss
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range hits {
			hit()
		}
		runtime.ReadMemStats(&after)
		if s := r.Stats(); s.Hits != hits {
			t.Fatalf("%d hits, want %d", s.Hits, hits)
		}
		return float64(after.Mallocs-before.Mallocs) / hits
	}
	off, on := allocs(false), allocs(true)
	t.Logf("allocations per hit: %.2f off, %.2f on", off, on)
	if math.Abs(on-off) >= 0.5 {
		t.Fatalf("a hit allocates %.2f times with the metrics on, %.2f off", on, off)
	}
}
