package region_test

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	filebackend "github.com/dogpile-go/dogpile/backends/file"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/backends/null"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// tagLoader makes the value "v:<key>" for every key.
type tagLoader struct{}

func (tagLoader) Create(_ context.Context, keys []string) (map[string]any, error) {
	out := map[string]any{}
	for _, k := range keys {
		out[k] = "v:" + k
	}
	return out, nil
}
func (tagLoader) Decode(string, region.Codec, []byte) error { return nil }
func (tagLoader) Adopt(string, any, bool) bool              { return true }

// TestInspect lists a region's entries and counts them on every backend
// that can list its keys: a single Redis, a Redis Cluster (keys on every
// master), memory and file.
func TestInspect(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testInspect(t, memory.New()) })
	t.Run("redis", func(t *testing.T) {
		b, _ := sharedRedis(t)
		testInspect(t, b)
	})
	t.Run("redis-cluster", func(t *testing.T) {
		cl := testharness.RedisCluster(t, 3)
		client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: cl.Addrs})
		t.Cleanup(func() { _ = client.Close() })
		b := redisbackend.New(client, redisbackend.WithPrefix("inspect"), redisbackend.WithTimeout(2*time.Second))
		t.Cleanup(func() { _ = b.Close() })
		testInspect(t, b)
		// The entries were spread over the masters: the listing found
		// keys on more than one.
		var masters atomic.Int64
		err := client.ForEachMaster(context.Background(), func(ctx context.Context, c *goredis.Client) error {
			n, err := c.Keys(ctx, "inspect:inspect:k:*").Result() // the test may use KEYS; Scan must not
			if len(n) > 0 {
				masters.Add(1) // ForEachMaster runs fn concurrently
			}
			return err
		})
		if err != nil || masters.Load() < 2 {
			t.Fatalf("entries on %d masters (%v); want them spread", masters.Load(), err)
		}
	})
	t.Run("file", func(t *testing.T) {
		b, err := filebackend.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		testInspect(t, b)
	})
}

