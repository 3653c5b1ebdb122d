package redisbackend

import (
	"context"
	"errors"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// twoProcesses returns two backends on the shared server with the same
// prefix and clients of their own, as two processes would have, and a raw
// client.
func twoProcesses(t *testing.T, opts ...Option) (a, b *Backend, raw *goredis.Client) {
	srv := testharness.SharedRedis(t)
	all := append([]Option{WithPrefix(uniquePrefix(t))}, opts...)
	a = newBackend(t, newClient(t, srv.Addr), all...)
	b = newBackend(t, newClient(t, srv.Addr), all...)
	return a, b, newClient(t, srv.Addr)
}

func TestLockExclusiveAcrossProcesses(t *testing.T) {
	a, b, raw := twoProcesses(t)
	la, lb := a.Mutex("suite:k:x").(*Lock), b.Mutex("suite:k:x").(*Lock)
	if la.Key() != lb.Key() || la.Key() != a.Key("{"+a.Key("suite:k:x")+"}:lock") {
		t.Fatalf("lock keys %q and %q", la.Key(), lb.Key())
	}
	if ok, err := la.TryLock(bg); !ok || err != nil {
		t.Fatalf("A TryLock = %v, %v", ok, err)
	}
	if ok, err := lb.TryLock(bg); ok || err != nil {
		t.Fatalf("B TryLock while A holds = %v, %v", ok, err)
	}
	if ok, err := la.TryLock(bg); ok || err != nil {
		t.Fatalf("A TryLock again (not reentrant) = %v, %v", ok, err)
	}
	if pttl := raw.PTTL(bg, la.Key()).Val(); pttl <= 0 || pttl > DefaultLockTTL {
		t.Fatalf("lock PTTL = %v, want (0, %v]", pttl, DefaultLockTTL)
	}
	// A different key is a different lock.
	if ok, err := b.Mutex("suite:k:y").TryLock(bg); !ok || err != nil {
		t.Fatalf("B TryLock on another key = %v, %v", ok, err)
	}
	if err := la.Unlock(bg); err != nil {
		t.Fatal(err)
	}
	if n := raw.Exists(bg, la.Key()).Val(); n != 0 {
		t.Fatal("Unlock left the lock key")
	}
	if err := la.Unlock(bg); err != nil {
		t.Fatalf("second Unlock = %v", err)
	}
	if ok, err := lb.TryLock(bg); !ok || err != nil {
		t.Fatalf("B TryLock after A unlocked = %v, %v", ok, err)
	}
	if err := lb.Unlock(bg); err != nil {
		t.Fatal(err)
	}
}

// TestUnlockByFormerHolder: A's lock expires and B takes it; A's Unlock must
// not delete B's lock, and A's fence must no longer hold.
func TestUnlockByFormerHolder(t *testing.T) {
	a, b, raw := twoProcesses(t)
	const key = "suite:k:x"
	la, lb := a.Lock(key), b.Lock(key)
	if ok, err := la.TryLock(bg); !ok || err != nil {
		t.Fatalf("A TryLock = %v, %v", ok, err)
	}
	fenceA := la.Fence()
	item := region.Item{Key: key, Value: []byte("from A"), TTL: time.Minute}
	if ok, err := a.SetIf(bg, item, []region.Guard{fenceA}); !ok || err != nil {
		t.Fatalf("A's fenced write while holding = %v, %v", ok, err)
	}
	// A's lease runs out (as if A had paused longer than the TTL).
	if err := raw.Del(bg, la.Key()).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, err := lb.TryLock(bg); !ok || err != nil {
		t.Fatalf("B TryLock after A's lease ended = %v, %v", ok, err)
	}
	tokenB := raw.Get(bg, lb.Key()).Val()
	if ok, err := a.SetIf(bg, region.Item{Key: key, Value: []byte("late A")}, []region.Guard{fenceA}); ok || err != nil {
		t.Fatalf("A's fenced write after losing the lock = %v, %v", ok, err)
	}
	if ok, err := b.SetIf(bg, region.Item{Key: key, Value: []byte("from B")}, []region.Guard{lb.Fence()}); !ok || err != nil {
		t.Fatalf("B's fenced write = %v, %v", ok, err)
	}
	if err := la.Unlock(bg); err != nil {
		t.Fatalf("A Unlock = %v", err)
	}
	if got := raw.Get(bg, lb.Key()).Val(); got != tokenB {
		t.Fatalf("after A's Unlock the lock holds %q, want B's token %q", got, tokenB)
	}
	if got := raw.Get(bg, a.Key(key)).Val(); got != "from B" {
		t.Fatalf("entry = %q, want B's value", got)
	}
	// An unheld Lock's fence never holds, not even on a missing lock.
	if err := lb.Unlock(bg); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.SetIf(bg, item, []region.Guard{la.Fence()}); ok || err != nil {
		t.Fatalf("write fenced by an unheld lock = %v, %v", ok, err)
	}
}

func TestWaitReturnsOnUnlock(t *testing.T) {
	a, b, raw := twoProcesses(t, WithLockTTL(time.Minute))
	la, lb := a.Lock("k"), b.Lock("k")
	if ok, err := la.TryLock(bg); !ok || err != nil {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	// The notification itself reaches a watcher.
	notified, stop := b.notify.watch(lb.Key())
	defer stop()
	waitFor(t, "the subscription", func() bool {
		return raw.PubSubNumSub(bg, lb.Key()).Val()[lb.Key()] > 0
	})
	done := make(chan error, 1)
	go func() { done <- lb.Wait(bg) }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v while the lock is held", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := la.Unlock(bg); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notified:
	case <-time.After(eventually):
		t.Fatal("no unlock notification")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait = %v", err)
		}
	case <-time.After(eventually):
		t.Fatal("Wait did not return after Unlock")
	}
	if ok, err := lb.TryLock(bg); !ok || err != nil {
		t.Fatalf("TryLock after Wait = %v, %v", ok, err)
	}
	_ = lb.Unlock(bg)
}

