package memcachebackend

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/dogpile-go/dogpile/region"
)

// Polling of Lock.Wait: the first sleep, and the longest (also at most the
// operation timeout).
const (
	minWaitPoll = 2 * time.Millisecond
	maxWaitPoll = 100 * time.Millisecond
)

// minRenewInterval is the floor of the lease renewal period: memcached
// counts time in seconds, a renewal more often than that changes nothing.
const minRenewInterval = time.Second

// releaseAttempts bounds the compare-and-expire loop of a release when a
// renewal in flight keeps changing the lock's CAS id.
const releaseAttempts = 4

// Lock is the distributed lock on one key: a memcached item holding a
// random token, taken with add and given the lock TTL as its expiration. It
// implements region.Mutex and region.Fencer. A Lock is meant to be used by
// one goroutine at a time (the region's leader for the key); it is not
// reentrant.
type Lock struct {
	b    *Backend
	name string // "#L" + the hash of the locked key: what Fence guards
	key  string // the memcached key: the prefix and name

	mu    sync.Mutex
	token string        // guarded by mu; empty when not held
	stop  chan struct{} // guarded by mu; closed by Unlock to stop the renewal
}

// Lock returns the distributed lock on key. Locks are cheap: each call
// returns a new, unheld one. The lock's memcached key is the prefix, "#L"
// and the base64 of key's SHA-256, which no key of the backend's other
// forms can equal (see Key).
func (b *Backend) Lock(key string) *Lock {
	n := lockName(key)
	return &Lock{b: b, name: n, key: b.key(n)}
}

// Key returns the memcached key of the lock.
func (l *Lock) Key() string { return l.key }

// newToken returns 128 random bits, base64 encoded.
func newToken() string {
	var buf [16]byte
	_, _ = rand.Read(buf[:]) // never fails (crypto/rand panics instead)
	return base64.RawURLEncoding.EncodeToString(buf[:])
}