func testInspect(t *testing.T, b region.Backend) {
	ctx := context.Background()
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	clock := func() time.Time { return now }
	r := region.New(b, region.WithName("inspect"), region.WithExpiration(time.Hour), region.WithClock(clock))
	t.Cleanup(func() { _ = r.Close() })
	// Regions whose keys could be mistaken for this one's: never listed.
	for _, name := range []string{"inspect2", "inspect:k", "inspec"} {
		other := region.New(b, region.WithName(name), region.WithClock(clock))
		t.Cleanup(func() { _ = other.Close() })
		if err := other.Set(ctx, "a", 1, region.WithTags("users")); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.Set(ctx, "a", "va", region.WithTags("users")))
	must(r.Set(ctx, "b", "vb", region.WithTags("users", "orders")))
	must(r.Set(ctx, "c/x", "vc"))
	must(r.Load(ctx, []string{"d"}, tagLoader{}, region.WithTags("users"), region.WithKeyTags(map[string][]string{"d": {"users#id=1"}})))
	// Forty more, so that a scan takes more than one batch on some
	// backends and the cluster spreads them.
	for i := range 40 {
		must(r.Set(ctx, fmt.Sprintf("n%02d", i), i))
	}

	list := func(opts ...region.InspectOption) []region.EntryInfo {
		t.Helper()
		var out []region.EntryInfo
		for e, err := range r.Entries(ctx, opts...) {
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
		slices.SortFunc(out, func(a, b region.EntryInfo) int { return strings.Compare(a.Key, b.Key) })
		return out
	}
	all := list()
	if len(all) != 44 {
		t.Fatalf("%d entries; want 44: %v", len(all), keysOf(all))
	}
	wantTags := map[string][]string{"a": {"users"}, "b": {"users", "orders"}, "c/x": nil, "d": {"users", "users#id=1"}}
	for _, e := range all[:4] {
		if !slices.Equal(e.Tags, wantTags[e.Key]) {
			t.Errorf("%s: tags %q; want %q", e.Key, e.Tags, wantTags[e.Key])
		}
	}
	var bytes int64
	for _, e := range all {
		if e.BackendKey != "inspect:k:"+e.Key {
			t.Errorf("%s: backend key %q", e.Key, e.BackendKey)
		}
		if !e.Created.Equal(now) || !e.Expires.Equal(now.Add(time.Hour)) || !e.Dies.IsZero() || e.Stale || e.Expired {
			t.Errorf("%s: %+v; want created now, expiring in an hour, fresh", e.Key, e)
		}
		vals, err := b.GetMulti(ctx, []string{e.BackendKey})
		if err != nil || len(vals[0]) != e.Size || e.Size == 0 {
			t.Errorf("%s: size %d; the backend holds %d bytes (%v)", e.Key, e.Size, len(vals[0]), err)
		}
		bytes += int64(e.Size)
	}
	if got := keysOf(all[:4]); !slices.Equal(got, []string{"a", "b", "c/x", "d"}) {
		t.Fatalf("keys %q", got)
	}

	// Match, one entry, its payload.
	if got := keysOf(list(region.InspectMatch("[ab]"))); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("match [ab]: %q", got)
	}
	if got := keysOf(list(region.InspectMatch("c*"))); !slices.Equal(got, []string{"c/x"}) {
		t.Errorf("match c* (with a slash in the key): %q", got)
	}
	if got := keysOf(list(region.InspectMatch("n3?"))); len(got) != 10 {
		t.Errorf("match n3?: %q", got)
	}
	for _, err := range r.Entries(ctx, region.InspectMatch("[")) {
		if !errors.Is(err, path.ErrBadPattern) {
			t.Errorf("bad pattern: %v", err)
		}
	}
	e, ok, err := r.Entry(ctx, "b")
	if err != nil || !ok || !slices.Equal(e.Tags, []string{"users", "orders"}) || e.Size != all[1].Size {
		t.Fatalf("Entry(b) = %+v, %v, %v", e, ok, err)
	}
	if _, ok, err := r.Entry(ctx, "zz"); ok || err != nil {
		t.Fatalf("Entry(zz) = %v, %v; want not found", ok, err)
	}
	p, ok, err := r.EntryPayload(ctx, "a")
	var s string
	if err != nil || !ok || r.Codec().Unmarshal(p, &s) != nil || s != "va" {
		t.Fatalf("EntryPayload(a) = %q (%q), %v, %v", p, s, ok, err)
	}

	// Breaking out stops the listing.
	n := 0
	for range r.Entries(ctx) {
		n++
		break
	}
	if n != 1 {
		t.Fatalf("listed %d after break", n)
	}

	sum, err := r.Inspect(ctx)
	// Tag counters: users, orders, users#id=1.
	if want := (region.Summary{Entries: 44, Bytes: bytes, Tags: 3}); err != nil || sum != want {
		t.Fatalf("Inspect = %+v, %v; want %+v", sum, err, want)
	}

	// A bumped tag makes its entries expired, a soft invalidation the
	// rest stale, and an hour and a bit every one stale.
	must(r.InvalidateTags(ctx, "orders"))
	must(r.Invalidate(ctx, false))
	all = list()
	for _, e := range all {
		if wantExpired := e.Key == "b"; e.Expired != wantExpired || e.Stale == wantExpired {
			t.Errorf("%s after invalidating orders and a soft invalidation: stale %v, expired %v", e.Key, e.Stale, e.Expired)
		}
	}
	sum, err = r.Inspect(ctx)
	if want := (region.Summary{Entries: 44, Bytes: bytes, Stale: 43, Expired: 1, Tags: 3}); err != nil || sum != want {
		t.Fatalf("Inspect = %+v, %v; want %+v", sum, err, want)
	}
	must(r.Invalidate(ctx, true))
	if sum, err = r.Inspect(ctx); err != nil || sum.Expired != 44 || sum.Stale != 0 {
		t.Fatalf("after a hard invalidation: %+v, %v", sum, err)
	}
}

func keysOf(es []region.EntryInfo) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

// A backend that cannot list its keys: one error, ErrUnsupported.
func TestInspectUnsupported(t *testing.T) {
	r := region.New(null.New())
	defer r.Close()
	n := 0
	for _, err := range r.Entries(context.Background()) {
		n++
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("err %v; want ErrUnsupported", err)
		}
	}
	if n != 1 {
		t.Fatalf("%d yields; want one error", n)
	}
	if _, err := r.Inspect(context.Background()); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Inspect: %v", err)
	}
}

func ExampleRegion_Entries() {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithName("users"))
	defer r.Close()
	_ = r.Set(ctx, "user:1", "Ada", region.WithTags("users"))
	for e, err := range r.Entries(ctx) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(e.Key, e.Tags, e.Stale, e.Expired)
	}
	sum, _ := r.Inspect(ctx)
	fmt.Println(sum.Entries, "entry,", sum.Tags, "tag counter")
	// Output:
	// user:1 [users] false false
	// 1 entry, 1 tag counter
}
