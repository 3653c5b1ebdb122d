//go:build unix

package filebackend

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/region"
)

var ctx = context.Background()

// TestLockPerKey: a held lock blocks its key in another process's backend,
// not another key.
func TestLockPerKey(t *testing.T) {
	dir := t.TempDir()
	a, b := openTestBackend(t, dir), openTestBackend(t, dir) // two sets of descriptors: two processes to flock
	la := a.Lock("k1")
	if ok, err := la.TryLock(ctx); !ok || err != nil {
		t.Fatalf("TryLock k1 = %v, %v", ok, err)
	}
	if ok, err := b.Lock("k1").TryLock(ctx); ok || err != nil {
		t.Fatalf("second TryLock of k1 = %v, %v; want false", ok, err)
	}
	lb := b.Lock("k2")
	if ok, err := lb.TryLock(ctx); !ok || err != nil {
		t.Fatalf("TryLock k2 while k1 is held = %v, %v; want true", ok, err)
	}
	if ok, _ := la.TryLock(ctx); ok {
		t.Fatal("a held Lock took itself again")
	}
	must(t, la.Unlock(ctx))
	must(t, la.Unlock(ctx)) // not held: nothing
	if ok, err := b.Lock("k1").TryLock(ctx); !ok || err != nil {
		t.Fatalf("TryLock k1 after unlock = %v, %v", ok, err)
	}
	must(t, lb.Unlock(ctx))
}

// TestLockExclusiveUnderChurn: goroutines with locks of their own on one
// key take and release it as fast as they can; the holder removes the
// file on unlock and the others may have it open. Never are two holders at
// once (the check that the file locked is still the one at the path).
func TestLockExclusiveUnderChurn(t *testing.T) {
	b := newTestBackend(t)
	var holders, most, taken atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 300 {
				l := b.Lock("hot")
				ok, err := l.TryLock(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					continue
				}
				taken.Add(1)
				n := holders.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				holders.Add(-1)
				if err := l.Unlock(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d holders of one lock at once; want 1", most.Load())
	}
	t.Logf("lock taken %d times of 2400 tries", taken.Load())
}

// TestLockWaitReturnsOnUnlock: Wait returns once the holder unlocks.
func TestLockWaitReturnsOnUnlock(t *testing.T) {
	dir := t.TempDir()
	a, b := openTestBackend(t, dir), openTestBackend(t, dir)
	la := a.Lock("k")
	if ok, err := la.TryLock(ctx); !ok || err != nil {
		t.Fatal(ok, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := b.Lock("k").Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a held lock = %v; want the context's deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Lock("k").Wait(ctx) }()
	must(t, la.Unlock(ctx))
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(eventually):
		t.Fatal("Wait did not return after Unlock")
	}
	if err := b.Lock("never-locked").Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestKilledLockHolder: a child process takes a key's lock and is
// SIGKILLed while it holds it. The kernel drops its flock: a waiter here
// returns and takes the lock. Generous bound stated: 10s (the poll is 20ms
// at most); the latency measured is logged.
func TestKilledLockHolder(t *testing.T) {
	dir := t.TempDir()
	b := openTestBackend(t, dir)
	c := startChild(t, "holdkey", dir, "k")
	c.expect("locked")
	l := b.Lock("k")
	if ok, err := l.TryLock(ctx); ok || err != nil {
		t.Fatalf("TryLock while the child holds it = %v, %v; want false", ok, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- l.Wait(ctx) }()
	select {
	case err := <-waited:
		t.Fatalf("Wait returned (%v) while the child holds the lock", err)
	case <-time.After(50 * time.Millisecond):
	}
	killed := time.Now()
	c.kill()
	select {
	case err := <-waited:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the lock of a killed holder still blocks after 10s")
	}
	t.Logf("lock free %v after the holder was killed", time.Since(killed))
	if ok, err := l.TryLock(ctx); !ok || err != nil {
		t.Fatalf("TryLock after the holder died = %v, %v", ok, err)
	}
	must(t, l.Unlock(ctx))
}

// TestKilledCreator: a child process leads the regeneration of a key
// (holds its lock) in its region and is SIGKILLed in its creator. A caller
// here, which waits for the lock with a wait budget of a minute and no
// fallback, takes the lock once the child is dead and runs its creator
// exactly once, long before the budget.
func TestKilledCreator(t *testing.T) {
	dir := t.TempDir()
	b := openTestBackend(t, dir)
	c := startChild(t, "creator", dir, "k")
	c.expect("creating")
	r := region.New(b, region.WithName("r"), region.WithWaitTimeout(time.Minute), region.WithoutWaitFallback())
	var calls atomic.Int64
	type result struct {
		v   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (string, error) {
			calls.Add(1)
			return "made here", nil
		})
		done <- result{v, err}
	}()
	// The caller waits for the child's lock.
	deadline := time.Now().Add(eventually)
	for r.Stats().LockWaits == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the caller never waited for the child's lock")
		}
		time.Sleep(time.Millisecond)
	}
	if calls.Load() != 0 {
		t.Fatal("the creator ran while the child held the lock")
	}
	killed := time.Now()
	c.kill()
	var res result
	select {
	case res = <-done:
	case <-time.After(eventually):
		t.Fatal("GetOrCreate did not return after the holder died")
	}
	took := time.Since(killed)
	if res.err != nil || res.v != "made here" || calls.Load() != 1 {
		t.Fatalf("GetOrCreate = %q, %v with %d creator calls; want the value made here, once", res.v, res.err, calls.Load())
	}
	if took > 10*time.Second {
		t.Fatalf("took %v after the kill; want well under 10s (a 20ms poll)", took)
	}
	t.Logf("creator ran %v after the lock holder was killed", took)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
