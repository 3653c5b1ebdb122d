package region_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// TestWrappedMemoryStaysLocal: a memory backend behind wrappers is still
// treated as local: the region keeps its record in the process and reads a
// hit with one lookup (AppendValue), through the wrapper.
func TestWrappedMemoryStaysLocal(t *testing.T) {
	ctx := context.Background()
	m := region.NewMetrics()
	b := region.WrapBackend(memory.New(), m.Wrap, func(b region.Backend) region.Backend { return region.Proxy{Next: b} })
	r := region.New(b, region.WithExpiration(time.Minute))
	defer r.Close()
	if f := region.FeaturesOf(r); f != (region.Features{Local: true, CounterRefs: true, ValueAppender: true}) {
		t.Fatalf("a region over wrapped memory uses %+v", f)
	}
	if r.Backend().Mutex("k") != nil {
		t.Fatal("the wrapped memory backend hands out a Mutex: the region would lock through it")
	}
	if _, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (int, error) { return 1, nil }, region.WithTags("t")); err != nil {
		t.Fatal(err)
	}
	before := m.Snapshot()
	for range 10 {
		if _, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (int, error) { return 2, nil }, region.WithTags("t")); err != nil {
			t.Fatal(err)
		}
	}
	after := m.Snapshot()
	if n := after[region.OpGet].Calls - before[region.OpGet].Calls; n != 10 {
		t.Fatalf("10 hits made %d one-key lookups, want 10", n)
	}
	if n := after[region.OpGetMulti].Calls - before[region.OpGetMulti].Calls; n != 0 {
		t.Fatalf("10 hits made %d GetMulti calls (the record or the tags read from the backend), want 0", n)
	}
	if st := r.Stats(); st.Hits != 10 {
		t.Fatalf("stats %+v", st)
	}
}

// TestWrappedRedisKeepsItsInterfaces: a Redis backend behind the metrics
// wrapper keeps everything the region uses of it: the batched tag bump, the
// operation timeout, and a lock that fences and can be probed; and the
// distributed lock works through it: a second process waits for the
// first's value instead of making its own.
func TestWrappedRedisKeepsItsInterfaces(t *testing.T) {
	ctx := context.Background()
	b1, _ := sharedRedis(t)
	b2, _ := redisOn(t, sharedAddr(t), b1.Key(""))
	m := region.NewMetrics()
	r1 := region.New(region.WrapBackend(b1, m.Wrap), region.WithExpiration(time.Minute))
	r2 := region.New(region.WrapBackend(b2, m.Wrap, func(b region.Backend) region.Backend { return region.Proxy{Next: b} }), region.WithExpiration(time.Minute))
	defer r1.Close()
	defer r2.Close()
	for i, r := range []*region.Region{r1, r2} {
		if f := region.FeaturesOf(r); f != (region.Features{TagBumper: true, Timeout: true}) {
			t.Fatalf("region %d over wrapped Redis uses %+v", i+1, f)
		}
		fencer, prober := region.MutexFeatures(r.Backend().Mutex("k"))
		if !fencer || !prober {
			t.Fatalf("region %d: the wrapped lock is a Fencer %v, a LockProber %v", i+1, fencer, prober)
		}
		if _, known := r.BreakerOpen(); !known {
			t.Fatalf("region %d: the breaker of the wrapped Redis backend is hidden", i+1)
		}
	}
	if region.ActualBackend(r2.Backend()) != region.Backend(b2) {
		t.Fatal("ActualBackend does not find the Redis backend under its wrappers")
	}

	// One tag invalidation: one batched bump, no Incr.
	if err := r1.InvalidateTags(ctx, "a", "b", "c"); err != nil {
		t.Fatal(err)
	}
	if s := m.Snapshot(); s[region.OpBumpTags].Calls != 1 || s[region.OpIncr].Calls != 0 {
		t.Fatalf("InvalidateTags of 3 tags: %d bumps and %d increments, want 1 and 0", s[region.OpBumpTags].Calls, s[region.OpIncr].Calls)
	}

	// Two processes, one value.
	var created atomic.Int64
	release := make(chan struct{})
	create := func(context.Context) (int, error) {
		created.Add(1)
		<-release
		return 7, nil
	}
	first := make(chan error, 1)
	go func() {
		_, err := region.GetOrCreate(ctx, r1, "k", create)
		first <- err
	}()
	waitFor(t, "the first process's creator", func() bool { return r1.Stats().Regenerations == 1 })
	second := make(chan int, 1)
	go func() {
		v, _ := region.GetOrCreate(ctx, r2, "k", create)
		second <- v
	}()
	waitFor(t, "the second process to wait for the lock", func() bool { return r2.Stats().LockWaits >= 1 })
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if v := <-second; v != 7 {
		t.Fatalf("the second process got %d", v)
	}
	if n := created.Load(); n != 1 {
		t.Fatalf("the value was made %d times by two processes, want 1", n)
	}
	// Both took the lock through the wrapper (the second once the first
	// released it, to find the value made), and the second waited.
	if s := m.Snapshot(); s[region.OpLock].Calls < 2 || s[region.OpUnlock].Calls < 1 || s[region.OpWait].Calls < 1 {
		t.Fatalf("lock calls %d, unlock calls %d, waits %d", s[region.OpLock].Calls, s[region.OpUnlock].Calls, s[region.OpWait].Calls)
	}
}

