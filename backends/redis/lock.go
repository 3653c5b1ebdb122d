package redisbackend

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/region"
)

// Lock is the distributed lock on one key: a Redis key holding a random
// token with a lease (SET NX PX), in the same Cluster slot as the key it
// locks. It implements region.Mutex and region.Fencer. A Lock is meant to be
// used by one goroutine at a time (the region's leader for the key); it is
// not reentrant.
type Lock struct {
	b      *Backend
	key    string // the Redis key of the lock, prefix included
	suffix string // the lock key without the prefix: what Fence guards

	mu      sync.Mutex
	token   string        // guarded by mu; empty when not held
	stop    chan struct{} // guarded by mu; closed by Unlock to stop the extender
	stopped chan struct{} // guarded by mu; closed when the extender returned (Unlock does not wait for it)
}

// Lock returns the distributed lock on key. Locks are cheap: each call
// returns a new, unheld one.
func (b *Backend) Lock(key string) *Lock {
	s := lockSuffix(b.prefix, key)
	return &Lock{b: b, key: b.prefix + s, suffix: s}
}

// Key returns the Redis key of the lock.
func (l *Lock) Key() string { return l.key }

// newToken returns 128 random bits, base64 encoded.
func newToken() string {
	var buf [16]byte
	_, _ = rand.Read(buf[:]) // never fails (crypto/rand panics instead)
	return base64.RawURLEncoding.EncodeToString(buf[:])
}

// TryLock takes the lock if no one holds it (SET lockkey token NX PX ttl) and
// reports whether it did. While held, a goroutine extends the lease every
// third of the lock TTL, until Unlock or until the lock is found lost.
// TryLock on a Lock that is already held returns false. When Redis does not
// answer, the SET may still have landed: the backend releases it in the
// background (see releaser).
func (l *Lock) TryLock(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.token != "" {
		return false, nil
	}
	tok := newToken()
	ok, err := run(ctx, l.b, "lock", func(ctx context.Context) (bool, error) {
		n, err := lockScript.Run(ctx, l.b.client, []string{l.key}, tok, ttlMillis(l.b.lockTTL)).Int64()
		return n == 1, err
	})
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return false, err // never sent
		}
		// The SET may have reached Redis even though its answer did not
		// reach us: release it, if it did, rather than let it block the
		// others for a whole lease.
		l.b.releases.add(l.key, tok)
		return false, err
	}
	if !ok {
		return false, nil
	}
	l.token = tok
	l.stop, l.stopped = make(chan struct{}), make(chan struct{})
	go l.extend(tok, l.stop, l.stopped)
	return true, nil
}

// extendScript renews the lease of KEYS[1] to ARGV[2] milliseconds if it
// still holds the token ARGV[1].
// lockScript takes the lock KEYS[1] for token ARGV[1] with a lease of
// ARGV[2] milliseconds (SET NX PX). A lock key found without a time to live
// (written by hand, or restored without its expiry) is given the lease:
// it counts as expired once the lock TTL has passed, rather than stalling
// every waiter for its whole wait budget, or for ever.
var lockScript = goredis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

var extendScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// extend renews the lease every third of the lock TTL until stop is closed
// or the lock is no longer tok. Unlock does not wait for it: once stop is
// closed it returns, at the latest when the renewal it is sending ends (one
// operation timeout); a renewal that reaches Redis after the release finds
// another token or none, and changes nothing.
func (l *Lock) extend(tok string, stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	every := max(l.b.lockTTL/3, minExtendInterval)
	t := time.NewTicker(every)
	defer t.Stop()
	px := ttlMillis(l.b.lockTTL)
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		select {
		case <-stop: // stopped as it ticked
			return
		default:
		}
		n, err := run(context.Background(), l.b, "extend lock", func(ctx context.Context) (int64, error) {
			return extendScript.Run(ctx, l.b.client, []string{l.key}, tok, px).Int64()
		})
		if err == nil && n == 0 {
			return // lost: expired and possibly taken by another
		}
	}
}

// unlockScript deletes KEYS[1] if it holds the token ARGV[1] and then
// publishes on the channel ARGV[2]; it also publishes if the lock is gone
// (its lease ran out before the holder was done), so waiters look again.
var unlockScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '1')
  return 1
end
if not cur then
  redis.call('PUBLISH', ARGV[2], '0')
