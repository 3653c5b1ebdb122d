package memcachebackend

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// The hit path of a region over memcached against its floor: a bare
// gomemcache Get of the same payload plus the region's decode of it
// (region.MsgpackCodec). Run them together:
//
//	go test -run '^$' -bench 'MemcacheRawGetDecode|RegionHit' -benchmem -count=5 ./backends/memcache/
//
// On a busy machine the two drift apart between runs; BenchmarkHitVsRaw
// interleaves them, one of each per iteration, and reports each one's mean
// and their ratio.

type benchUser struct {
	ID     int64
	Name   string
	Email  string
	Active bool
}

var benchValue = benchUser{ID: 42, Name: "Alice Liddell", Email: "alice@example.com", Active: true}

// benchServer starts the benchmark's memcached, once per benchmark.
func benchServer(b *testing.B) string { return testharness.Memcached(b).Addr }

// BenchmarkMemcacheRawGetDecode is the floor: a gomemcache Get, on a
// client with the settings Open gives its own, and the region's msgpack
// decode.
func BenchmarkMemcacheRawGetDecode(b *testing.B) {
	c := memcache.New(benchServer(b))
	c.Timeout, c.MaxIdleConns = time.Second, DefaultMaxIdleConns
	b.Cleanup(func() { _ = c.Close() })
	codec := region.MsgpackCodec{}
	payload, err := codec.Marshal(benchValue)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Set(&memcache.Item{Key: "raw", Value: payload}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		it, err := c.Get("raw")
		if err != nil {
			b.Fatal(err)
		}
		var u benchUser
		if err := codec.Unmarshal(it.Value, &u); err != nil || u.ID != 42 {
			b.Fatal(u, err)
		}
	}
}

// BenchmarkRegionHit is region.GetOrCreate on a fresh hit: one multi-get
// of the entry and the region's invalidation record, the envelope check and
// the decode, over a backend made by Open (operations in the caller's
// goroutine).
func BenchmarkRegionHit(b *testing.B) {
	be, err := Open([]string{benchServer(b)}, WithTimeout(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	benchRegionHit(b, be)
}

// BenchmarkRegionHitGoroutineTimeout is BenchmarkRegionHit over the
// caller's client with gomemcache's default socket timeout (500ms, longer
// than the backend's 100ms), so that the backend bounds each operation
// with a goroutine of its own.
func BenchmarkRegionHitGoroutineTimeout(b *testing.B) {
	c := memcache.New(benchServer(b))
	c.MaxIdleConns = DefaultMaxIdleConns
	b.Cleanup(func() { _ = c.Close() })
	be := New(c)
	b.Cleanup(func() { _ = be.Close() })
	if be.direct(context.Background()) {
		b.Fatal("the backend runs operations in the caller's goroutine")
	}
	benchRegionHit(b, be)
}

func benchRegionHit(b *testing.B, be *Backend) {
	r := region.New(be, region.WithName("bench"), region.WithExpiration(10*time.Minute))
	b.Cleanup(func() { _ = r.Close() })
	ctx := context.Background()
	var calls atomic.Int64
	create := func(context.Context) (benchUser, error) {
		calls.Add(1)
		return benchValue, nil
	}
	if _, err := region.GetOrCreate(ctx, r, "user:42", create); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		u, err := region.GetOrCreate(ctx, r, "user:42", create)
		if err != nil || u.ID != 42 {
			b.Fatal(u, err)
		}
	}
	b.StopTimer()
	if n := calls.Load(); n != 1 {
		b.Fatalf("creator ran %d times; want once, before the loop", n)
	}
}

// BenchmarkHitVsRaw alternates a region hit (BenchmarkRegionHit) and a bare
// Get plus decode (BenchmarkMemcacheRawGetDecode) on the same server, and
// reports the mean of each (hit-ns/op, raw-ns/op) and hit/raw: both meet
// the same load.
func BenchmarkHitVsRaw(b *testing.B) {
	addr := benchServer(b)
	c := memcache.New(addr)
	c.Timeout, c.MaxIdleConns = time.Second, DefaultMaxIdleConns
	b.Cleanup(func() { _ = c.Close() })
	codec := region.MsgpackCodec{}
	payload, err := codec.Marshal(benchValue)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Set(&memcache.Item{Key: "raw", Value: payload}); err != nil {
		b.Fatal(err)
	}
	be, err := Open([]string{addr}, WithTimeout(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	r := region.New(be, region.WithName("bench"), region.WithExpiration(10*time.Minute))
	b.Cleanup(func() { _ = r.Close() })
	ctx := context.Background()
	var calls atomic.Int64
	create := func(context.Context) (benchUser, error) {
		calls.Add(1)
		return benchValue, nil
	}
	if _, err := region.GetOrCreate(ctx, r, "user:42", create); err != nil {
		b.Fatal(err)
	}
	var hit, raw time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		u, err := region.GetOrCreate(ctx, r, "user:42", create)
		if err != nil || u.ID != 42 {
			b.Fatal(u, err)
		}
		t1 := time.Now()
		it, err := c.Get("raw")
		if err != nil {
			b.Fatal(err)
		}
		var v benchUser
		if err := codec.Unmarshal(it.Value, &v); err != nil || v.ID != 42 {
			b.Fatal(v, err)
		}
		t2 := time.Now()
		hit += t1.Sub(t0)
		raw += t2.Sub(t1)
	}
	b.StopTimer()
	if n := calls.Load(); n != 1 {
		b.Fatalf("creator ran %d times; want once, before the loop", n)
	}
	b.ReportMetric(float64(hit.Nanoseconds())/float64(b.N), "hit-ns/op")
	b.ReportMetric(float64(raw.Nanoseconds())/float64(b.N), "raw-ns/op")
	b.ReportMetric(float64(hit)/float64(raw), "hit/raw")
}
