package region_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

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