// TestWaitDeadHolder: a holder that died (a lock key nobody unlocks) delays
// a waiter only until its lease ends.
func TestWaitDeadHolder(t *testing.T) {
	b, raw := shared(t)
	l := b.Lock("k")
	if err := raw.Set(bg, l.Key(), "dead holder", 700*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	var err error
	within(t, "Wait on a dead holder's lock", func() { err = l.Wait(bg) })
	if err != nil {
		t.Fatalf("Wait = %v", err)
	}
	if raw.Exists(bg, l.Key()).Val() != 0 {
		t.Fatal("Wait returned while the dead holder's lease still runs")
	}
	// Free lock: Wait returns at once.
	within(t, "Wait on a free lock", func() { err = l.Wait(bg) })
	if err != nil {
		t.Fatalf("Wait on a free lock = %v", err)
	}
}

func TestWaitContext(t *testing.T) {
	a, b, _ := twoProcesses(t, WithLockTTL(time.Minute))
	la := a.Lock("k")
	if ok, err := la.TryLock(bg); !ok || err != nil {
		t.Fatal(ok, err)
	}
	defer la.Unlock(bg)
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	defer cancel()
	var err error
	within(t, "Wait with a deadline", func() { err = b.Lock("k").Wait(ctx) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want the context's deadline", err)
	}
}

// TestLockExtension: a holder keeps its lock past the TTL while it holds it.
func TestLockExtension(t *testing.T) {
	const ttl = 300 * time.Millisecond
	a, b, raw := twoProcesses(t, WithLockTTL(ttl))
	la := a.Lock("k")
	if ok, err := la.TryLock(bg); !ok || err != nil {
		t.Fatal(ok, err)
	}
	token := raw.Get(bg, la.Key()).Val()
	time.Sleep(4 * ttl)
	if got := raw.Get(bg, la.Key()).Val(); got != token {
		t.Fatalf("after 4 TTLs the lock holds %q, want the holder's token", got)
	}
	if ok, err := b.Lock("k").TryLock(bg); ok || err != nil {
		t.Fatalf("another process took an extended lock: %v, %v", ok, err)
	}
	if ok, err := a.SetIf(bg, region.Item{Key: "k", Value: []byte("v")}, []region.Guard{la.Fence()}); !ok || err != nil {
		t.Fatalf("fenced write after 4 TTLs = %v, %v", ok, err)
	}
	if err := la.Unlock(bg); err != nil {
		t.Fatal(err)
	}
	if raw.Exists(bg, la.Key()).Val() != 0 {
		t.Fatal("lock still there after Unlock")
	}
	// Without extension (the holder is gone), the lease ends.
	lb := b.Lock("k")
	if ok, err := lb.TryLock(bg); !ok || err != nil {
		t.Fatal(ok, err)
	}
	lb.mu.Lock()
	close(lb.stop) // the extender stops, as it would in a dead process
	<-lb.stopped
	lb.token, lb.stop, lb.stopped = "", nil, nil
	lb.mu.Unlock()
	waitFor(t, "the lease to end", func() bool { return raw.Exists(bg, lb.Key()).Val() == 0 })
}

// TestRegionLockAcrossProcesses: two regions over two backends (two
// processes) asking for the same missing key run the creator once.
func TestRegionLockAcrossProcesses(t *testing.T) {
	a, b, raw := twoProcesses(t)
	ra, rb := region.New(a, region.WithName("r")), region.New(b, region.WithName("r"))
	started, release := make(chan struct{}), make(chan struct{})
	var runs [2]int
	errs := make(chan error, 2)
	go func() {
		_, err := region.GetOrCreate(bg, ra, "k", func(context.Context) (string, error) {
			runs[0]++
			close(started)
			<-release
			return "from A", nil
		})
		errs <- err
	}()
	<-started
	var got string
	go func() {
		var err error
		got, err = region.GetOrCreate(bg, rb, "k", func(context.Context) (string, error) {
			runs[1]++
			return "from B", nil
		})
		errs <- err
	}()
	lockKey := b.Lock("r:k:k").Key()
	waitFor(t, "B to wait on A's lock", func() bool { return raw.PubSubNumSub(bg, lockKey).Val()[lockKey] > 0 })
	close(release)
	for range 2 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(eventually):
			t.Fatal("GetOrCreate did not return")
		}
	}
	if runs != [2]int{1, 0} || got != "from A" {
		t.Fatalf("creator runs %v, B got %q; want A's value made once", runs, got)
	}
	if st := rb.Stats(); st.LockWaits == 0 {
		t.Fatalf("B did not wait for A's lock: %+v", st)
	}
}