// TryLock takes the lock if no one holds it (add lockkey token, with the
// lock TTL as expiration) and reports whether it did. While held, a
// goroutine renews the lease every third of the lock TTL, until Unlock, the
// lock is found lost or the backend is closed. TryLock on a Lock that is
// already held returns false. When memcached does not answer, or the add
// is tried again on a new connection (see retryStale) and finds the lock
// taken, the first add may have landed: the backend releases the lock in
// the background if it holds this token (see releaser).
func (l *Lock) TryLock(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.token != "" {
		return false, nil
	}
	tok := newToken()
	exp := expiration(l.b.lockTTL)
	attempts := 0 // run may try the add twice (see retryStale)
	ok, err := run(ctx, l.b, "lock", func() (bool, error) {
		attempts++
		err := l.b.client.Add(&memcache.Item{Key: l.key, Value: []byte(tok), Expiration: exp})
		if errors.Is(err, memcache.ErrNotStored) {
			if attempts > 1 {
				// The first add may have landed before its connection
				// dropped: then the lock is ours, and this one found it.
				l.b.releases.add(l.key, tok)
			}
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		if !errors.Is(err, ErrUnavailable) { // not sent when the breaker is open
			l.b.releases.add(l.key, tok)
		}
		return false, err
	}
	if !ok {
		return false, nil
	}
	l.token = tok
	l.stop = make(chan struct{})
	l.b.startRenewal(l, tok, l.stop)
	return true, nil
}

// startRenewal starts the goroutine that renews l's lease, unless the
// backend is closed (the lease then runs its course).
func (b *Backend) startRenewal(l *Lock, tok string, stop <-chan struct{}) {
	b.renewMu.Lock()
	defer b.renewMu.Unlock()
	if b.closed {
		return
	}
	b.renewWG.Add(1)
	go func() {
		defer b.renewWG.Done()
		l.renew(tok, stop)
	}()
}

// renew renews the lease every third of the lock TTL until stop is closed,
// the backend is closed, or the lock no longer holds tok. A renewal is a
// compare-and-swap of the token onto itself with a new expiration (gets,
// then cas on its CAS id): it never extends another holder's lock. A
// renewal that memcached does not answer is tried again at the next tick.
func (l *Lock) renew(tok string, stop <-chan struct{}) {
	every := max(l.b.lockTTL/3, minRenewInterval)
	t := time.NewTicker(every)
	defer t.Stop()
	exp := expiration(l.b.lockTTL)
	for {
		select {
		case <-stop:
			return
		case <-l.b.ctx.Done():
			return
		case <-t.C:
		}
		select {
		case <-stop: // stopped as it ticked
			return
		default:
		}
		lost, err := run(l.b.ctx, l.b, "renew lock", func() (bool, error) {
			it, err := l.b.client.Get(l.key)
			if errors.Is(err, memcache.ErrCacheMiss) {
				return true, nil
			}
			if err != nil {
				return false, err
			}
			if string(it.Value) != tok {
				return true, nil
			}
			it.Expiration = exp
			switch err := l.b.client.CompareAndSwap(it); {
			case err == nil, errors.Is(err, memcache.ErrCASConflict):
				// A conflict is the release racing this renewal (Unlock
				// has closed stop by then), or another renewal of ours.
				return false, nil
			case errors.Is(err, memcache.ErrNotStored), errors.Is(err, memcache.ErrCacheMiss):
				return true, nil
			default:
				return false, err
			}
		})
		if err == nil && lost {
			return // expired, and possibly taken by another
		}
	}
}

// Unlock stops renewing the lease and, if the lock still holds this Lock's
// token, expires it at once: a compare-and-swap (gets, then cas on its CAS
// id) of the token with a negative expiration, which memcached takes as
// "expired now". As the cas fails if the lock changed after the gets, a
// lock that expired and was taken by another is never released by this
// one: there is no window between the comparison and the release. Unlock
// waits for memcached at most one operation timeout: a release that fails
// (memcached down or paused, or ctx ended) is returned as an error and
// retried by the backend in the background until it is answered, the lease
// has run out or the backend is closed. Unlock of a Lock that is not held
// does nothing.
func (l *Lock) Unlock(ctx context.Context) error {
	l.mu.Lock()
	tok, stop := l.token, l.stop
	l.token, l.stop = "", nil
	l.mu.Unlock()
	if tok == "" {
		return nil
	}
	close(stop)
	if err := l.b.release(ctx, l.key, tok); err != nil {
		l.b.releases.add(l.key, tok)
		return err
	}
	return nil
}

// release expires the lock at key if it holds tok (see Unlock).
func (b *Backend) release(ctx context.Context, key, tok string) error {
	_, err := run(ctx, b, "unlock", func() (struct{}, error) {
		for range releaseAttempts {
			it, err := b.client.Get(key)
			if errors.Is(err, memcache.ErrCacheMiss) {
				return struct{}{}, nil // expired already
			}
			if err != nil {
				return struct{}{}, err
			}
			if string(it.Value) != tok {
				return struct{}{}, nil // another's
			}
			it.Expiration = -1 // memcached: expired at once
			switch err := b.client.CompareAndSwap(it); {
			case err == nil, errors.Is(err, memcache.ErrNotStored), errors.Is(err, memcache.ErrCacheMiss):
				return struct{}{}, nil
			case errors.Is(err, memcache.ErrCASConflict):
				// A renewal landed between the gets and the cas: look again.
			default:
				return struct{}{}, err
			}
		}
		return struct{}{}, fmt.Errorf("lock %q kept changing", key)
	})
	return err
}

// Fence returns the guard that holds while the lock is still this Lock's:
// the lock must still hold its token. The region adds it to the guards of
// the value it stores under the lock. SetIf checks it in the multi-get that
// precedes the write, not atomically with it: see the package documentation
// for the window that leaves. On a Lock that is not held it returns a guard
// that never holds.
func (l *Lock) Fence() region.Guard {
	l.mu.Lock()
	defer l.mu.Unlock()
	return region.Guard{Key: l.name, Value: []byte(l.token)} // "" never holds: tokens are non-empty
}

// Wait blocks until the lock is free (released, or expired with its
// lease), or ctx ends. memcached has no notifications, so Wait polls the
// lock with a get, sleeping 2ms after the first poll and twice as long
// after each next one, up to 100ms and the operation timeout, with jitter
// so that waiters do not poll in step. It returns nil once the lock is
// free, ctx's error when ctx ends first, and an error if memcached cannot
// be asked: the holder could not finish either, so it is not worth waiting
// for.
// Locked reports whether some process holds the lock now
// (region.LockProber, for Region.KeyIsLocked): whether its item exists.
func (l *Lock) Locked(ctx context.Context) (bool, error) {
	return run(ctx, l.b, "probe lock", func() (bool, error) {
		_, err := l.b.client.Get(l.key)
		if errors.Is(err, memcache.ErrCacheMiss) {
			return false, nil
		}
		return err == nil, err
	})
}

func (l *Lock) Wait(ctx context.Context) error {
	longest := maxWaitPoll
	if l.b.timeout > 0 {
		longest = min(longest, l.b.timeout)
	}
	d := minWaitPoll
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		held, err := run(ctx, l.b, "wait for lock", func() (bool, error) {
			_, err := l.b.client.Get(l.key)
			if errors.Is(err, memcache.ErrCacheMiss) {
				return false, nil
			}
			return err == nil, err
		})
		if err != nil {
			return err
		}
		if !held {
			return nil
		}
		timer.Reset(d*3/4 + mrand.N(d/2+1))
		select {
		case <-ctx.Done():
			return fmt.Errorf("memcachebackend: wait for lock: %w", ctx.Err())
		case <-timer.C:
		}
		d = min(2*d, longest)
	}
}

var (
	_ region.Mutex  = (*Lock)(nil)
	_ region.Fencer = (*Lock)(nil)

	_ region.LockProber = (*Lock)(nil)
)

// releaser releases in the background the locks whose release failed: an
// Unlock that memcached did not answer (down, paused, or the caller's
// context ended first), or a TryLock whose answer was lost, whose add may
// have landed. It retries each, with backoff, until memcached answers, the
// lease the lock had has surely run out (it expires by itself then), or the
// backend is closed, so that the waiters of the other processes are freed
// as soon as memcached is back rather than when the lease ends. Its
// goroutine starts when the first release is added and returns when none is
// left; it is the backend's: Close stops it and waits for it.
type releaser struct {
	b *Backend // set by init; read-only afterwards
	// ctx is the context of the retries; close cancels it. Set by init.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	pending map[heldLock]time.Time // guarded by mu; each release, until when it is worth trying
	running bool                   // guarded by mu; the goroutine runs
	closed  bool                   // guarded by mu; no goroutine starts from then on
	wg      sync.WaitGroup         // the goroutine; Add is called under mu
}

// heldLock is a lock key and the token it may hold.
type heldLock struct{ key, token string }

// Backoff of the releaser's retries.
const (
	minReleaseRetry = 50 * time.Millisecond
	maxReleaseRetry = time.Second
)

// init makes the context of the retries.
func (rl *releaser) init(b *Backend) {
	rl.b = b
	rl.ctx, rl.cancel = context.WithCancel(context.Background())
}

// add has the lock key released in the background if it holds tok.
func (rl *releaser) add(key, tok string) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.closed {
		return // it expires with its lease
	}
	if rl.pending == nil {
		rl.pending = make(map[heldLock]time.Time)
	}
	// However recently renewed, the lease ends within a lock TTL, plus
	// memcached's rounding (expiration).
	rl.pending[heldLock{key, tok}] = time.Now().Add(rl.b.lockTTL + 2*time.Second)
	if !rl.running {
		rl.running = true
		rl.wg.Add(1)
		go rl.run()
	}
}

