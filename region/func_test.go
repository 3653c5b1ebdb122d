package region_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// TestFuncStampedeOneCreator: 1000 goroutines call a Func with one argument
// at once, while its value is missing: fn runs exactly once and every caller
// gets its value.
func TestFuncStampedeOneCreator(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(time.Minute))
	defer r.Close()
	var calls atomic.Int64
	release := make(chan struct{})
	getUser := region.Func(r, "users.get", func(ctx context.Context, id int) (User, error) {
		calls.Add(1)
		<-release
		return User{ID: int64(id), Name: "alice"}, nil
	})
	const callers = 1000
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			u, err := getUser.Get(ctx, 42)
			if err == nil && (u.ID != 42 || u.Name != "alice") {
				err = fmt.Errorf("got %+v", u)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	// Every caller has found the value missing and joined the one flight
	// before fn is let go.
	waitFor(t, "1000 callers to find the value missing", func() bool { return r.Stats().Misses == callers })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("fn ran %d times for 1000 concurrent callers, want 1", n)
	}
	st := r.Stats()
	if st.Regenerations != 1 || st.LockWaits != callers-1 {
		t.Fatalf("stats %+v: want 1 regeneration and %d lock waits", st, callers-1)
	}
	// And the next call is a hit.
	if _, err := getUser.Get(ctx, 42); err != nil || calls.Load() != 1 {
		t.Fatalf("hit after the stampede: err %v, fn ran %d times", err, calls.Load())
	}
}

// TestFuncMultiOverlappingEachKeyOnce: goroutines ask a FuncMulti for
// overlapping sets of ids at once; each id is made exactly once, in all.
func TestFuncMultiOverlappingEachKeyOnce(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(time.Minute))
	defer r.Close()
	const ids, window, callers = 60, 10, 51
	var (
		mu    sync.Mutex
		asked = make(map[int]int) // id → times fn was asked for it
		calls atomic.Int64
	)
	gate := make(chan struct{})
	getUsers := region.FuncMulti(r, "users.get", func(ctx context.Context, ids []int) (map[int]User, error) {
		calls.Add(1)
		<-gate // every caller has started before the first value is made
		mu.Lock()
		defer mu.Unlock()
		out := make(map[int]User, len(ids))
		for _, id := range ids {
			asked[id]++
			out[id] = User{ID: int64(id), Name: fmt.Sprint("user ", id)}
		}
		return out, nil
	})
	var started, wg sync.WaitGroup
	started.Add(callers)
	errs := make(chan error, callers)
	for c := range callers {
		wg.Go(func() {
			var want []int
			for i := range window {
				want = append(want, (c+i)%ids)
			}
			started.Done()
			got, err := getUsers.Get(ctx, want...)
			if err == nil {
				for _, id := range want {
					if got[id].ID != int64(id) {
						err = fmt.Errorf("caller %d: id %d: got %+v", c, id, got[id])
						break
					}
				}
			}
			if err != nil {
				errs <- err
			}
		})
	}
	started.Wait()
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != ids {
		t.Fatalf("fn made %d ids, want all %d", len(asked), ids)
	}
	for id, n := range asked {
		if n != 1 {
			t.Errorf("id %d was made %d times, want 1", id, n)
		}
	}
	t.Logf("%d calls of fn for %d callers", calls.Load(), callers)
}

