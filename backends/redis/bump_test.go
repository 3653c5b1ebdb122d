package redisbackend

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// Each phase of a tag invalidation is one round trip however many tags it
// carries, and leaves the counters and markers as the per-tag protocol did:
// every counter moved, every marker counting the writer in between the
// phases (with the lease as its time to live) and out after.
func TestBumpTagsOneRoundTripPerPhase(t *testing.T) {
	check := func(t *testing.T, client goredis.UniversalClient, raw goredis.UniversalClient) {
		hook := &countHook{} // a command or a pipeline: one round trip
		client.AddHook(hook)
		prefix := uniquePrefix(t)
		r := region.New(newBackend(t, client, WithPrefix(prefix)), region.WithName("bump"),
			region.WithInvalidationLease(time.Minute))
		t.Cleanup(func() { _ = r.Close() })
		ctx := context.Background()
		tags := []string{"users", "*", "users#rows", "posts", "posts#user_id=n7"}
		counter := func(tag string) string { return prefix + ":bump:t:{bump:" + tag + "}" }
		marker := func(tag string) string { return prefix + ":bump:p:{bump:" + tag + "}" }

		// Warm up: the connection's handshake and the script's first load
		// (EVALSHA answered NOSCRIPT, then EVAL) are not part of a phase.
		if err := r.InvalidateTags(ctx, "warm-up"); err != nil {
			t.Fatal(err)
		}
		// Counters exist first (as after the reads that stamped entries).
		for _, tg := range tags {
			if err := raw.Set(ctx, counter(tg), 100, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		hook.n.Store(0)
		if err := r.PreInvalidateTags(ctx, tags...); err != nil {
			t.Fatal(err)
		}
		if n := hook.n.Load(); n != 1 {
			t.Errorf("PreInvalidateTags of %d tags: %d round trips; want 1", len(tags), n)
		}
		for _, tg := range tags {
			if v, _ := raw.Get(ctx, counter(tg)).Int64(); v != 101 {
				t.Errorf("counter of %q = %d after the first phase; want 101", tg, v)
			}
			if v, _ := raw.Get(ctx, marker(tg)).Int64(); v != 1 {
				t.Errorf("marker of %q = %d between the phases; want 1", tg, v)
			}
			if ttl := raw.PTTL(ctx, marker(tg)).Val(); ttl <= 0 || ttl > time.Minute {
				t.Errorf("marker of %q expires in %v; want the lease", tg, ttl)
			}
		}
		hook.n.Store(0)
		if err := r.PostInvalidateTags(ctx, tags...); err != nil {
			t.Fatal(err)
		}
		if n := hook.n.Load(); n != 1 {
			t.Errorf("PostInvalidateTags of %d tags: %d round trips; want 1", len(tags), n)
		}
		for _, tg := range tags {
			if v, _ := raw.Get(ctx, counter(tg)).Int64(); v != 102 {
				t.Errorf("counter of %q = %d after the second phase; want 102", tg, v)
			}
			if v, _ := raw.Get(ctx, marker(tg)).Int64(); v != 0 {
				t.Errorf("marker of %q = %d after the second phase; want 0", tg, v)
			}
		}
		// A tag never seen gets a counter of its own, not 1.
		hook.n.Store(0)
		if err := r.InvalidateTags(ctx, "fresh"); err != nil {
			t.Fatal(err)
		}
		if v, _ := raw.Get(ctx, counter("fresh")).Int64(); v <= 1 {
			t.Errorf("a missing counter bumped to %d; want a fresh start", v)
		}
		if n := hook.n.Load(); n != 1 {
			t.Errorf("InvalidateTags: %d round trips; want 1", n)
		}
	}
	t.Run("single", func(t *testing.T) {
		srv := testharness.SharedRedis(t)
		check(t, newClient(t, srv.Addr), newClient(t, srv.Addr))
	})
	t.Run("cluster", func(t *testing.T) {
		cl := testharness.RedisCluster(t, 3)
		check(t, newClusterClient(t, cl.Addrs), newClusterClient(t, cl.Addrs))
	})
}

// A counter that holds what INCR cannot take (overwritten with text, or a
// key of another type) is repaired by the next invalidation, which lands:
// the entries stamped with what it held become misses, instead of the
// invalidation failing for ever and those entries being served.
func TestBumpTagsRepairsUnreadableCounters(t *testing.T) {
	b, raw := shared(t)
	r := region.New(b, region.WithName("repair"))
	t.Cleanup(func() { _ = r.Close() })
	ctx := context.Background()
	prefix := b.Key("")
	counter := func(tag string) string { return prefix + "repair:t:{repair:" + tag + "}" }
	for _, c := range []struct {
		name    string
		corrupt func(key string) error
	}{
		{"text", func(key string) error { return raw.Set(ctx, key, "not a number", 0).Err() }},
		{"float", func(key string) error { return raw.Set(ctx, key, "1.5", 0).Err() }},
		{"wrong type", func(key string) error {
			if err := raw.Del(ctx, key).Err(); err != nil {
				return err
			}
			return raw.RPush(ctx, key, "x").Err()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tag := "tag-" + c.name
			calls := 0
			get := func() int {
				v, err := region.GetOrCreate(ctx, r, "k-"+c.name, func(context.Context) (int, error) { calls++; return calls, nil }, region.WithTags(tag))
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			if first, again := get(), get(); first != 1 || again != 1 {
				t.Fatal("the value was not cached")
			}
			if err := c.corrupt(counter(tag)); err != nil {
				t.Fatal(err)
			}
			// The entry no longer matches a readable counter: a miss, made
			// again (and cached under whatever the counter reads as).
			if err := r.InvalidateTags(ctx, tag); err != nil {
				t.Fatalf("InvalidateTags over a corrupted counter: %v; want it repaired", err)
			}
			if v, _ := raw.Get(ctx, counter(tag)).Int64(); v <= 1 {
				t.Errorf("repaired counter = %d; want a fresh start", v)
			}
			if v := get(); v == 1 {
				t.Errorf("after the repaired invalidation the old value %d is served", v)
			}
			before := calls
			if err := r.InvalidateTags(ctx, tag); err != nil {
				t.Fatal(err)
			}
			if get(); calls != before+1 {
				t.Errorf("a later invalidation did not reach the entry (creator calls %d → %d)", before, calls)
			}
		})
	}
}
