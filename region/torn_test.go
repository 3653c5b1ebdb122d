package region_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/region"
)

// tornRead is a shared backend whose multi-key read is not one atomic
// view, as memcached's is when the keys live on several servers (the
// client asks each server on its own) and as a Redis Cluster's is across
// slots: its first GetMulti reads every key but the first (the region's
// record and the tag counters, for a one-key call), runs between, then
// reads the first key (the entry). Later reads are the backend's own.
type tornRead struct {
	region.Proxy
	once    sync.Once
	between func()
}

func (b *tornRead) GetMulti(ctx context.Context, keys []string) ([][]byte, error) {
	torn := false
	b.once.Do(func() { torn = len(keys) > 1 })
	if !torn {
		return b.Next.GetMulti(ctx, keys)
	}
	rest, err := b.Next.GetMulti(ctx, keys[1:])
	if err != nil {
		return nil, err
	}
	b.between()
	first, err := b.Next.GetMulti(ctx, keys[:1])
	if err != nil {
		return nil, err
	}
	return append(first, rest...), nil
}

// A caller whose read saw the region's record missing (a cold start) but
// the entry another process stored meanwhile cannot judge that entry: it
// leads a flight, and its regeneration's re-read, which sees both, must
// take the stored value rather than treat it as the one its caller found
// unusable and make the key a second time. Over memcached with two servers
// this made a key twice in about 1 run in 40 of the conformance suite's
// stampede cases.
func TestTornReadDoesNotMakeTwice(t *testing.T) {
	for _, multi := range []bool{false, true} {
		t.Run(fmt.Sprintf("multi=%v", multi), func(t *testing.T) {
			ctx := context.Background()
			addr := sharedAddr(t)
			prefix := fmt.Sprintf("torn-%v#%d:", multi, prefixSeq.Add(1))
			ba, _ := redisOn(t, addr, prefix)
			bb, _ := redisOn(t, addr, prefix)
			var creates atomic.Int32
			create := func(who string) func(context.Context) (string, error) {
				return func(context.Context) (string, error) {
					creates.Add(1)
					return who, nil
				}
			}
			other := region.New(bb, region.WithName("shared"))
			defer other.Close()
			torn := &tornRead{Proxy: region.Proxy{Next: ba}}
			torn.between = func() {
				// Another process makes and stores the key between the
				// caller's read of the record and its read of the entry.
				if v, err := region.GetOrCreate(ctx, other, "k", create("other")); err != nil || v != "other" {
					t.Errorf("other process: %q, %v", v, err)
				}
			}
			r := region.New(torn, region.WithName("shared"))
			defer r.Close()

			var got string
			if multi {
				vals, err := region.GetOrCreateMulti(ctx, r, []string{"k"}, func(_ context.Context, keys []string) (map[string]string, error) {
					creates.Add(1)
					return map[string]string{"k": "torn"}, nil
				})
				if err != nil {
					t.Fatal(err)
				}
				got = vals["k"]
			} else {
				v, err := region.GetOrCreate(ctx, r, "k", create("torn"))
				if err != nil {
					t.Fatal(err)
				}
				got = v
			}
			if n := creates.Load(); n != 1 {
				t.Fatalf("the key was made %d times; want once, by the other process", n)
			}
			if got != "other" {
				t.Fatalf("got %q; want the other process's value", got)
			}
			if st := r.Stats(); st.Regenerations != 0 || st.Misses != 1 || st.Errors != 0 {
				t.Fatalf("stats %+v; want 1 miss, no regeneration, no error", st)
			}
		})
	}
}

// confirmDuringRead is a shared backend whose tag counters can be made
// unwritable (an Incr or a BumpTags fails, as when the backend times out), and whose
// next multi-get, once armed, runs hook after the backend has answered and
// before the region looks at the answer.
type confirmDuringRead struct {
	region.Proxy
	failIncr atomic.Bool
	hook     atomic.Pointer[func()]
	skip     atomic.Int32 // multi-gets to let pass before the hook's
}

var errIncrRefused = fmt.Errorf("test: counter writes refused")

// confirmRegion returns a region named name over a confirmDuringRead
// proxy of a Redis backend of its own prefix, closed when t ends.
func confirmRegion(t *testing.T, name string) (*confirmDuringRead, *region.Region) {
	b, _ := sharedRedis(t)
	p := &confirmDuringRead{Proxy: region.Proxy{Next: b}}
	r := region.New(p, region.WithName(name))
	t.Cleanup(func() { _ = r.Close() })
	return p, r
}

func (b *confirmDuringRead) Incr(ctx context.Context, key string) (int64, error) {
	if b.failIncr.Load() {
		return 0, errIncrRefused
	}
	return b.Next.Incr(ctx, key)
}

func (b *confirmDuringRead) BumpTags(ctx context.Context, counters, markers []string, delta int64, lease time.Duration) error {
	if b.failIncr.Load() {
		return errIncrRefused
	}
	return b.Proxy.BumpTags(ctx, counters, markers, delta, lease)
}

func (b *confirmDuringRead) GetMulti(ctx context.Context, keys []string) ([][]byte, error) {
	vals, err := b.Next.GetMulti(ctx, keys)
	if b.hook.Load() != nil && b.skip.Add(-1) < 0 {
		if h := b.hook.Swap(nil); h != nil {
			(*h)()
		}
	}
	return vals, err
}