// A lock key without a time to live (written by hand, or restored without
// its expiry) is given the lock's lease by the next TryLock, so it counts as
// expired once the lock TTL has passed instead of stalling every waiter.
func TestLockKeyWithoutTTLGetsTheLease(t *testing.T) {
	const ttl = 5 * time.Second
	b, raw := shared(t, WithLockTTL(ttl))
	l := b.Lock("stuck")
	if err := raw.Set(bg, l.Key(), "a token nobody holds", 0).Err(); err != nil {
		t.Fatal(err)
	}
	ok, err := l.TryLock(bg)
	if err != nil || ok {
		t.Fatalf("TryLock over a held key = %v, %v; want false", ok, err)
	}
	if pttl := raw.PTTL(bg, l.Key()).Val(); pttl <= 0 || pttl > ttl {
		t.Errorf("the stuck lock key expires in %v; want at most the lock TTL %v", pttl, ttl)
	}
	// A lock that expires normally is left as it is.
	if err := raw.Set(bg, l.Key(), "another", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := l.TryLock(bg); ok {
		t.Fatal("TryLock took a held lock")
	}
	if pttl := raw.PTTL(bg, l.Key()).Val(); pttl <= ttl {
		t.Errorf("a held lock with its own expiry now expires in %v; want it untouched", pttl)
	}
}
