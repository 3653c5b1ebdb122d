package memory_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
	"github.com/dogpile-go/dogpile/region/regiontest"
)

func TestRegionSuite(t *testing.T) {
	regiontest.Run(t, func(testing.TB) region.Backend { return memory.New() })
}

func TestBoundRespected(t *testing.T) {
	const bound = 1 << 20
	b := memory.New(memory.WithMaxBytes(bound))
	r := region.New(b)
	ctx := context.Background()
	value := make([]byte, 1000)
	// Ten times the bound.
	for i := range 10 * bound / len(value) {
		if err := r.Set(ctx, fmt.Sprint("key-", i), value); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			if w := b.WeightedSize(); w > bound {
				t.Fatalf("after %d values the backend holds %d bytes; bound %d", i, w, bound)
			}
		}
	}
	if w := b.WeightedSize(); w > bound || w == 0 {
		t.Fatalf("backend holds %d bytes; bound %d", w, bound)
	}
	if n := b.Len(); n >= 10*bound/len(value) {
		t.Fatalf("nothing was evicted: %d entries", n)
	}
}

func TestCopiesInAndOut(t *testing.T) {
	b := memory.New()
	ctx := context.Background()
	in := []byte("value")
	if err := b.SetMulti(ctx, []region.Item{{Key: "k", Value: in}}); err != nil {
		t.Fatal(err)
	}
	in[0] = 'X'
	out, _ := b.GetMulti(ctx, []string{"k"})
	out[0][1] = 'Y'
	again, _ := b.GetMulti(ctx, []string{"k"})
	if string(again[0]) != "value" {
		t.Fatalf("stored bytes were changed through a caller's slice: %q", again[0])
	}
}

func TestCountersSurviveEviction(t *testing.T) {
	b := memory.New(memory.WithMaxBytes(64 << 10))
	ctx := context.Background()
	first, err := b.Incr(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10000 {
		_ = b.SetMulti(ctx, []region.Item{{Key: fmt.Sprint(i), Value: make([]byte, 100)}})
	}
	next, _ := b.Incr(ctx, "counter")
	if next != first+1 {
		t.Fatalf("counter went from %d to %d across eviction", first, next)
	}
}

func TestSetIfGuards(t *testing.T) {
	b := memory.New()
	ctx := context.Background()
	n, _ := b.Incr(ctx, "v")
	cur := []byte(fmt.Sprint(n))
	ok, _ := b.SetIf(ctx, region.Item{Key: "a", Value: []byte("1")}, []region.Guard{{Key: "v", Value: cur}})
	if !ok {
		t.Fatal("guard that holds refused the write")
	}
	ok, _ = b.SetIf(ctx, region.Item{Key: "a", Value: []byte("2")}, []region.Guard{{Key: "v", Value: []byte("0")}})
	if ok {
		t.Fatal("guard that fails allowed the write")
	}
	ok, _ = b.SetIf(ctx, region.Item{Key: "b", Value: []byte("3")}, []region.Guard{{Key: "absent", Value: nil}})
	if !ok {
		t.Fatal("absent guard on an absent key refused the write")
	}
}