// An invalidation of a tag that could not be written is unconfirmed: values
// depending on it are neither served nor stored until the retrier's bump
// lands. A read that fetched the tag's counter before that bump, and that
// the region judges after it (the tag no longer unconfirmed), holds a
// counter older than the invalidation: its entry must still be a miss, not
// a hit made from data the invalidation replaced. The read is the caller's
// own (a hit), or the re-read of the regeneration a caller leads after its
// read found the tag unconfirmed.
func TestConfirmedDuringReadIsNotServed(t *testing.T) {
	for _, c := range []struct {
		name string
		skip int32 // reads before the one the bump lands during
	}{{"hit", 0}, {"regeneration-re-read", 1}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			p, r := confirmRegion(t, "confirm")
			value := "old"
			var creates atomic.Int32
			create := func(context.Context) (string, error) { creates.Add(1); return value, nil }
			if v, err := region.GetOrCreate(ctx, r, "k", create, region.WithTags("items")); err != nil || v != "old" {
				t.Fatalf("first read: %q, %v", v, err)
			}

			p.failIncr.Store(true)
			if err := r.InvalidateTags(ctx, "items"); err == nil {
				t.Fatal("the invalidation reported no error with counter writes refused")
			}
			value = "new" // what the database holds after the write
			hook := func() {
				// The read has fetched the entry and the old counter: now
				// the backend takes writes again and the retrier's bump
				// lands.
				p.failIncr.Store(false)
				waitFor(t, "the retried invalidation to land", func() bool { return r.Stats().InvalidationsRetried == 1 })
			}
			p.skip.Store(c.skip)
			p.hook.Store(&hook)
			v, err := region.GetOrCreate(ctx, r, "k", create, region.WithTags("items"))
			if err != nil {
				t.Fatal(err)
			}
			if p.hook.Load() != nil {
				t.Fatal("the read the bump should land during was not made")
			}
			if v != "new" {
				t.Fatalf("read across the confirmation: %q; want %q (the invalidated value was served)", v, "new")
			}
			if v, _ := region.GetOrCreate(ctx, r, "k", create, region.WithTags("items")); v != "new" {
				t.Fatalf("next read: %q; want %q", v, "new")
			}
			if n := creates.Load(); n != 2 {
				t.Fatalf("creator ran %d times; want 2 (before and after the write)", n)
			}
		})
	}
}

// A caller whose read finds a tag unconfirmed (its invalidation could not be
// written) must not be handed the value of a flight whose creator read the
// database before that write: its stamps, read before the failed bump,
// equal the flight's, so comparing them says nothing. It waits for the
// flight, then makes the value itself.
func TestBypassedWaiterDoesNotTakeOlderFlight(t *testing.T) {
	ctx := context.Background()
	p, r := confirmRegion(t, "bypassjoin")

	started, release := make(chan struct{}), make(chan struct{})
	leader := make(chan string, 1)
	go func() {
		v, _ := region.GetOrCreate(ctx, r, "k", func(context.Context) (string, error) {
			close(started)
			<-release // the database is read before the write commits
			return "old", nil
		}, region.WithTags("items"))
		leader <- v
	}()
	<-started

	// The write commits; its invalidation cannot be written.
	p.failIncr.Store(true)
	defer p.failIncr.Store(false)
	if err := r.InvalidateTags(ctx, "items"); err == nil {
		t.Fatal("the invalidation reported no error with counter writes refused")
	}
	waiter := make(chan string, 1)
	go func() {
		v, _ := region.GetOrCreate(ctx, r, "k", func(context.Context) (string, error) { return "new", nil }, region.WithTags("items"))
		waiter <- v
	}()
	waitFor(t, "the waiter to join the flight", func() bool { return r.Stats().LockWaits == 1 })
	close(release)
	if v := <-leader; v != "old" {
		t.Fatalf("leader got %q; want its own %q", v, "old")
	}
	if v := <-waiter; v != "new" {
		t.Fatalf("a caller that began after the write and its unconfirmed invalidation got %q; want %q", v, "new")
	}
}

// While a tag is unconfirmed nothing is stored, but a stampede still runs
// the creator once: callers that arrive during a run begun after the
// invalidation failed take its value.
func TestBypassedStampedeRunsOnce(t *testing.T) {
	ctx := context.Background()
	p, r := confirmRegion(t, "bypassherd")
	// The region's record and the tag's counter exist, as they do once a
	// value has been made.
	if _, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (string, error) { return "old", nil }, region.WithTags("items")); err != nil {
		t.Fatal(err)
	}
	p.failIncr.Store(true)
	defer p.failIncr.Store(false)
	if err := r.InvalidateTags(ctx, "items"); err == nil {
		t.Fatal("the invalidation reported no error with counter writes refused")
	}

	const n = 8
	var creates atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	create := func(context.Context) (string, error) {
		if creates.Add(1) == 1 {
			close(started)
		}
		<-release
		return "new", nil
	}
	got := make(chan string, n)
	call := func() {
		v, err := region.GetOrCreate(ctx, r, "k", create, region.WithTags("items"))
		if err != nil {
			t.Error(err)
		}
		got <- v
	}
	go call()
	<-started
	for range n - 1 {
		go call()
	}
	waitFor(t, "the callers to join the flight", func() bool { return r.Stats().LockWaits == n-1 })
	close(release)
	for range n {
		if v := <-got; v != "new" {
			t.Fatalf("got %q", v)
		}
	}
	if c := creates.Load(); c != 1 {
		t.Fatalf("creator ran %d times for %d callers; want 1", c, n)
	}
}