// TestFuncStaleServedToAllButOne: an expired Func value is served stale, at
// once, to every caller but the one that regenerates it, which gets the new
// value.
func TestFuncStaleServedToAllButOne(t *testing.T) {
	ctx := context.Background()
	clock := newManualClock()
	r := region.New(memory.New(), region.WithExpiration(time.Minute), region.WithClock(clock.Now))
	defer r.Close()
	var calls atomic.Int64
	release := make(chan struct{})
	getName := region.Func(r, "names.get", func(ctx context.Context, id int) (string, error) {
		if calls.Add(1) == 1 {
			return "old", nil
		}
		<-release
		return "new", nil
	})
	if v, err := getName.Get(ctx, 1); err != nil || v != "old" {
		t.Fatalf("first call: %q, %v", v, err)
	}
	clock.Advance(2 * time.Minute) // "old" is stale
	const callers = 50
	results := make(chan string, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			v, err := getName.Get(ctx, 1)
			if err != nil {
				v = err.Error()
			}
			results <- v
		})
	}
	// All but the regenerating caller return while fn is still blocked.
	for i := range callers - 1 {
		select {
		case v := <-results:
			if v != "old" {
				t.Fatalf("caller %d got %q while the value was regenerated, want the stale \"old\"", i, v)
			}
		case <-time.After(eventually):
			t.Fatalf("only %d of %d callers were served the stale value while fn ran", i, callers-1)
		}
	}
	close(release)
	wg.Wait()
	if v := <-results; v != "new" {
		t.Fatalf("the regenerating caller got %q, want \"new\"", v)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("fn ran %d times, want 2 (the first value and one regeneration)", n)
	}
	if st := r.Stats(); st.StaleServed != callers-1 {
		t.Fatalf("stale served %d times, want %d", st.StaleServed, callers-1)
	}
}

// TestFuncMultiMissingNotCached: ids that fn leaves out of its map are
// absent from the result and not cached (dogpile's asdict rule): the next
// call asks fn for them again, and only for them.
func TestFuncMultiMissingNotCached(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(time.Minute))
	defer r.Close()
	var asked [][]int
	getUsers := region.FuncMulti(r, "users.get", func(ctx context.Context, ids []int) (map[int]string, error) {
		asked = append(asked, slices.Clone(ids))
		out := make(map[int]string)
		for _, id := range ids {
			if id != 2 { // 2 does not exist
				out[id] = fmt.Sprint("user ", id)
			}
		}
		return out, nil
	})
	for range 2 {
		got, err := getUsers.Get(ctx, 1, 2, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[1] != "user 1" || got[3] != "user 3" {
			t.Fatalf("got %v, want ids 1 and 3 only", got)
		}
	}
	want := [][]int{{1, 2, 3}, {2}}
	if fmt.Sprint(asked) != fmt.Sprint(want) {
		t.Fatalf("fn was asked %v, want %v", asked, want)
	}
}

// TestFuncMethods: Peek, Set, Invalidate, Refresh, Original and Key.
func TestFuncMethods(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(time.Minute))
	defer r.Close()
	var calls atomic.Int64
	double := region.Func(r, "double", func(ctx context.Context, n int) (int, error) {
		calls.Add(1)
		return 2 * n, nil
	})
	if _, found, err := double.Peek(ctx, 21); err != nil || found {
		t.Fatalf("Peek before any call: found %v, err %v", found, err)
	}
	if v, err := double.Get(ctx, 21); err != nil || v != 42 {
		t.Fatalf("Get: %d, %v", v, err)
	}
	if v, found, err := double.Peek(ctx, 21); err != nil || !found || v != 42 {
		t.Fatalf("Peek after Get: %d, %v, %v", v, found, err)
	}
	if err := double.Set(ctx, 7, 21); err != nil {
		t.Fatal(err)
	}
	if v, err := double.Get(ctx, 21); err != nil || v != 7 || calls.Load() != 1 {
		t.Fatalf("Get after Set: %d, %v, fn ran %d times", v, err, calls.Load())
	}
	if v, err := double.Refresh(ctx, 21); err != nil || v != 42 || calls.Load() != 2 {
		t.Fatalf("Refresh: %d, %v, fn ran %d times", v, err, calls.Load())
	}
	if v, err := double.Get(ctx, 21); err != nil || v != 42 || calls.Load() != 2 {
		t.Fatalf("Get after Refresh: %d, %v, fn ran %d times", v, err, calls.Load())
	}
	if err := double.Invalidate(ctx, 21); err != nil {
		t.Fatal(err)
	}
	if v, err := double.Get(ctx, 21); err != nil || v != 42 || calls.Load() != 3 {
		t.Fatalf("Get after Invalidate: %d, %v, fn ran %d times", v, err, calls.Load())
	}
	if v, err := double.Original()(ctx, 5); err != nil || v != 10 || calls.Load() != 4 {
		t.Fatalf("Original: %d, %v", v, err)
	}
	key, err := double.Key(21)
	if err != nil || key != "double|v1|i:21" {
		t.Fatalf("Key: %q, %v", key, err)
	}
	// The key is the region's: Get and GetOrCreate share the entry.
	var v int
	if found, err := r.Get(ctx, key, &v); err != nil || !found || v != 42 {
		t.Fatalf("region.Get of the Func's key: %d, %v, %v", v, found, err)
	}
}

