package region_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// unstorable is a value that cannot be encoded: the region keeps no bytes of
// it, so the callers that waited for its making are handed the value itself.
type unstorable struct{ n *int }

func (unstorable) Payload() ([]byte, error) { return nil, region.ErrUnencodable }

// sharingLoader makes one unstorable value per Create (after release is
// closed), and copies or refuses values made by other callers.
type sharingLoader struct {
	creates *atomic.Int64
	release chan struct{}
	copies  bool // Adopt copies another caller's value; else it refuses it

	v   *int // the value this caller ended with
	own bool // whether its own Create made it
}

func (l *sharingLoader) Create(_ context.Context, keys []string) (map[string]any, error) {
	l.creates.Add(1)
	<-l.release
	return map[string]any{keys[0]: unstorable{n: new(int)}}, nil
}

func (l *sharingLoader) Decode(string, region.Codec, []byte) error {
	return errors.New("nothing is ever stored")
}

func (l *sharingLoader) Adopt(_ string, v any, own bool) bool {
	u := v.(unstorable)
	switch {
	case own:
		l.v, l.own = u.n, true
	case l.copies:
		c := *u.n
		l.v = &c
	default:
		return false
	}
	return true
}

// TestLoadSharedValues: a value that cannot be encoded reaches the callers
// that waited for it through Adopt with own false; a caller that refuses
// it makes its own, and one that takes it costs no further Create.
func TestLoadSharedValues(t *testing.T) {
	const n = 10
	for _, copies := range []bool{true, false} {
		name := map[bool]string{true: "copied", false: "refused"}[copies]
		t.Run(name, func(t *testing.T) {
			r := region.New(memory.New())
			var creates atomic.Int64
			release := make(chan struct{})
			loaders := make([]*sharingLoader, n)
			var wg sync.WaitGroup
			for i := range loaders {
				loaders[i] = &sharingLoader{creates: &creates, release: release, copies: copies}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := r.Load(context.Background(), []string{"k"}, loaders[i]); err != nil {
						t.Error(err)
					}
				}()
			}
			deadline := time.Now().Add(10 * time.Second) // a deadlock guard, not a timing assertion
			for r.Stats().LockWaits < n-1 {
				if time.Now().After(deadline) {
					t.Fatalf("waiting for %d waiters: %+v", n-1, r.Stats())
				}
				time.Sleep(time.Millisecond)
			}
			close(release)
			wg.Wait()

			want := int64(1)
			if !copies {
				want = n // the maker's, and one for each caller that refused it
			}
			if got := creates.Load(); got != want {
				t.Errorf("Create ran %d times; want %d", got, want)
			}
			seen := map[*int]bool{}
			owners := 0
			for i, l := range loaders {
				if l.v == nil || seen[l.v] {
					t.Errorf("caller %d: value %p shared or missing", i, l.v)
				}
				seen[l.v] = true
				if l.own {
					owners++
				}
			}
			if wantOwners := int(want); owners != wantOwners {
				t.Errorf("%d callers took a value their own Create made; want %d", owners, wantOwners)
			}
		})
	}
}
