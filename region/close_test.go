package region_test

import (
	"context"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/backends/memory"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/region"
)

// downBackend returns a Redis backend whose server is down: it dials a
// loopback port where nothing listens (taken from a listener, then closed).
// Its client runs no goroutine per operation (ContextTimeoutEnabled) and
// never fails enough dials to start the pool's background re-dialer, so the
// goroutines that come and go are the region's.
func downBackend(t *testing.T) region.Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	client := goredis.NewClient(&goredis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		PoolSize:              1000,
	})
	t.Cleanup(func() { _ = client.Close() })
	b := redisbackend.New(client, redisbackend.WithTimeout(time.Second))
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// regionFrames name the goroutines that regions run by themselves: the
// clock's refresher, the invalidation retrier, and whatever else
// (*background).start creates (a goroutine that has not run yet shows only
// where it was created).
var regionFrames = []string{
	"github.com/dogpile-go/dogpile/region.(*clock).refresh(",
	"github.com/dogpile-go/dogpile/region.(*unconfirmedTags).retry(",
	"created by github.com/dogpile-go/dogpile/region.(*background).start",
}

// regionGoroutines returns the stacks of the goroutines that regions run by
// themselves.
func regionGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, f := range regionFrames {
			if strings.Contains(g, f) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// quiesce waits until no region runs a goroutine of its own: a region of an
// earlier test stops its clock's refresher a second after its last read.
func quiesce(t *testing.T) {
	t.Helper()
	pollUntil(t, "earlier regions' goroutines to end", func() bool { return len(regionGoroutines()) == 0 })
}

// TestCloseStopsGoroutines: with the backend down, a region runs the
// retrier of the invalidation it could not write and the clock's refresher;
// Close stops both, and the goroutine count returns to what it was before
// New. Nothing starts again after Close.
func TestCloseStopsGoroutines(t *testing.T) {
	ctx := context.Background()
	b := downBackend(t)
	quiesce(t)
	before := runtime.NumGoroutine()

	r := region.New(b, region.WithName("close"))
	if err := r.InvalidateTags(ctx, "users"); err == nil {
		t.Fatal("InvalidateTags with the backend down returned no error")
	}
	var v string
	if found, _ := r.Get(ctx, "k", &v); found {
		t.Fatal("Get with the backend down found a value")
	}
	if g := regionGoroutines(); len(g) != 2 {
		t.Fatalf("%d goroutines of the region run; want the retrier and the clock's refresher:\n%s",
			len(g), strings.Join(g, "\n\n"))
	}

	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Goroutines exit asynchronously: poll, with a bound that only turns a
	// leak into a failure (not a timing assertion). Reads go on meanwhile,
	// so a refresher that Close did not stop (or that a read started again)
	// never goes idle.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		_, _ = r.Get(ctx, "k", &v)
		if time.Now().After(deadline) {
			t.Fatalf("after Close %d goroutines run; %d before New. The region's:\n%s",
				runtime.NumGoroutine(), before, strings.Join(regionGoroutines(), "\n\n"))
		}
		time.Sleep(time.Millisecond)
	}

	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := r.InvalidateTags(ctx, "orders"); err == nil {
		t.Fatal("InvalidateTags with the backend down returned no error after Close")
	}
	if found, _ := r.Get(ctx, "k", &v); found {
		t.Fatal("Get with the backend down found a value after Close")
	}
	if g := regionGoroutines(); len(g) != 0 {
		t.Fatalf("a closed region started %d goroutines:\n%s", len(g), strings.Join(g, "\n\n"))
	}
}

// TestClosedRegionWorks: Close may be called concurrently and more than
// once, always returning nil, and a closed region serves, makes, stores and
// invalidates values as before, without starting a goroutine of its own.
func TestClosedRegionWorks(t *testing.T) {
	ctx := context.Background()
	quiesce(t)
	r := region.New(memory.New(), region.WithExpiration(time.Minute))
	calls := 0
	create := func(context.Context) (int, error) {
		calls++
		return calls, nil
	}
	if v, err := region.GetOrCreate(ctx, r, "k", create, region.WithTags("users")); err != nil || v != 1 {
		t.Fatalf("before Close: %v, %v", v, err)
	}

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := r.Close(); err != nil {
				t.Errorf("concurrent Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatalf("Close again: %v", err)
	}

	if v, err := region.GetOrCreate(ctx, r, "k", create, region.WithTags("users")); err != nil || v != 1 || calls != 1 {
		t.Fatalf("a hit after Close: %v, %v, %d creator calls", v, err, calls)
	}
	if err := r.InvalidateTags(ctx, "users"); err != nil {
		t.Fatalf("InvalidateTags after Close: %v", err)
	}
	if v, err := region.GetOrCreate(ctx, r, "k", create, region.WithTags("users")); err != nil || v != 2 || calls != 2 {
		t.Fatalf("after InvalidateTags after Close: %v, %v, %d creator calls; want a new value", v, err, calls)
	}
	if err := r.Set(ctx, "s", "stored"); err != nil {
		t.Fatalf("Set after Close: %v", err)
	}
	var s string
	if found, err := r.Get(ctx, "s", &s); !found || err != nil || s != "stored" {
		t.Fatalf("Get after Close: %v, %v, %q", found, err, s)
	}
	if err := r.Invalidate(ctx, true); err != nil {
		t.Fatalf("Invalidate after Close: %v", err)
	}
	if found, _ := r.Get(ctx, "s", &s); found {
		t.Fatal("a value created before a hard invalidation after Close was found")
	}
	if g := regionGoroutines(); len(g) != 0 {
		t.Fatalf("a closed region started %d goroutines:\n%s", len(g), strings.Join(g, "\n\n"))
	}
}
