package memcachebackend

import (
	"context"
	"testing"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// TestKeyIsLocked: a region over memcached sees the lock another backend
// (another process) holds on a key, under the hashing key mangler, and not
// once it is released.
func TestKeyIsLocked(t *testing.T) {
	ctx := context.Background()
	srv := testharness.Memcached(t)
	b1 := newBackend(t, []string{srv.Addr}, WithPrefix("locked"))
	b2 := newBackend(t, []string{srv.Addr}, WithPrefix("locked"))
	opts := []region.Option{region.WithName("r"), region.WithKeyMangler(region.HashMangler)}
	r1, r2 := region.New(b1, opts...), region.New(b2, opts...)
	defer r1.Close()
	defer r2.Close()

	release := make(chan struct{})
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := region.GetOrCreate(ctx, r1, "user:1", func(context.Context) (int, error) {
			close(started)
			<-release
			return 1, nil
		})
		done <- err
	}()
	<-started
	if locked, err := r2.KeyIsLocked(ctx, "user:1"); err != nil || !locked {
		t.Fatalf("held by the other backend: locked %v, %v", locked, err)
	}
	if locked, err := r2.KeyIsLocked(ctx, "user:2"); err != nil || locked {
		t.Fatalf("another key: locked %v, %v", locked, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if locked, err := r2.KeyIsLocked(ctx, "user:1"); err != nil || locked {
		t.Fatalf("once released: locked %v, %v", locked, err)
	}
}