// TestFuncMultiMethods: Peek, Set, Invalidate and Refresh of a FuncMulti,
// and that it shares its entries with a Func of the same name.
func TestFuncMultiMethods(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(time.Minute))
	defer r.Close()
	var calls atomic.Int64
	fn := func(ctx context.Context, ids []int) (map[int]int, error) {
		calls.Add(1)
		out := make(map[int]int, len(ids))
		for _, id := range ids {
			out[id] = 10 * id
		}
		return out, nil
	}
	tens := region.FuncMulti(r, "tens", fn)
	ten := region.Func(r, "tens", func(ctx context.Context, id int) (int, error) {
		m, err := fn(ctx, []int{id})
		return m[id], err
	})
	if got, err := tens.Peek(ctx, 1, 2); err != nil || len(got) != 0 {
		t.Fatalf("Peek before any call: %v, %v", got, err)
	}
	if got, err := tens.Get(ctx, 1, 2, 2, 3); err != nil || len(got) != 3 || got[2] != 20 {
		t.Fatalf("Get: %v, %v", got, err)
	}
	if v, err := ten.Get(ctx, 3); err != nil || v != 30 || calls.Load() != 1 {
		t.Fatalf("the Func of the same name: %d, %v, fn ran %d times (want a hit)", v, err, calls.Load())
	}
	if err := tens.Set(ctx, map[int]int{1: -1, 4: -4}); err != nil {
		t.Fatal(err)
	}
	if got, err := tens.Peek(ctx, 1, 2, 4, 5); err != nil || fmt.Sprint(got) != "map[1:-1 2:20 4:-4]" {
		t.Fatalf("Peek after Set: %v, %v", got, err)
	}
	if got, err := tens.Refresh(ctx, 1, 1, 5); err != nil || fmt.Sprint(got) != "map[1:10 5:50]" || calls.Load() != 2 {
		t.Fatalf("Refresh: %v, %v, fn ran %d times", got, err, calls.Load())
	}
	if err := tens.Invalidate(ctx, 1, 2); err != nil {
		t.Fatal(err)
	}
	if got, err := tens.Peek(ctx, 1, 2, 3, 4, 5); err != nil || fmt.Sprint(got) != "map[3:30 4:-4 5:50]" {
		t.Fatalf("Peek after Invalidate: %v, %v", got, err)
	}
}

