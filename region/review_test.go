package region_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// countingLoader is an outcomeLoader that counts its creator runs.
type countingLoader struct {
	outcomeLoader
	creates atomic.Int32
}

func (l *countingLoader) Create(ctx context.Context, keys []string) (map[string]any, error) {
	l.creates.Add(1)
	return l.outcomeLoader.Create(ctx, keys)
}

// Review: a caller that leads a flight but, taking the distributed lock,
// finds the value another process's creator stored meanwhile never ran its
// own creator: its outcome is not a miss ("the call's own creator made
// it"), but a wait for another caller's value.
func TestReviewOutcomeOfValueStoredByAnotherProcess(t *testing.T) {
	ctx := context.Background()
	addr := sharedAddr(t)
	ba, _ := redisOn(t, addr, "review-outcome:")
	bb, _ := redisOn(t, addr, "review-outcome:")
	ra := region.New(ba, region.WithName("shared"))
	rb := region.New(bb, region.WithName("shared"))
	defer ra.Close()
	defer rb.Close()

	a := &outcomeLoader{block: make(chan struct{})}
	aDone := make(chan error, 1)
	go func() { aDone <- ra.Load(ctx, []string{"k"}, a) }()
	waitFor(t, "process A to hold the lock", func() bool { locked, _ := ra.KeyIsLocked(ctx, "k"); return locked })

	b := &countingLoader{}
	bDone := make(chan error, 1)
	go func() { bDone <- rb.Load(ctx, []string{"k"}, b) }()
	waitFor(t, "process B to miss", func() bool { return rb.Stats().Misses == 1 })
	close(a.block)
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	if n := b.creates.Load(); n != 0 {
		t.Fatalf("B ran its creator %d times; the test wants B served A's value", n)
	}
	if b.v != 7 {
		t.Fatalf("B got %d, want A's 7", b.v)
	}
	if got := b.outcomes["k"]; got != region.OutcomeWaited {
		t.Fatalf("B, served the value A's creator made after waiting for A's lock, reported %v; want %v", got, region.OutcomeWaited)
	}
}

// Review: a malformed entry (not an old format: a bad one) read by one
// GetOrCreate is one decode failure, told to the observers once.
func TestReviewMalformedEntryCountedOnce(t *testing.T) {
	ctx := context.Background()
	be := memory.New()
	rec := &recorder{}
	r := region.New(be, region.WithName("bad"), region.WithObserver(rec))
	defer r.Close()
	if _, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (int, error) { return 1, nil }); err != nil {
		t.Fatal(err)
	}
	var bkey string
	for e, err := range r.Entries(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		bkey = e.BackendKey
	}
	// The current format's version byte, then too few bytes for its fixed fields.
	if err := be.SetMulti(ctx, []region.Item{{Key: bkey, Value: []byte{3, 1, 2}}}); err != nil {
		t.Fatal(err)
	}
	rec.take()
	before := r.Stats().DecodeFailures
	if _, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (int, error) { return 2, nil }); err != nil {
		t.Fatal(err)
	}
	if n := r.Stats().DecodeFailures - before; n != 1 {
		t.Errorf("one read of a malformed entry counted %d decode failures, want 1", n)
	}
	if n := kinds(rec.take())[region.EventDecodeFailed]; n != 1 {
		t.Errorf("one read of a malformed entry told %d EventDecodeFailed, want 1", n)
	}
}

// Review: InvalidationFailures counts the invalidations that could not be
// written (Stats), not the failed attempts of the retrier: one
// InvalidateTags during an outage is one failure, however often the
// retrier tries it again (InvalidationRetries counts those), as over a
// backend without TagBumper.
func TestReviewRetriedInvalidationIsOneFailure(t *testing.T) {
	ctx := context.Background()
	srv := testharness.Redis(t)
	b, _ := redisOn(t, srv.Addr, "review-retry:", redisbackend.WithTimeout(200*time.Millisecond))
	rec := &recorder{}
	r := region.New(b, region.WithName("retry"), region.WithObserver(rec))
	defer r.Close()
	srv.Kill()
	if err := r.InvalidateTags(ctx, "users"); err == nil {
		t.Fatal("an invalidation with Redis down succeeded")
	}
	waitFor(t, "three retries", func() bool { return r.Stats().InvalidationRetries >= 3 })
	if s := r.Stats(); s.InvalidationFailures != 1 {
		t.Errorf("one invalidation that could not be written, retried %d times, counted %d InvalidationFailures, want 1", s.InvalidationRetries, s.InvalidationFailures)
	}
	if n := kinds(rec.take())[region.EventInvalidationFailed]; n != 1 {
		t.Errorf("told %d EventInvalidationFailed for one invalidation, want 1", n)
	}
}
