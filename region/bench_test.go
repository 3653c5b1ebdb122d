package region_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// The hit path of a region against its floor: the backend lookup and the
// decode that any cache in front of the same backend has to do. Compare them
// with scripts/bench-region.sh, which prints the region/baseline ratios.

// benchUser is the small struct of the benchmarks.
type benchUser struct {
	ID     int64
	Name   string
	Email  string
	Active bool
}

func benchSmall() benchUser {
	return benchUser{ID: 42, Name: "Alice Liddell", Email: "alice@example.com", Active: true}
}

func benchSlice25() []benchUser {
	s := make([]benchUser, 25)
	for i := range s {
		s[i] = benchUser{ID: int64(i), Name: fmt.Sprintf("user %d", i), Email: fmt.Sprintf("user%d@example.com", i), Active: i%2 == 0}
	}
	return s
}

const benchExpiration = 10 * time.Minute

// benchRegion returns a region named "bench" over a fresh memory backend.
func benchRegion() (*region.Region, *memory.Backend) {
	b := memory.New(memory.WithMaxBytes(64 << 20))
	return region.New(b, region.WithName("bench"), region.WithExpiration(benchExpiration)), b
}

// mustCreateNever is a creator for benchmarks of hits: it counts its calls,
// and the benchmark fails if it ran.
func mustCreateNever[T any](calls *atomic.Int64) func(context.Context) (T, error) {
	return func(context.Context) (T, error) {
		calls.Add(1)
		var zero T
		return zero, nil
	}
}

func checkNoCreate(b *testing.B, r *region.Region, calls *atomic.Int64) {
	b.Helper()
	if n := calls.Load(); n != 0 {
		b.Fatalf("creator ran %d times during a hit benchmark", n)
	}
	if st := r.Stats(); st.Misses != 0 || st.DecodeFailures != 0 || st.Errors != 0 {
		b.Fatalf("hit benchmark saw misses or failures: %+v", st)
	}
}

// benchHit runs GetOrCreate hits of one key, stored beforehand.
func benchHit[T any](b *testing.B, v T, opts ...region.CallOption) {
	ctx := context.Background()
	r, _ := benchRegion()
	if err := r.Set(ctx, "k", v, opts...); err != nil {
		b.Fatal(err)
	}
	var calls atomic.Int64
	create := mustCreateNever[T](&calls)
	// One hit before timing, so a value stored wrongly fails loudly.
	if _, err := region.GetOrCreate(ctx, r, "k", create, opts...); err != nil {
		b.Fatal(err)
	}
	checkNoCreate(b, r, &calls)

	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := region.GetOrCreate(ctx, r, "k", create, opts...); err != nil {
				b.Fatal(err)
			}
		}
		checkNoCreate(b, r, &calls)
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var failed atomic.Pointer[error]
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := region.GetOrCreate(ctx, r, "k", create, opts...); err != nil {
					failed.Store(&err)
				}
			}
		})
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
		checkNoCreate(b, r, &calls)
	})
}

// benchBaseline runs the floor of a hit: the backend lookup of one key holding
// the bare msgpack of v, and its decode into a new value.
func benchBaseline[T any](b *testing.B, v T) {
	ctx := context.Background()
	_, backend := benchRegion()
	codec := region.MsgpackCodec{}
	raw, err := codec.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	// The region stores caller key "k" at "bench:k:k"; the baseline's key
	// has the same shape.
	const key = "basel:k:k"
	if err := backend.SetMulti(ctx, []region.Item{{Key: key, Value: raw, TTL: 2 * benchExpiration}}); err != nil {
		b.Fatal(err)
	}
	lookup := func() error {
		vals, err := backend.GetMulti(ctx, []string{key})
		if err != nil {
			return err
		}
		if vals[0] == nil {
			return fmt.Errorf("baseline key %q missing", key)
		}
		var out T
		return codec.Unmarshal(vals[0], &out)
	}
	if err := lookup(); err != nil {
		b.Fatal(err)
	}

	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := lookup(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var failed atomic.Pointer[error]
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := lookup(); err != nil {
					failed.Store(&err)
				}
			}
		})
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
	})
}

func BenchmarkGetOrCreateHit(b *testing.B) {
	b.Run("small-struct", func(b *testing.B) { benchHit(b, benchSmall()) })
	b.Run("slice-25", func(b *testing.B) { benchHit(b, benchSlice25()) })
}

func BenchmarkBaselineLookupDecode(b *testing.B) {
	b.Run("small-struct", func(b *testing.B) { benchBaseline(b, benchSmall()) })
	b.Run("slice-25", func(b *testing.B) { benchBaseline(b, benchSlice25()) })
}

// BenchmarkGetOrCreateTaggedHit is a hit of a value stored WithTags("users"):
// the read also fetches the tag's counter and pending marker.
func BenchmarkGetOrCreateTaggedHit(b *testing.B) {
	b.Run("small-struct", func(b *testing.B) { benchHit(b, benchSmall(), region.WithTags("users")) })
}

