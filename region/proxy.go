package region

import (
	"context"
	"io"
	"sync/atomic"
	"time"
)

// Backend middleware, dogpile's ProxyBackend and wrap: a wrapper is a
// Backend that calls another one, to measure, log, retry or change what
// passes. Write one by embedding Proxy and overriding the methods to
// intercept; Proxy forwards the rest, optional interfaces included, and
// WrapBackend stacks wrappers:
//
//	type logged struct{ region.Proxy }
//
//	func (l logged) Delete(ctx context.Context, keys ...string) error {
//		log.Printf("delete %d keys", len(keys))
//		return l.Proxy.Delete(ctx, keys...)
//	}
//
//	b := region.WrapBackend(memory.New(), func(b region.Backend) region.Backend {
//		return logged{region.Proxy{Next: b}}
//	})
//
// A region changes what it does according to the optional interfaces its
// backend implements (ProcessLocal, CounterRefs, ValueAppender, TagBumper,
// the operation timeout Timeout() of the Redis backend; Fencer and
// LockProber on a Mutex), so a wrapper must neither hide them (the region
// would, for example, read its invalidation record from a memory backend
// instead of the process, or lose the lock fence) nor claim them when the
// backend it wraps lacks them. Proxy implements every one of them and also
// Unwrap: a region takes a wrapper's optional method as present only when
// every backend down the chain of Unwrap implements it too, and then calls
// the wrapper's method, which the wrapper may intercept. The same holds for
// a Mutex wrapper that implements Unwrap() Mutex (MutexProxy).
//
// A wrapper of a ProcessLocal backend is given keys that may live in
// recycled memory, as the backend is (see Backend.GetMulti): it must not keep
// them after the call returns. Metrics is a wrapper shipped with the region.

// Proxy is a Backend that forwards every call to Next: embed it in a
// wrapper and override what the wrapper intercepts. It implements the
// optional interfaces of a backend (ProcessLocal, CounterRefs,
// ValueAppender, TagBumper, BreakerWatcher, io.Closer and the operation
// timeout) by
// forwarding them; a region uses them only where Next has them (see Unwrap).
// A Proxy is as safe for concurrent use as Next.
type Proxy struct {
	// Next is the wrapped backend.
	Next Backend
}

// GetMulti calls Next.GetMulti.
func (p Proxy) GetMulti(ctx context.Context, keys []string) ([][]byte, error) {
	return p.Next.GetMulti(ctx, keys)
}

// SetMulti calls Next.SetMulti.
func (p Proxy) SetMulti(ctx context.Context, items []Item) error {
	return p.Next.SetMulti(ctx, items)
}

// SetIf calls Next.SetIf.
func (p Proxy) SetIf(ctx context.Context, item Item, guards []Guard) (bool, error) {
	return p.Next.SetIf(ctx, item, guards)
}

// Delete calls Next.Delete.
func (p Proxy) Delete(ctx context.Context, keys ...string) error {
	return p.Next.Delete(ctx, keys...)
}

// Incr calls Next.Incr.
func (p Proxy) Incr(ctx context.Context, key string) (int64, error) {
	return p.Next.Incr(ctx, key)
}

// Mutex returns Next's Mutex for key, as it is (nil when Next has none).
// A wrapper that wraps it too must return nil where Next does, and should
// embed MutexProxy so that the Fencer and LockProber stay visible.
func (p Proxy) Mutex(key string) Mutex { return p.Next.Mutex(key) }

// Unwrap returns Next.
func (p Proxy) Unwrap() Backend { return p.Next }

// ProcessLocal reports whether Next is ProcessLocal.
func (p Proxy) ProcessLocal() bool {
	l, ok := p.Next.(ProcessLocal)
	return ok && l.ProcessLocal()
}

// Counter calls Next's Counter; a region calls it only when Next has
// CounterRefs.
func (p Proxy) Counter(key string) *atomic.Int64 { return p.Next.(CounterRefs).Counter(key) }

// AppendValue calls Next's AppendValue; a region calls it only when Next
// is a ValueAppender.
func (p Proxy) AppendValue(buf []byte, key string) ([]byte, bool) {
	return p.Next.(ValueAppender).AppendValue(buf, key)
}

