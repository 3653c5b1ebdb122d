package dogpileotel_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/codes"

	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	dogpileotel "github.com/dogpile-go/dogpile/otel"
	"github.com/dogpile-go/dogpile/otel/internal/redisserver"
	"github.com/dogpile-go/dogpile/region"
)

// tally counts the events a plain observer is told of, to check the
// OpenTelemetry counters against.
type tally struct {
	mu       sync.Mutex
	byOp     map[string]int
	breakers []bool
}

func (c *tally) Observe(_ context.Context, e region.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch e.Kind {
	case region.EventBackendError:
		c.byOp[e.Op]++
	case region.EventBreaker:
		c.breakers = append(c.breakers, e.Open)
	}
}

func (c *tally) snapshot() (map[string]int, []bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int{}
	for k, v := range c.byOp {
		m[k] = v
	}
	return m, append([]bool(nil), c.breakers...)
}

// TestRedisOutage: a region over a real Redis, which is killed and
// started again. While it is down the backend errors are counted by
// operation (exactly as the region's events and Stats count them), the
// invalidation written meanwhile is counted as failed, the breaker gauge
// is 1; once Redis is back the breaker gauge is 0, the invalidation is
// counted as retried, and the backend calls were spans, in error while
// Redis was down.
func TestRedisOutage(t *testing.T) {
	tel := newTelemetry(t)
	srv := redisserver.Start(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	const failures = 3
	b := redisbackend.New(client, redisbackend.WithPrefix("otel:"), redisbackend.WithTimeout(300*time.Millisecond),
		redisbackend.WithBreaker(failures, 200*time.Millisecond))
	counted := &tally{byOp: map[string]int{}}
	r := region.New(dogpileotel.WrapBackend(b, "shared", dogpileotel.WithTracerProvider(tel.tp)),
		region.WithName("shared"), region.WithExpiration(time.Minute), region.WithObserver(counted))
	t.Cleanup(func() { _ = r.Close() })
	inst, err := dogpileotel.Instrument(r, dogpileotel.WithMeterProvider(tel.mp), dogpileotel.WithTracerProvider(tel.tp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Close() })
	get := func(key string) (int, error) {
		return region.GetOrCreate(bg, r, key, func(context.Context) (int, error) { return 42, nil }, region.WithTags("users"))
	}

	// Up: a miss, then a hit; the breaker is closed.
	for range 2 {
		if v, err := get("k"); err != nil || v != 42 {
			t.Fatalf("with Redis up: %v, %v", v, err)
		}
	}
	expect(t, "Redis up", tel.metrics(t), counts("shared", map[string]float64{
		"dogpile.region.hits": 1, "dogpile.region.misses": 1, "dogpile.region.regenerations": 1,
		"dogpile.region.breaker.open": 0,
		"dogpile.region.regeneration.duration.count{dogpile.region=shared,outcome=ok}": 1,
	}))
	checkBackendSpans(t, tel, false)
	tel.spans.Reset()

	// Down: reads fail (the caller still gets its value, made by its
	// creator), an invalidation fails, the breaker opens.
	srv.Kill()
	if v, err := get("k"); err != nil || v != 42 {
		t.Fatalf("with Redis down: %v, %v", v, err)
	}
	if err := r.InvalidateTags(bg, "users"); err == nil {
		t.Fatal("InvalidateTags with Redis down returned no error")
	}
	breakerOpen := func() bool { open, _ := r.BreakerOpen(); return open }
	for i := 0; !breakerOpen(); i++ {
		if i == failures {
			t.Fatalf("the breaker is still closed after %d more failing reads", i)
		}
		if _, err := get(fmt.Sprint("down", i)); err != nil {
			t.Fatal(err)
		}
	}
	p := stable(t, tel, counted)
	if p["dogpile.region.breaker.open{dogpile.region=shared}"] != 1 {
		t.Fatalf("breaker gauge %v while the breaker is open", p["dogpile.region.breaker.open{dogpile.region=shared}"])
	}
	if v := p["dogpile.region.invalidation.failures{dogpile.region=shared}"]; v < 1 {
		t.Fatalf("invalidation.failures = %v, want the failed InvalidateTags counted", v)
	}
	if v := p["dogpile.region.invalidation.retried{dogpile.region=shared}"]; v != 0 {
		t.Fatalf("invalidation.retried = %v while Redis is down", v)
	}
	if p["dogpile.region.backend.errors{dogpile.region=shared,op=read}"] < 1 || p["dogpile.region.backend.errors{dogpile.region=shared,op=invalidate}"] < 1 {
		t.Fatalf("backend errors by op: read %v, invalidate %v; want both counted",
			p["dogpile.region.backend.errors{dogpile.region=shared,op=read}"], p["dogpile.region.backend.errors{dogpile.region=shared,op=invalidate}"])
	}
	checkBackendSpans(t, tel, true)

	// Back: the retrier lands the invalidation, the breaker closes.
	srv.Restart()
	waitFor(t, "the invalidation to be retried and the breaker to close", func() bool {
		open, _ := r.BreakerOpen()
		return !open && r.Stats().InvalidationsRetried == 1
	})
	if v, err := get("k"); err != nil || v != 42 {
		t.Fatalf("with Redis back: %v, %v", v, err)
	}
	p = stable(t, tel, counted)
	s := r.Stats()
	for k, want := range map[string]float64{
		"dogpile.region.breaker.open": 0,
		// InvalidateTags failed once; the retrier's failed attempts are
		// backend errors, not more failures.
		"dogpile.region.invalidation.failures":                             1,
		"dogpile.region.invalidation.retried":                              1,
		"dogpile.region.invalidations":                                     1, // the retried one: the first attempt never reached Redis
		"dogpile.region.invalidation.retries":                              float64(s.InvalidationRetries),
		"dogpile.region.errors":                                            float64(s.Errors),
		"dogpile.region.regenerations":                                     float64(s.Regenerations),
		"dogpile.region.not_stored{dogpile.region=shared,reason=bypassed}": float64(s.NotStoredBy.Bypassed),
	} {
		if k[len(k)-1] != '}' {
			k += "{dogpile.region=shared}"
		}
		if p[k] != want {
			t.Fatalf("%s = %v, want %v (stats %+v)", k, p[k], want, s)
		}
	}
	if s.InvalidationRetries < 1 || s.Errors < failures || s.InvalidationFailures != 1 {
		t.Fatalf("stats after the outage: %+v", s)
	}
	_, breakers := counted.snapshot()
	if len(breakers) < 2 || !breakers[0] || breakers[len(breakers)-1] {
		t.Fatalf("breaker changes %v: want it opened first and closed last", breakers)
	}
}

// stable collects the metrics until the backend errors by op agree exactly
// with the events the plain observer counted and their total with
// Stats.Errors: the region's retrier may fail again between two readings,
// so they are read until no event came between them.
func stable(t *testing.T, tel *telemetry, c *tally) points {
	t.Helper()
	var last string
	for range 200 {
		before, _ := c.snapshot()
		p := tel.metrics(t)
		after, _ := c.snapshot()
		if fmt.Sprint(before) != fmt.Sprint(after) {
			continue // an event came meanwhile
		}
		total := 0
		agree := true
		for op, n := range before {
			total += n
			if p["dogpile.region.backend.errors{dogpile.region=shared,op="+op+"}"] != float64(n) {
				agree = false
			}
		}
		for k := range p.dogpile() {
			var op string
			if _, err := fmt.Sscanf(k, "dogpile.region.backend.errors{dogpile.region=shared,op=%s", &op); err == nil {
				if _, ok := before[op[:len(op)-1]]; !ok {
					agree = false
				}
			}
		}
		if agree && p["dogpile.region.errors{dogpile.region=shared}"] == float64(total) {
			return p
		}
		last = fmt.Sprintf("events %v, metrics %v", before, p.dogpile())
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the backend error metrics never agreed with the events: %s", last)
	return nil
}

// checkBackendSpans checks the spans of the wrapped backend's calls: each
// named after its operation with the region and operation attributes, the
// reads with their hits and misses; in error when down, none in error when
// up.
func checkBackendSpans(t *testing.T, tel *telemetry, down bool) {
	t.Helper()
	names := map[string]int{}
	failed := 0
	for _, s := range tel.spans.GetSpans() {
		if s.Name == "dogpile.regenerate" {
			continue
		}
		names[s.Name]++
		a := spanAttrs(s.Attributes)
		op := a["dogpile.backend.op"].AsString()
		if s.Name != "dogpile.backend."+op || a["dogpile.region"].AsString() != "shared" {
			t.Fatalf("span %q with attributes %v", s.Name, s.Attributes)
		}
		if s.Status.Code == codes.Error {
			failed++
			if !down {
				t.Fatalf("span %q in error with Redis up: %v", s.Name, s.Status)
			}
			continue
		}
		if op == region.OpGetMulti {
			if _, ok := a["dogpile.backend.hits"]; !ok {
				t.Fatalf("read span without hits: %v", s.Attributes)
			}
		}
	}
	if names["dogpile.backend.get_multi"] == 0 {
		t.Fatalf("no read span among %v", names)
	}
	if down && failed == 0 {
		t.Fatalf("no span in error with Redis down: %v", names)
	}
	if !down {
		// The miss read the key and found nothing; the hit found it.
		var hits, misses int64
		for _, s := range tel.spans.GetSpans() {
			if s.Name == "dogpile.backend.get_multi" {
				a := spanAttrs(s.Attributes)
				hits += a["dogpile.backend.hits"].AsInt64()
				misses += a["dogpile.backend.misses"].AsInt64()
			}
		}
		if hits == 0 || misses == 0 {
			t.Fatalf("read spans counted %d hits and %d misses: want both", hits, misses)
		}
	}
}