// run retries the pending releases until none is left or the backend is
// closed.
func (rl *releaser) run() {
	defer rl.wg.Done()
	delay := minReleaseRetry
	sleep := time.NewTimer(0) // the first try at once
	defer sleep.Stop()
	for {
		select {
		case <-rl.ctx.Done():
			return
		case <-sleep.C:
		}
		for _, h := range rl.due() {
			if err := rl.b.release(rl.ctx, h.key, h.token); err == nil {
				rl.done(h)
			}
		}
		if !rl.more() {
			return
		}
		sleep.Reset(delay)
		delay = min(2*delay, maxReleaseRetry)
	}
}

// due returns the pending releases still worth trying, forgetting the
// others.
func (rl *releaser) due() []heldLock {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	now := time.Now()
	out := make([]heldLock, 0, len(rl.pending))
	for h, until := range rl.pending {
		if now.After(until) {
			delete(rl.pending, h)
			continue
		}
		out = append(out, h)
	}
	return out
}

// done forgets a release that memcached answered.
func (rl *releaser) done(h heldLock) {
	rl.mu.Lock()
	delete(rl.pending, h)
	rl.mu.Unlock()
}

// more reports whether releases are pending; when none is, it records that
// the goroutine returns, under the same lock, so the next add starts one.
func (rl *releaser) more() bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if len(rl.pending) == 0 || rl.closed {
		rl.running = false
		return false
	}
	return true
}

// close stops the goroutine and waits for it; the releases still pending
// are left to their leases.
func (rl *releaser) close() {
	rl.mu.Lock()
	rl.closed = true
	rl.mu.Unlock()
	rl.cancel()
	rl.wg.Wait()
}