// TestFuncOptions: a namespace, ShouldCache, tags of the whole function
// and of each argument, and an expiration computed on every call.
func TestFuncOptions(t *testing.T) {
	ctx := context.Background()
	clock := newManualClock()
	r := region.New(memory.New(), region.WithExpiration(time.Hour), region.WithClock(clock.Now))
	defer r.Close()

	var calls atomic.Int64
	fn := func(ctx context.Context, id int) (int, error) { return int(calls.Add(1)), nil }

	t.Run("namespace", func(t *testing.T) {
		a := region.Func(r, "f", fn, region.WithNamespace("a"))
		b := region.Func(r, "f", fn, region.WithNamespace("b"))
		ka, _ := a.Key(1)
		kb, _ := b.Key(1)
		if ka != "f#a|v1|i:1" || kb != "f#b|v1|i:1" {
			t.Fatalf("keys %q and %q", ka, kb)
		}
		va, _ := a.Get(ctx, 1)
		vb, _ := b.Get(ctx, 1)
		if va == vb {
			t.Fatalf("two namespaces shared a value: %d", va)
		}
	})
	t.Run("should cache", func(t *testing.T) {
		f := region.Func(r, "odd", fn, region.ShouldCache(func(v int) bool { return v%2 == 1 }))
		seen := map[int]bool{}
		for range 4 {
			v, err := f.Get(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			seen[v] = true
		}
		// Even values are returned and not kept: the next call makes
		// another, until an odd one is kept and served from then on.
		if len(seen) > 2 {
			t.Fatalf("values %v: an odd value was not kept", seen)
		}
	})
	t.Run("tags", func(t *testing.T) {
		f := region.Func(r, "tagged", fn, region.WithTags("users"))
		v1, _ := f.Get(ctx, 1)
		if v, _ := f.Get(ctx, 1); v != v1 {
			t.Fatalf("not a hit: %d then %d", v1, v)
		}
		if err := r.InvalidateTags(ctx, "users"); err != nil {
			t.Fatal(err)
		}
		if v, _ := f.Get(ctx, 1); v == v1 {
			t.Fatalf("served %d after its tag was invalidated", v)
		}
	})
	t.Run("argument tags", func(t *testing.T) {
		tagOf := func(id int) []string { return []string{fmt.Sprint("user:", id)} }
		f := region.Func(r, "argtagged", fn, region.WithArgTags(tagOf))
		m := region.FuncMulti(r, "argtagged", func(ctx context.Context, ids []int) (map[int]int, error) {
			out := map[int]int{}
			for _, id := range ids {
				out[id], _ = fn(ctx, id)
			}
			return out, nil
		}, region.WithArgTags(tagOf))
		before, err := m.Get(ctx, 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := f.Get(ctx, 2); v != before[2] {
			t.Fatalf("Func and FuncMulti with argument tags do not share: %d and %d", v, before[2])
		}
		if err := r.InvalidateTags(ctx, "user:1"); err != nil {
			t.Fatal(err)
		}
		after, err := m.Get(ctx, 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		if after[1] == before[1] || after[2] != before[2] {
			t.Fatalf("before %v, after invalidating user:1 %v: want 1 made again and 2 kept", before, after)
		}
	})
	t.Run("expiration computed per call", func(t *testing.T) {
		exp := time.Minute
		f := region.Func(r, "expiring", fn, region.WithExpirationFunc(func() time.Duration { return exp }))
		v1, _ := f.Get(ctx, 1)
		clock.Advance(30 * time.Second)
		if v, _ := f.Get(ctx, 1); v != v1 {
			t.Fatalf("not a hit within the expiration: %d then %d", v1, v)
		}
		exp = 10 * time.Second // now 30s old: stale, regenerated
		if v, _ := f.Get(ctx, 1); v == v1 {
			t.Fatalf("a value older than the expiration of this call was fresh")
		}
		if md, found, err := r.Metadata(ctx, mustKey(t, f, 1), region.ExpireAfter(exp)); err != nil || !found || md.Stale {
			t.Fatalf("metadata after the regeneration: %+v, %v, %v", md, found, err)
		}
	})
}

func mustKey[A, V any](t *testing.T, f *region.CachedFunc[A, V], arg A) string {
	t.Helper()
	k, err := f.Key(arg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestFuncStructArgument: several parameters as one struct, unexported
// fields included.
func TestFuncStructArgument(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New())
	defer r.Close()
	type query struct {
		org  int
		name string
		tags []string
	}
	var calls atomic.Int64
	find := region.Func(r, "users.find", func(ctx context.Context, q query) (string, error) {
		calls.Add(1)
		return fmt.Sprintf("%d/%s/%v", q.org, q.name, q.tags), nil
	})
	qs := []query{{1, "alice", nil}, {1, "alice", []string{}}, {1, "bob", nil}, {2, "alice", nil}, {1, "alice", []string{"x"}}}
	for _, q := range qs {
		for range 2 {
			if _, err := find.Get(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := calls.Load(); n != int64(len(qs)) {
		t.Fatalf("fn ran %d times for %d different arguments asked twice each", n, len(qs))
	}
	k, err := find.Key(qs[4])
	if err != nil || k != "users.find|v1|{org=i:1,name=s5:alice,tags=[s1:x]}" {
		t.Fatalf("key %q, %v", k, err)
	}
}

// TestFuncKeyErrors: an argument that cannot be a key is an error of Get,
// before fn runs; a key generator's error too.
func TestFuncKeyErrors(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New())
	defer r.Close()
	var calls atomic.Int64
	f := region.Func(r, "chan", func(ctx context.Context, c chan int) (int, error) { calls.Add(1); return 0, nil })
	if _, err := f.Get(ctx, make(chan int)); err == nil || !strings.Contains(err.Error(), "cannot be part of a key") {
		t.Fatalf("Get with a channel: %v", err)
	}
	boom := errors.New("boom")
	g := region.Func(r, "gen", func(ctx context.Context, n int) (int, error) { calls.Add(1); return n, nil },
		region.WithKeyGenerator(func(name string, n int) (string, error) { return "", boom }))
	if _, err := g.Get(ctx, 1); !errors.Is(err, boom) {
		t.Fatalf("Get with a failing key generator: %v", err)
	}
	if calls.Load() != 0 {
		t.Fatal("fn ran although its key could not be made")
	}
	defer func() {
		if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "WithKeyGenerator") {
			t.Fatalf("a key generator for another argument type: recovered %v", p)
		}
	}()
	region.Func(r, "bad", func(ctx context.Context, n int) (int, error) { return n, nil },
		region.WithKeyGenerator(func(name string, s string) (string, error) { return s, nil }))
}

// TestFuncRefreshStampsBeforeFn: an invalidation of the function's tag made
// while Refresh's fn runs makes the refreshed value a miss: it was stamped
// before fn read its source.
func TestFuncRefreshStampsBeforeFn(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New())
	defer r.Close()
	var calls atomic.Int64
	invalidate := false
	f := region.Func(r, "f", func(ctx context.Context, n int) (int, error) {
		if invalidate {
			if err := r.InvalidateTags(ctx, "t"); err != nil {
				return 0, err
			}
		}
		return int(calls.Add(1)), nil
	}, region.WithTags("t"))
	invalidate = true
	if _, err := f.Refresh(ctx, 1); err != nil {
		t.Fatal(err)
	}
	invalidate = false
	if _, found, err := f.Peek(ctx, 1); err != nil || found {
		t.Fatalf("a value made across an invalidation of its tag is served: found %v, %v", found, err)
	}
}

// TestFuncOverRedis: over a shared backend, with a key mangler (the paths
// that build the caller's key first): concurrent callers make the value
// once, and a FuncMulti of the same name shares the entries.
func TestFuncOverRedis(t *testing.T) {
	ctx := context.Background()
	b, _ := sharedRedis(t)
	m := region.NewMetrics()
	r := region.New(region.WrapBackend(b, m.Wrap), region.WithExpiration(time.Minute), region.WithKeyMangler(region.HashMangler))
	defer r.Close()
	var calls atomic.Int64
	release := make(chan struct{})
	getUser := region.Func(r, "users.get", func(ctx context.Context, id int) (User, error) {
		calls.Add(1)
		<-release
		return User{ID: int64(id)}, nil
	})
	const callers = 100
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			if u, err := getUser.Get(ctx, 7); err != nil || u.ID != 7 {
				t.Errorf("Get: %+v, %v", u, err)
			}
		})
	}
	waitFor(t, "every caller to find the value missing", func() bool { return r.Stats().Misses == callers })
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("fn ran %d times for %d callers, want 1", n, callers)
	}
	getUsers := region.FuncMulti(r, "users.get", func(ctx context.Context, ids []int) (map[int]User, error) {
		calls.Add(1)
		out := map[int]User{}
		for _, id := range ids {
			out[id] = User{ID: int64(id)}
		}
		return out, nil
	})
	got, err := getUsers.Get(ctx, 7, 8)
	if err != nil || len(got) != 2 || got[8].ID != 8 || calls.Load() != 2 {
		t.Fatalf("FuncMulti: %v, %v, fn ran %d times (want 7 a hit, 8 made)", got, err, calls.Load())
	}
	// Hits of many arguments: one backend read for all of them.
	reads := m.Snapshot()[region.OpGetMulti].Calls
	if got, err := getUsers.Get(ctx, 8, 7, 8); err != nil || len(got) != 2 || calls.Load() != 2 {
		t.Fatalf("FuncMulti hits: %v, %v", got, err)
	}
	if n := m.Snapshot()[region.OpGetMulti].Calls - reads; n != 1 {
		t.Fatalf("FuncMulti.Get of 2 hits made %d backend reads, want 1", n)
	}
}
