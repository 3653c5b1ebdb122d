package redisbackend

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// The hit path of a region over Redis against its floor: a bare go-redis GET
// of the same payload plus its msgpack decode. Run them together:
//
//	go test -run '^$' -bench 'RedisRawGetDecode|RegionHit' -benchmem ./backends/redis/

type benchUser struct {
	ID     int64
	Name   string
	Email  string
	Active bool
}

var benchValue = benchUser{ID: 42, Name: "Alice Liddell", Email: "alice@example.com", Active: true}

func benchClient(b *testing.B, ctxDeadlines bool) *goredis.Client {
	srv := testharness.SharedRedis(b)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr, ContextTimeoutEnabled: ctxDeadlines})
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkRedisRawGetDecode is the floor: GET and msgpack.Unmarshal.
func BenchmarkRedisRawGetDecode(b *testing.B) {
	c := benchClient(b, true)
	ctx := context.Background()
	payload, err := msgpack.Marshal(benchValue)
	if err != nil {
		b.Fatal(err)
	}
	key := uniquePrefix(b) + ":raw"
	if err := c.Set(ctx, key, payload, 0).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		raw, err := c.Get(ctx, key).Bytes()
		if err != nil {
			b.Fatal(err)
		}
		var u benchUser
		if err := msgpack.Unmarshal(raw, &u); err != nil || u.ID != 42 {
			b.Fatal(u, err)
		}
	}
}

// BenchmarkRegionHit is region.GetOrCreate on a fresh hit: one MGET of the
// entry and the region's invalidation record, the envelope check and the
// decode. The client applies context deadlines to its sockets (the
// recommended setting).
func BenchmarkRegionHit(b *testing.B) { benchRegionHit(b, true) }

// BenchmarkRegionHitGoroutineTimeout is BenchmarkRegionHit with a client
// that ignores context deadlines, so that the backend bounds each operation
// with a goroutine of its own.
func BenchmarkRegionHitGoroutineTimeout(b *testing.B) { benchRegionHit(b, false) }

func benchRegionHit(b *testing.B, ctxDeadlines bool) {
	be := New(benchClient(b, ctxDeadlines), WithPrefix(uniquePrefix(b)), WithTimeout(time.Second))
	b.Cleanup(func() { _ = be.Close() })
	r := region.New(be, region.WithName("bench"), region.WithExpiration(10*time.Minute))
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
