package region_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// TestMetadata: created, age, expiry and staleness of a stored value, as
// the read's options see them.
func TestMetadata(t *testing.T) {
	ctx := context.Background()
	clock := newManualClock()
	t0 := clock.Now()
	r := region.New(memory.New(), region.WithExpiration(time.Minute), region.WithClock(clock.Now))
	defer r.Close()
	if _, found, err := r.Metadata(ctx, "k"); err != nil || found {
		t.Fatalf("metadata of a missing key: found %v, %v", found, err)
	}
	if err := r.Set(ctx, "k", "v", region.WithTags("t")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(20 * time.Second)
	md, found, err := r.Metadata(ctx, "k", region.WithTags("t"))
	if err != nil || !found {
		t.Fatalf("metadata: found %v, %v", found, err)
	}
	want := region.Metadata{Created: t0, Age: 20 * time.Second, Expires: t0.Add(time.Minute)}
	if !md.Created.Equal(want.Created) || md.Age != want.Age || !md.Expires.Equal(want.Expires) || md.Stale {
		t.Fatalf("metadata %+v, want %+v", md, want)
	}
	if md, _, _ := r.Metadata(ctx, "k", region.WithTags("t"), region.ExpireAfter(10*time.Second)); !md.Stale || !md.Expires.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("with a shorter expiration: %+v", md)
	}
	if md, _, _ := r.Metadata(ctx, "k", region.WithTags("t"), region.ExpireAfter(region.NeverExpire)); md.Stale || !md.Expires.IsZero() {
		t.Fatalf("with NeverExpire: %+v", md)
	}
	clock.Advance(time.Minute)
	if md, found, _ := r.Metadata(ctx, "k", region.WithTags("t")); !found || !md.Stale || md.Age != 80*time.Second {
		t.Fatalf("expired: %+v, found %v", md, found)
	}
	// Metadata reads no value: no hit, no miss.
	if st := r.Stats(); st.Hits != 0 || st.Misses != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Invalidated by its tag, or hard: no usable value.
	if _, found, _ := r.Metadata(ctx, "k"); found {
		t.Fatal("a value stored with a tag has metadata when read without it")
	}
	if err := r.InvalidateTags(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := r.Metadata(ctx, "k", region.WithTags("t")); found {
		t.Fatal("metadata of a value whose tag was invalidated")
	}
	if err := r.Set(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := r.Invalidate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if md, found, _ := r.Metadata(ctx, "k"); !found || !md.Stale {
		t.Fatalf("after a soft invalidation: %+v, found %v", md, found)
	}
	if err := r.Invalidate(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := r.Metadata(ctx, "k"); found {
		t.Fatal("metadata after a hard invalidation")
	}
}

// TestKeyIsLockedManglesLocal: KeyIsLocked applies the key mangler, so it
// sees the flight of a value being made in this process (dogpile's
// key_is_locked looks up the unmangled key and misses it).
func TestKeyIsLockedManglesLocal(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithKeyMangler(region.HashMangler))
	defer r.Close()
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := region.GetOrCreate(ctx, r, "user:1", func(context.Context) (int, error) { <-release; return 1, nil })
		done <- err
	}()
	waitFor(t, "the creator to start", func() bool { return r.Stats().Regenerations == 1 })
	if locked, err := r.KeyIsLocked(ctx, "user:1"); err != nil || !locked {
		t.Fatalf("while its value is made: locked %v, %v", locked, err)
	}
	if locked, err := r.KeyIsLocked(ctx, "user:2"); err != nil || locked {
		t.Fatalf("another key: locked %v, %v", locked, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if locked, err := r.KeyIsLocked(ctx, "user:1"); err != nil || locked {
		t.Fatalf("once made: locked %v, %v", locked, err)
	}
}

// TestKeyIsLockedAcrossProcesses: over Redis, a region sees the lock that
// another process's region holds while it makes the value (two backends on
// one prefix stand for the two processes), through the key mangler.
func TestKeyIsLockedAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	b1, _ := sharedRedis(t)
	b2, _ := redisOn(t, sharedAddr(t), b1.Key(""))
	opts := []region.Option{region.WithExpiration(time.Minute), region.WithKeyMangler(region.HashMangler)}
	r1, r2 := region.New(b1, opts...), region.New(b2, opts...)
	defer r1.Close()
	defer r2.Close()

	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := region.GetOrCreate(ctx, r1, "user:1", func(context.Context) (int, error) { <-release; return 1, nil })
		done <- err
	}()
	waitFor(t, "the creator to start", func() bool { return r1.Stats().Regenerations == 1 })
	if locked, err := r2.KeyIsLocked(ctx, "user:1"); err != nil || !locked {
		t.Fatalf("the other process: locked %v, %v", locked, err)
	}
	if locked, err := r2.KeyIsLocked(ctx, "user:2"); err != nil || locked {
		t.Fatalf("another key: locked %v, %v", locked, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if locked, err := r2.KeyIsLocked(ctx, "user:1"); err != nil || locked {
		t.Fatalf("once made: locked %v, %v", locked, err)
	}

	// A lock that cannot be probed is said so, not reported free.
	r3 := region.New(noProbe{region.Proxy{Next: b2}}, opts...)
	defer r3.Close()
	if _, err := r3.KeyIsLocked(ctx, "user:1"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("a lock without Locked: %v", err)
	}
}

// noProbe is a wrapper whose locks cannot be probed.
type noProbe struct{ region.Proxy }

func (n noProbe) Mutex(key string) region.Mutex {
	m := n.Proxy.Mutex(key)
	if m == nil {
		return nil
	}
	return struct{ region.Mutex }{m} // only TryLock, Unlock and Wait
}