// TestProxyClaimsNothingItsBackendLacks: a Proxy implements every optional
// method, but a region uses one only where the backend under it has it.
func TestProxyClaimsNothingItsBackendLacks(t *testing.T) {
	bare := struct{ region.Backend }{memory.New()} // the Backend methods only
	r := region.New(region.Proxy{Next: bare})
	defer r.Close()
	if f := region.FeaturesOf(r); f != (region.Features{}) {
		t.Fatalf("a region over a Proxy of a bare backend uses %+v", f)
	}
	ctx := context.Background()
	if v, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (int, error) { return 1, nil }); err != nil || v != 1 {
		t.Fatalf("GetOrCreate: %d, %v", v, err)
	}
	if err := r.InvalidateTags(ctx, "t"); err != nil {
		t.Fatal(err)
	}
}

// TestWrapBackendOrder: the first wrapper listed is the outermost.
func TestWrapBackendOrder(t *testing.T) {
	var order []string
	named := func(name string) func(region.Backend) region.Backend {
		return func(b region.Backend) region.Backend { return deleteLogger{region.Proxy{Next: b}, name, &order} }
	}
	b := region.WrapBackend(memory.New(), named("outer"), named("inner"))
	if err := b.Delete(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if len(order) != 2 || order[0] != "outer" || order[1] != "inner" {
		t.Fatalf("calls went through %v", order)
	}
}

// deleteLogger records its name on every Delete.
type deleteLogger struct {
	region.Proxy
	name  string
	order *[]string
}

func (d deleteLogger) Delete(ctx context.Context, keys ...string) error {
	*d.order = append(*d.order, d.name)
	return d.Proxy.Delete(ctx, keys...)
}

// TestMetricsCountsErrors: calls to a backend that is down are counted as
// errors, with their latency.
func TestMetricsCountsErrors(t *testing.T) {
	ctx := context.Background()
	m := region.NewMetrics()
	r := region.New(region.WrapBackend(downBackend(t), m.Wrap))
	defer r.Close()
	if _, err := r.Get(ctx, "k", new(int)); err == nil {
		t.Fatal("Get on a backend that is down returned no error")
	}
	s := m.Snapshot()[region.OpGetMulti]
	if s.Calls != 1 || s.Errors != 1 || s.Max <= 0 || s.Total != s.Max || s.Mean() != s.Max {
		t.Fatalf("get_multi stats %+v", s)
	}
	if q := s.Quantile(0.5); q <= 0 || q > s.Max {
		t.Fatalf("median %v of one call lasting %v", q, s.Max)
	}
}

// TestOpStatsQuantile: quantiles from the histogram are within a factor of
// two above the exact ones.
func TestOpStatsQuantile(t *testing.T) {
	var s region.OpStats
	// 90 calls of 1000ns (bucket 10: [512, 1024)), 10 of 100000ns (bucket
	// 17: [65536, 131072)).
	s.Histogram[10], s.Histogram[17] = 90, 10
	s.Calls, s.Max = 100, 100000*time.Nanosecond
	if q := s.Quantile(0.5); q != 1024 {
		t.Fatalf("median %v, want 1.024µs", q)
	}
	if q := s.Quantile(0.99); q != s.Max {
		t.Fatalf("p99 %v, want the max %v (the bucket's bound exceeds it)", q, s.Max)
	}
	if q := (region.OpStats{}).Quantile(0.5); q != 0 {
		t.Fatalf("no calls: %v", q)
	}
}
