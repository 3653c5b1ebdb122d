package region_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// The default backend time to live keeps stale values, as dogpile.cache
// does: a key read less often than twice its expiration is still served
// stale at once while one caller regenerates it, instead of being a miss
// that every caller waits for. These tests use the real clock, since the
// backends expire entries by it: with a 100ms expiration, the value is read
// 300ms after it was made (the old default, twice the expiration, had the
// backend drop it at 200ms).

const staleExpiration = 100 * time.Millisecond

// staleReadAfterTTL stores a value in r, waits three expirations, and has
// callers read it at once while its regeneration is held: all but one must
// be served the stale value without waiting.
func staleReadAfterTTL(t *testing.T, r *region.Region) {
	t.Helper()
	ctx := context.Background()
	if err := r.Set(ctx, "k", "old"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * staleExpiration)

	var calls atomic.Int64
	release := make(chan struct{})
	create := func(context.Context) (string, error) {
		calls.Add(1)
		<-release
		return "new", nil
	}
	const callers = 20
	results := make(chan string, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			v, err := region.GetOrCreate(ctx, r, "k", create)
			if err != nil {
				v = err.Error()
			}
			results <- v
		})
	}
	for i := range callers - 1 {
		select {
		case v := <-results:
			if v != "old" {
				t.Fatalf("caller %d got %q during the regeneration, want the stale \"old\"", i, v)
			}
		case <-time.After(eventually):
			close(release)
			t.Fatalf("%d of %d callers were served the stale value; the others waited for the creator (the value was gone)", i, callers-1)
		}
	}
	close(release)
	wg.Wait()
	if v := <-results; v != "new" {
		t.Fatalf("the regenerating caller got %q", v)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the creator ran %d times, want 1", n)
	}
	if st := r.Stats(); st.StaleServed != callers-1 || st.Misses != 0 {
		t.Fatalf("stats %+v: want %d stale served and no miss", st, callers-1)
	}
}

// TestStaleKeptOnMemory: over memory, an expired value stays until the
// backend evicts it for room.
func TestStaleKeptOnMemory(t *testing.T) {
	r := region.New(memory.New(), region.WithExpiration(staleExpiration))
	defer r.Close()
	staleReadAfterTTL(t, r)
}

// TestStaleKeptOnRedis: over Redis, an expired value stays for a generous
// time to live: the expiration plus the larger of the expiration and
// DefaultStaleTTL.
func TestStaleKeptOnRedis(t *testing.T) {
	b, raw := sharedRedis(t)
	r := region.New(b, region.WithExpiration(staleExpiration))
	defer r.Close()
	staleReadAfterTTL(t, r)

	// The time to live of what it stored: a day and 100ms.
	ttl, err := raw.PTTL(context.Background(), b.Key("default:k:k")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := staleExpiration + region.DefaultStaleTTL; ttl > want || ttl < want-time.Minute {
		t.Fatalf("time to live %v, want about %v", ttl, want)
	}
}

// TestStaleTTLOverride: WithStaleTTL still sets the time to live, on every
// backend: the expiration plus the stale TTL; zero or less, none.
func TestStaleTTLOverride(t *testing.T) {
	ctx := context.Background()
	b, raw := sharedRedis(t)
	for _, tc := range []struct {
		name             string
		opts             []region.Option
		wantMin, wantMax time.Duration // of the PTTL; -1: no time to live
	}{
		{"stale ttl", []region.Option{region.WithExpiration(time.Minute), region.WithStaleTTL(time.Hour)}, time.Hour, time.Hour + time.Minute},
		{"no stale ttl", []region.Option{region.WithExpiration(time.Minute), region.WithStaleTTL(0)}, -1, -1},
		{"long expiration", []region.Option{region.WithExpiration(48 * time.Hour)}, 96*time.Hour - time.Minute, 96 * time.Hour},
		{"no expiration", nil, -1, -1},
		{"never expire", []region.Option{region.WithExpiration(time.Minute)}, -1, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := region.New(b, append(tc.opts, region.WithName(tc.name))...)
			defer r.Close()
			var opts []region.CallOption
			if tc.name == "never expire" {
				opts = append(opts, region.ExpireAfter(region.NeverExpire))
			}
			if err := r.Set(ctx, "k", 1, opts...); err != nil {
				t.Fatal(err)
			}
			key := b.Key(tc.name + ":k:k") // the names have no ':' to escape
			ttl, err := raw.PTTL(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantMin < 0 {
				if ttl != -1 {
					t.Fatalf("time to live %v, want none", ttl)
				}
				return
			}
			if ttl < tc.wantMin || ttl > tc.wantMax {
				t.Fatalf("time to live %v, want within [%v, %v]", ttl, tc.wantMin, tc.wantMax)
			}
		})
	}
}
