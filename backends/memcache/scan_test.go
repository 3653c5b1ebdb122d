package memcachebackend

import (
	"context"
	"errors"
	"testing"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// memcached cannot list its keys: a region over it says so, with one
// error matching errors.ErrUnsupported, and still works otherwise.
func TestEntriesUnsupported(t *testing.T) {
	srv := testharness.Memcached(t)
	r := region.New(newBackend(t, []string{srv.Addr}))
	defer r.Close()
	ctx := context.Background()
	if err := r.Set(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	n := 0
	for e, err := range r.Entries(ctx) {
		n++
		if !errors.Is(err, errors.ErrUnsupported) || e.Key != "" {
			t.Fatalf("yielded %+v, %v; want one error matching ErrUnsupported", e, err)
		}
	}
	if n != 1 {
		t.Fatalf("%d yields; want 1", n)
	}
	if _, err := r.Inspect(ctx); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Inspect: %v", err)
	}
	if _, ok := any(newBackend(t, []string{srv.Addr})).(region.Scanner); ok {
		t.Fatal("the memcached backend claims to be a Scanner")
	}
}