// BumpTags calls Next's BumpTags; a region calls it only when Next is a
// TagBumper.
func (p Proxy) BumpTags(ctx context.Context, counters, markers []string, delta int64, lease time.Duration) error {
	return p.Next.(TagBumper).BumpTags(ctx, counters, markers, delta, lease)
}

// Timeout returns the operation timeout Next reports (see the Redis
// backend's Timeout), zero when it reports none.
func (p Proxy) Timeout() time.Duration {
	if t, ok := p.Next.(timeoutReporter); ok {
		return t.Timeout()
	}
	return 0
}

// BreakerOpen calls Next's BreakerOpen; a region calls it only when Next
// is a BreakerWatcher.
func (p Proxy) BreakerOpen() bool { return p.Next.(BreakerWatcher).BreakerOpen() }

// WatchBreaker calls Next's WatchBreaker; a region calls it only when Next
// is a BreakerWatcher.
func (p Proxy) WatchBreaker(f func(open bool)) (stop func()) {
	return p.Next.(BreakerWatcher).WatchBreaker(f)
}

// Close closes Next if it is an io.Closer, and returns nil otherwise.
func (p Proxy) Close() error {
	if c, ok := p.Next.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// MutexProxy is a Mutex that forwards every call to Next, for a wrapper of
// a backend's locks to embed, as Proxy is for the backend. It implements
// Fencer and LockProber by forwarding them; a region uses them only where
// Next has them (see Unwrap).
type MutexProxy struct {
	// Next is the wrapped lock.
	Next Mutex
}

// TryLock calls Next.TryLock.
func (p MutexProxy) TryLock(ctx context.Context) (bool, error) { return p.Next.TryLock(ctx) }

// Unlock calls Next.Unlock.
func (p MutexProxy) Unlock(ctx context.Context) error { return p.Next.Unlock(ctx) }

// Wait calls Next.Wait.
func (p MutexProxy) Wait(ctx context.Context) error { return p.Next.Wait(ctx) }

// Unwrap returns Next.
func (p MutexProxy) Unwrap() Mutex { return p.Next }

// Fence calls Next's Fence; a region calls it only when Next is a Fencer.
func (p MutexProxy) Fence() Guard { return p.Next.(Fencer).Fence() }

// Locked calls Next's Locked; a region calls it only when Next is a
// LockProber.
func (p MutexProxy) Locked(ctx context.Context) (bool, error) {
	return p.Next.(LockProber).Locked(ctx)
}

// WrapBackend returns b wrapped by each of wrappers, the first listed
// outermost (as dogpile's wrap): WrapBackend(b, f, g) is f(g(b)).
func WrapBackend(b Backend, wrappers ...func(Backend) Backend) Backend {
	for i := len(wrappers) - 1; i >= 0; i-- {
		b = wrappers[i](b)
	}
	return b
}

// ActualBackend returns the backend at the end of b's chain of wrappers
// (each implementing Unwrap() Backend, as Proxy does); b itself when b wraps
// nothing.
func ActualBackend(b Backend) Backend {
	for {
		u, ok := b.(interface{ Unwrap() Backend })
		if !ok {
			return b
		}
		next := u.Unwrap()
		if next == nil {
			return b
		}
		b = next
	}
}

// optional returns v as a T, an optional interface of a backend or of a
// Mutex, when v implements it and, if v wraps another (Unwrap), when every
// one down the chain implements it too: a wrapper that forwards a method
// the backend lacks does not make the region believe the backend has it.
func optional[T any](v any) (T, bool) {
	t, ok := v.(T)
	if !ok {
		var zero T
		return zero, false
	}
	for w := v; ; {
		var inner any
		switch u := w.(type) {
		case interface{ Unwrap() Backend }:
			if b := u.Unwrap(); b != nil {
				inner = b
			}
		case interface{ Unwrap() Mutex }:
			if m := u.Unwrap(); m != nil {
				inner = m
			}
		default:
			return t, true
		}
		if inner == nil {
			return t, true
		}
		if _, ok := inner.(T); !ok {
			var zero T
			return zero, false
		}
		w = inner
	}
}