end
return 0
`)

// Unlock stops extending the lease and, if the lock still holds this Lock's
// token, deletes it and notifies the waiters (compare-and-delete in one Lua
// script: a lock that expired and was taken by another is never deleted).
// It waits for neither the renewal in flight nor Redis beyond one operation
// timeout: a release that fails (Redis is down or paused, or ctx ended) is
// returned as an error and retried by the backend in the background until
// it is answered, the lease has run out or the backend is closed, so the
// other processes' waiters are freed as soon as Redis is back. Unlock of a
// Lock that is not held does nothing.
func (l *Lock) Unlock(ctx context.Context) error {
	l.mu.Lock()
	tok, stop := l.token, l.stop
	l.token, l.stop, l.stopped = "", nil, nil
	l.mu.Unlock()
	if tok == "" {
		return nil
	}
	close(stop)
	if err := l.release(ctx, tok); err != nil {
		l.b.releases.add(l.key, tok)
		return err
	}
	return nil
}

// release runs unlockScript for tok.
func (l *Lock) release(ctx context.Context, tok string) error {
	return l.b.release(ctx, l.key, tok)
}

// release deletes the lock key if it holds tok, and notifies its waiters.
func (b *Backend) release(ctx context.Context, key, tok string) error {
	_, err := run(ctx, b, "unlock", func(ctx context.Context) (int64, error) {
		return unlockScript.Run(ctx, b.client, []string{key}, tok, key).Int64()
	})
	return err
}

// Fence returns the guard that holds while the lock is still this Lock's:
// the lock key must still hold its token. The region adds it to the guards
// of the value it stores under the lock. On a Lock that is not held it
// returns a guard that never holds.
func (l *Lock) Fence() region.Guard {
	l.mu.Lock()
	defer l.mu.Unlock()
	return region.Guard{Key: l.suffix, Value: []byte(l.token)} // "" never holds: tokens are non-empty
}

// pollScript returns the remaining lease of the lock KEYS[1] in
// milliseconds, as PTTL does. Wait polls with a script rather than with
// PTTL because CLIENT PAUSE WRITE holds scripts as it holds writes: while
// Redis takes no writes, the holder can neither store its value nor release
// the lock, and the waiter, whose poll is held too, learns it within one
// operation timeout instead of waiting for the lease.
var pollScript = goredis.NewScript(`return redis.call('PTTL', KEYS[1])`)

// Wait blocks until the lock is released or its lease runs out, or ctx ends.
// It listens for the holder's unlock notification and, so that a holder
// killed without unlocking delays it by at most its lease, also polls the
// lock's remaining lease (pollScript), sleeping at most 200ms, and at most
// the operation timeout, between polls. It returns nil once the lock is
// free, ctx's error when ctx ends first, and an error if Redis cannot be
// asked or does not take writes (paused): the holder could not finish, so
// it is not worth waiting for. A Redis that stops answering while a caller
// waits is noticed within 2.25 operation timeouts: a poll (every timeout
// at most, jittered by a quarter), then its timeout.
func (l *Lock) Wait(ctx context.Context) error {
	notified, stop := l.b.notify.watch(l.key)
	defer stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		ms, err := run(ctx, l.b, "wait for lock", func(ctx context.Context) (int64, error) {
			return pollScript.Run(ctx, l.b.client, []string{l.key}).Int64()
		})
		if err != nil {
			return err
		}
		if ms == -2 {
			return nil // no lock
		}
		d := maxWaitPoll
		if l.b.timeout > 0 {
			d = min(d, l.b.timeout)
		}
		if ms >= 0 {
			d = min(d, time.Duration(ms)*time.Millisecond+time.Millisecond)
		}
		// Jitter, so waiters in many processes do not poll in step.
		d = d*3/4 + mrand.N(d/2+1)
		timer.Reset(d)
		select {
		case <-notified:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("redisbackend: wait for lock: %w", ctx.Err())
		case <-timer.C:
		}
	}
}

// Locked reports whether the lock is held, by this Lock or by any other,
// without taking it (region.LockProber): whether its key exists. The answer
// may be out of date as soon as it is returned.
func (l *Lock) Locked(ctx context.Context) (bool, error) {
	return run(ctx, l.b, "probe lock", func(ctx context.Context) (bool, error) {
		n, err := l.b.client.Exists(ctx, l.key).Result()
		return n == 1, err
	})
}

var (
	_ region.Mutex      = (*Lock)(nil)
	_ region.Fencer     = (*Lock)(nil)
	_ region.LockProber = (*Lock)(nil)
)

// notifier multiplexes the unlock notifications of every lock that a
// goroutine of this process waits on over one PubSub connection. Each lock
// key is a channel, subscribed while someone waits on it. Subscribing is done
// by a goroutine of its own, started on the first wait, so that a waiter
// never blocks on it: until the subscription is in place (or while Redis
// cannot be reached), Wait's polling covers the gap.
type notifier struct {
	b *Backend

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{} // guarded by mu; by channel
	kick    chan struct{}                         // guarded by mu; wakes the subscriber; nil until the first wait
	ps      *goredis.PubSub                       // guarded by mu; made by the subscriber
	closed  bool                                  // guarded by mu
}

// watch registers a waiter on channel and returns what it is notified on,
// and the function that unregisters it.
func (n *notifier) watch(channel string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ch, func() {}
	}
	if n.waiters == nil {
		n.waiters = make(map[string]map[chan struct{}]struct{})
	}
	set := n.waiters[channel]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		n.waiters[channel] = set
		n.wake()
	}
	set[ch] = struct{}{}
	return ch, func() { n.unwatch(channel, ch) }
}

func (n *notifier) unwatch(channel string, ch chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	set := n.waiters[channel]
	delete(set, ch)
	if len(set) == 0 && !n.closed {
		delete(n.waiters, channel)
		n.wake()
	}
}

// wake tells the subscriber that the channels waited on changed, starting
// it on first use. n.mu is held.
func (n *notifier) wake() {
	if n.kick == nil {
		n.kick = make(chan struct{}, 1)
		go n.subscriber(n.kick)
	}
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// subscriber keeps the PubSub's subscriptions equal to the channels waited
// on, until the notifier is closed.
func (n *notifier) subscriber(kick <-chan struct{}) {
	subscribed := make(map[string]bool)
	var ps *goredis.PubSub
	for range kick {
		n.mu.Lock()
		var add, del []string
		for c := range n.waiters {
			if !subscribed[c] {
				add = append(add, c)
			}
		}
		for c := range subscribed {
			if _, ok := n.waiters[c]; !ok {
				del = append(del, c)
			}
		}
		n.mu.Unlock()
		ctx, cancel := n.opContext()
		if len(add) > 0 {
			if ps == nil {
				ps = n.b.client.Subscribe(ctx, add...)
				n.mu.Lock()
				closed := n.closed
				if !closed {
					n.ps = ps
				}
				n.mu.Unlock()
				if closed {
					_ = ps.Close()
					cancel()
					return
				}
				go n.dispatch(ps.Channel())
			} else {
				// On error the PubSub keeps the channels and subscribes
				// to them when it reconnects.
				_ = ps.Subscribe(ctx, add...)
			}
			for _, c := range add {
				subscribed[c] = true
			}
		}
		if len(del) > 0 && ps != nil {
			_ = ps.Unsubscribe(ctx, del...)
			for _, c := range del {
				delete(subscribed, c)
			}
		}
		cancel()
	}
}

func (n *notifier) opContext() (context.Context, context.CancelFunc) {
	if n.b.timeout > 0 {
		return context.WithTimeout(context.Background(), n.b.timeout)
	}
	return context.Background(), func() {}
}

// dispatch wakes the waiters of each notification until msgs is closed.
func (n *notifier) dispatch(msgs <-chan *goredis.Message) {
	for m := range msgs {
		n.mu.Lock()
		for ch := range n.waiters[m.Channel] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		n.mu.Unlock()
	}
}

func (n *notifier) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	for _, set := range n.waiters {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	if n.kick != nil {
		close(n.kick)
	}
	if n.ps == nil {
		return nil
	}
	if err := n.ps.Close(); err != nil {
		return fmt.Errorf("redisbackend: close: %w", err)
	}
	return nil
}

// releaser releases in the background the locks whose release failed: an
// Unlock that Redis did not answer (down, paused, or the caller's context
// ended first), or a TryLock whose answer was lost, whose SET may have
// landed. It retries each, with backoff, until Redis answers, the lease
// the lock had has surely run out (it expires by itself then), or the
// backend is closed, so that the waiters of the other processes are freed
// as soon as Redis is back rather than when the lease ends. Its goroutine
// starts when the first release is added and returns when none is left;
// it is the backend's: Close stops it and waits for it.
type releaser struct {
	b *Backend // set by New; read-only afterwards
	// ctx is the context of the retries; Close cancels it. Set by New.
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
	// However recently renewed, the lease ends within a lock TTL.
	rl.pending[heldLock{key, tok}] = time.Now().Add(rl.b.lockTTL)
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

// done forgets a release that Redis answered.
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