// BenchmarkGetOrCreateMultiHit reads 10 keys, all stored beforehand, in one
// call.
func BenchmarkGetOrCreateMultiHit(b *testing.B) {
	ctx := context.Background()
	r, _ := benchRegion()
	keys := make([]string, 10)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
		if err := r.Set(ctx, keys[i], benchUser{ID: int64(i), Name: "user", Email: "user@example.com"}); err != nil {
			b.Fatal(err)
		}
	}
	var calls atomic.Int64
	create := func(_ context.Context, missing []string) (map[string]benchUser, error) {
		calls.Add(int64(len(missing)))
		return nil, nil
	}
	get := func() error {
		m, err := region.GetOrCreateMulti(ctx, r, keys, create)
		if err == nil && len(m) != len(keys) {
			err = fmt.Errorf("got %d values for %d keys", len(m), len(keys))
		}
		return err
	}
	if err := get(); err != nil {
		b.Fatal(err)
	}
	b.Run("10-keys/serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := get(); err != nil {
				b.Fatal(err)
			}
		}
		checkNoCreate(b, r, &calls)
	})
	b.Run("10-keys/parallel", func(b *testing.B) {
		b.ReportAllocs()
		var failed atomic.Pointer[error]
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := get(); err != nil {
					failed.Store(&err)
				}
			}
		})
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
		checkNoCreate(b, r, &calls)
	})
}

// BenchmarkLoadTaggedHit is the region's part of a GORM plugin hit: Load of
// one key (as long as the plugin's) with a Loader that only takes the
// payload, and the call's tags built once (the plugin keeps them per SQL
// text). It isolates the read and the classification from any decode.
func BenchmarkLoadTaggedHit(b *testing.B) {
	ctx := context.Background()
	r, _ := benchRegion()
	opts := []region.CallOption{region.WithTags("users")}
	const key = "q:0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	if err := r.Set(ctx, key, benchSmall(), opts...); err != nil {
		b.Fatal(err)
	}
	l := &peekLoader{}
	keys := []string{key}
	if err := r.Load(ctx, keys, l, opts...); err != nil || l.n == 0 {
		b.Fatalf("first hit: %v, %d bytes", err, l.n)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Load(ctx, keys, l, opts...); err != nil {
			b.Fatal(err)
		}
	}
	if st := r.Stats(); st.Misses != 0 || st.DecodeFailures != 0 || st.Errors != 0 {
		b.Fatalf("hit benchmark saw misses or failures: %+v", st)
	}
}

// peekLoader is a Loader whose Decode only notes the payload's length.
type peekLoader struct{ n int }

func (l *peekLoader) Create(context.Context, []string) (map[string]any, error) {
	return nil, fmt.Errorf("creator ran during a hit benchmark")
}

func (l *peekLoader) Decode(_ string, _ region.Codec, payload []byte) error {
	l.n = len(payload)
	return nil
}

func (l *peekLoader) Adopt(string, any, bool) bool { return true }

// BenchmarkFuncHit compares a hit of a Func with a GetOrCreate hit of the
// same key in the same region: what the Func adds is making the key from
// its argument (an int here, encoded without reflection, in recycled
// memory). The target is a ratio of at most 1.1.
func BenchmarkFuncHit(b *testing.B) {
	ctx := context.Background()
	r, _ := benchRegion()
	var calls atomic.Int64
	getUser := region.Func(r, "users.get", func(context.Context, int) (benchUser, error) {
		calls.Add(1)
		return benchUser{}, nil
	})
	key, err := getUser.Key(42)
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Set(ctx, key, benchSmall()); err != nil {
		b.Fatal(err)
	}
	create := mustCreateNever[benchUser](&calls)
	b.Run("func", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := getUser.Get(ctx, 42); err != nil {
				b.Fatal(err)
			}
		}
		checkNoCreate(b, r, &calls)
	})
	b.Run("getorcreate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := region.GetOrCreate(ctx, r, key, create); err != nil {
				b.Fatal(err)
			}
		}
		checkNoCreate(b, r, &calls)
	})
}

// BenchmarkFuncHitPaired measures the ratio of BenchmarkFuncHit on a busy
// machine: it alternates blocks of Func hits and GetOrCreate hits of the
// same key, timing each block, so that both see the same load, and reports
// the ns per hit of each (func-ns/hit, getorcreate-ns/hit) and their ratio
// (func/getorcreate).
func BenchmarkFuncHitPaired(b *testing.B) {
	ctx := context.Background()
	r, _ := benchRegion()
	var calls atomic.Int64
	getUser := region.Func(r, "users.get", func(context.Context, int) (benchUser, error) {
		calls.Add(1)
		return benchUser{}, nil
	})
	key, err := getUser.Key(42)
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Set(ctx, key, benchSmall()); err != nil {
		b.Fatal(err)
	}
	create := mustCreateNever[benchUser](&calls)
	const block = 256
	var funcTime, gocTime time.Duration
	hits := 0
	for b.Loop() {
		start := time.Now()
		for range block {
			if _, err := getUser.Get(ctx, 42); err != nil {
				b.Fatal(err)
			}
		}
		mid := time.Now()
		for range block {
			if _, err := region.GetOrCreate(ctx, r, key, create); err != nil {
				b.Fatal(err)
			}
		}
		funcTime += mid.Sub(start)
		gocTime += time.Since(mid)
		hits += block
	}
	checkNoCreate(b, r, &calls)
	b.ReportMetric(float64(funcTime)/float64(hits), "func-ns/hit")
	b.ReportMetric(float64(gocTime)/float64(hits), "getorcreate-ns/hit")
	b.ReportMetric(float64(funcTime)/float64(gocTime), "func/getorcreate")
}
