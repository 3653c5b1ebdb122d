package region_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// calls returns how many calls of op the metrics counted.
func calls(m *region.Metrics, op string) int64 { return m.Snapshot()[op].Calls }

// TestMultiOneRoundTripEach: GetMulti, SetMulti and DeleteMulti of several
// keys each cost one backend call on Redis (SetMulti: one read of the
// region's record and tags, as Set's, and one write), and behave as Get, Set
// and Delete of each key.
func TestMultiOneRoundTripEach(t *testing.T) {
	ctx := context.Background()
	b, _ := sharedRedis(t)
	m := region.NewMetrics()
	r := region.New(region.WrapBackend(b, m.Wrap), region.WithExpiration(time.Minute))
	defer r.Close()
	tags := region.WithTags("users")

	// The first write sets the region's record and the tag's counter.
	if err := r.Set(ctx, "warm", 0, tags); err != nil {
		t.Fatal(err)
	}
	before := m.Snapshot()
	items := map[string]any{"u1": User{ID: 1, Name: "a"}, "u2": User{ID: 2, Name: "b"}, "u3": User{ID: 3, Name: "c"}}
	if err := r.SetMulti(ctx, items, tags); err != nil {
		t.Fatal(err)
	}
	after := m.Snapshot()
	if g, s := after[region.OpGetMulti].Calls-before[region.OpGetMulti].Calls, after[region.OpSetMulti].Calls-before[region.OpSetMulti].Calls; g != 1 || s != 1 {
		t.Fatalf("SetMulti of 3 keys: %d reads and %d writes, want 1 and 1", g, s)
	}
	if n := after[region.OpSetIf].Calls - before[region.OpSetIf].Calls; n != 0 {
		t.Fatalf("SetMulti made %d guarded writes", n)
	}

	reads := calls(m, region.OpGetMulti)
	got, err := region.GetMulti[User](ctx, r, []string{"u1", "u2", "u3", "u4"}, tags)
	if err != nil {
		t.Fatal(err)
	}
	if n := calls(m, region.OpGetMulti) - reads; n != 1 {
		t.Fatalf("GetMulti of 4 keys: %d backend reads, want 1", n)
	}
	if len(got) != 3 || got["u2"].Name != "b" {
		t.Fatalf("GetMulti: %v", got)
	}
	// Each is what Get of its key reads.
	var u User
	if found, err := r.Get(ctx, "u3", &u, tags); err != nil || !found || u.ID != 3 {
		t.Fatalf("Get of a key SetMulti stored: %+v, %v, %v", u, found, err)
	}

	deletes := calls(m, region.OpDelete)
	if err := r.DeleteMulti(ctx, "u1", "u2", "nothing"); err != nil {
		t.Fatal(err)
	}
	if n := calls(m, region.OpDelete) - deletes; n != 1 {
		t.Fatalf("DeleteMulti of 3 keys: %d backend deletes, want 1", n)
	}
	got, err = region.GetMulti[User](ctx, r, []string{"u1", "u2", "u3"}, tags)
	if err != nil || len(got) != 1 || got["u3"].ID != 3 {
		t.Fatalf("GetMulti after DeleteMulti: %v, %v", got, err)
	}

	// Tags: invalidating "users" makes every value stored with it a miss.
	if err := r.InvalidateTags(ctx, "users"); err != nil {
		t.Fatal(err)
	}
	got, err = region.GetMulti[User](ctx, r, []string{"u3"}, tags)
	if err != nil || len(got) != 0 {
		t.Fatalf("GetMulti after the tag's invalidation: %v, %v", got, err)
	}
}

// TestMultiKeyTags: SetMulti and GetMulti read each key's own tags
// (WithKeyTags), so that invalidating one key's tag leaves the others.
func TestMultiKeyTags(t *testing.T) {
	for name, newBackend := range map[string]func(t *testing.T) region.Backend{
		"memory": func(*testing.T) region.Backend { return memory.New() },
		"redis":  func(t *testing.T) region.Backend { b, _ := sharedRedis(t); return b },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			r := region.New(newBackend(t), region.WithExpiration(time.Minute))
			defer r.Close()
			own := region.WithKeyTags(map[string][]string{"a": {"row:a"}, "b": {"row:b"}})
			if err := r.SetMulti(ctx, map[string]any{"a": 1, "b": 2}, region.WithTags("table"), own); err != nil {
				t.Fatal(err)
			}
			if err := r.InvalidateTags(ctx, "row:a"); err != nil {
				t.Fatal(err)
			}
			got, err := region.GetMulti[int](ctx, r, []string{"a", "b"}, region.WithTags("table"), own)
			if err != nil || fmt.Sprint(got) != "map[b:2]" {
				t.Fatalf("after invalidating a's own tag: %v, %v", got, err)
			}
			if err := r.InvalidateTags(ctx, "table"); err != nil {
				t.Fatal(err)
			}
			got, err = region.GetMulti[int](ctx, r, []string{"a", "b"}, region.WithTags("table"), own)
			if err != nil || len(got) != 0 {
				t.Fatalf("after invalidating the shared tag: %v, %v", got, err)
			}
		})
	}
}

// TestMultiExpiryAndRecord: GetMulti serves only fresh values, as Get does:
// not expired ones, nor those made before a hard invalidation; SetMulti's
// values expire as Set's do.
func TestMultiExpiryAndRecord(t *testing.T) {
	ctx := context.Background()
	clock := newManualClock()
	r := region.New(memory.New(), region.WithExpiration(time.Minute), region.WithClock(clock.Now))
	defer r.Close()
	if err := r.SetMulti(ctx, map[string]any{"a": 1, "b": 2}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Second)
	if err := r.Set(ctx, "c", 3); err != nil {
		t.Fatal(err)
	}
	clock.Advance(45 * time.Second) // a and b expired, c fresh
	got, err := region.GetMulti[int](ctx, r, []string{"a", "b", "c"})
	if err != nil || fmt.Sprint(got) != "map[c:3]" {
		t.Fatalf("after a and b expired: %v, %v", got, err)
	}
	if got, _ := region.GetMulti[int](ctx, r, []string{"a", "c"}, region.IgnoreExpiration()); len(got) != 2 {
		t.Fatalf("IgnoreExpiration: %v", got)
	}
	if err := r.Invalidate(ctx, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := region.GetMulti[int](ctx, r, []string{"a", "c"}, region.IgnoreExpiration()); len(got) != 0 {
		t.Fatalf("after a hard invalidation: %v", got)
	}
	st := r.Stats()
	if st.Hits != 3 || st.Misses != 4 {
		t.Fatalf("stats %+v: want 3 hits and 4 misses", st)
	}
}

// TestSetMultiUnencodable: a value that cannot be encoded is an error
// naming its key, and nothing is stored.
func TestSetMultiUnencodable(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New())
	defer r.Close()
	err := r.SetMulti(ctx, map[string]any{"good": 1, "bad": make(chan int)})
	if err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Fatalf("SetMulti with a channel: %v", err)
	}
	if got, _ := region.GetMulti[int](ctx, r, []string{"good"}); len(got) != 0 {
		t.Fatalf("stored %v although SetMulti failed", got)
	}
}
