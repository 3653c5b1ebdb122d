package filebackend

import (
	"context"
	"testing"

	"github.com/dogpile-go/dogpile/region"
)

// TestKeyIsLocked: a region over the file backend sees the lock another
// backend on the same folder (another process) holds on a key, under the
// hashing key mangler, and not once it is released.
func TestKeyIsLocked(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var rs [2]*region.Region
	for i := range rs {
		b, err := New(dir)
		if err != nil {
			t.Fatal(err)
		}
		rs[i] = region.New(b, region.WithName("r"), region.WithKeyMangler(region.HashMangler))
		t.Cleanup(func() { _ = rs[i].Close(); _ = b.Close() })
	}
	release := make(chan struct{})
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := region.GetOrCreate(ctx, rs[0], "user:1", func(context.Context) (int, error) {
			close(started)
			<-release
			return 1, nil
		})
		done <- err
	}()
	<-started
	if locked, err := rs[1].KeyIsLocked(ctx, "user:1"); err != nil || !locked {
		t.Fatalf("held by the other backend: locked %v, %v", locked, err)
	}
	if locked, err := rs[1].KeyIsLocked(ctx, "user:2"); err != nil || locked {
		t.Fatalf("another key: locked %v, %v", locked, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if locked, err := rs[1].KeyIsLocked(ctx, "user:1"); err != nil || locked {
		t.Fatalf("once released: locked %v, %v", locked, err)
	}
}
