package memcachebackend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// outTimeout is the backend timeout of the outage tests: generous enough
// for -race on a slow machine, as the bound is three times it.
const outTimeout = 200 * time.Millisecond

// outBound is the bound of a caller operation during an outage: three
// backend timeouts, as for Redis.
const outBound = 3 * outTimeout

// ops are one call of every backend operation.
func ops(b *Backend) []struct {
	name string
	fn   func(context.Context) error
} {
	return []struct {
		name string
		fn   func(context.Context) error
	}{
		{"GetMulti", func(ctx context.Context) error { _, err := b.GetMulti(ctx, []string{"a", "b"}); return err }},
		{"SetMulti", func(ctx context.Context) error {
			return b.SetMulti(ctx, []region.Item{{Key: "a", Value: []byte("1"), TTL: time.Minute}, {Key: "b", Value: []byte("2")}})
		}},
		{"SetIf", func(ctx context.Context) error {
			_, err := b.SetIf(ctx, region.Item{Key: "a", Value: []byte("3")}, []region.Guard{{Key: "b", Value: []byte("2")}})
			return err
		}},
		{"Incr", func(ctx context.Context) error { _, err := b.Incr(ctx, "ctr"); return err }},
		{"Delete", func(ctx context.Context) error { return b.Delete(ctx, "a", "x") }},
		{"TryLock", func(ctx context.Context) error {
			l := b.Lock("lk")
			ok, err := l.TryLock(ctx)
			if ok {
				err = l.Unlock(ctx)
			}
			return err
		}},
		{"Wait", func(ctx context.Context) error { return b.Lock("lk").Wait(ctx) }},
	}
}

// dialCounter counts the connections a client dials.
type dialCounter struct{ n atomic.Int64 }

func (d *dialCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

// TestServerDown: with the server killed every operation fails (within the
// bound: none hangs), the breaker then fails fast without touching the
// network, and after a restart the backend works again by itself.
func TestServerDown(t *testing.T) {
	srv := testharness.Memcached(t)
	dials := &dialCounter{}
	client := memcache.New(srv.Addr)
	client.Timeout, client.DialContext = outTimeout, dials.dial
	const failures, cooldown = 3, 2 * time.Second
	b := New(client, WithPrefix("down"), WithTimeout(outTimeout), WithBreaker(failures, cooldown))
	t.Cleanup(func() { _ = b.Close() })
	for _, op := range ops(b) {
		if err := op.fn(bg); err != nil {
			t.Fatalf("%s with the server up: %v", op.name, err)
		}
	}

	srv.Kill()
	for i, op := range ops(b)[:failures] {
		var err error
		start := time.Now()
		within(t, op.name, func() { err = op.fn(bg) })
		if err == nil {
			t.Fatalf("%s with the server down: no error", op.name)
		}
		if errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s: breaker open after %d failures, want %d: %v", op.name, i, failures, err)
		}
		if took := time.Since(start); took > outBound {
			t.Errorf("%s with the server down took %v; the bound is %v", op.name, took, outBound)
		}
	}
	// Open: every operation fails fast, without dialling.
	for _, op := range ops(b) {
		before := dials.n.Load()
		var err error
		within(t, op.name, func() { err = op.fn(bg) })
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s with the breaker open = %v, want ErrUnavailable", op.name, err)
		}
		if n := dials.n.Load() - before; n != 0 {
			t.Fatalf("%s with the breaker open dialled %d connections", op.name, n)
		}
	}

	srv.Restart(t)
	waitFor(t, "the backend to work again", func() bool {
		_, err := b.GetMulti(bg, []string{"a"})
		return err == nil
	})
	for _, op := range ops(b) {
		if err := op.fn(bg); err != nil {
			t.Fatalf("%s after the restart: %v", op.name, err)
		}
	}
}

// TestPausedServer: a server that takes connections and commands but
// answers nothing (SIGSTOP) costs an operation its timeout, not the
// client's, whichever way the operation runs: in the caller's goroutine
// (Open's client, whose socket timeout is the backend's) or bounded in a
// goroutine (a client with gomemcache's 500ms socket timeout, or a caller
// context that can end).
func TestPausedServer(t *testing.T) {
	srv := testharness.Memcached(t)
	opened := newBackend(t, []string{srv.Addr}, WithTimeout(outTimeout), WithBreaker(0, 0))
	slowClient := memcache.New(srv.Addr) // socket timeout 500ms
	t.Cleanup(func() { _ = slowClient.Close() })
	given := New(slowClient, WithPrefix("paused"), WithTimeout(outTimeout), WithBreaker(0, 0))
	t.Cleanup(func() { _ = given.Close() })
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	for _, c := range []struct {
		name string
		b    *Backend
		ctx  context.Context
	}{
		{"Open", opened, bg},
		{"Open/cancellable-context", opened, ctx},
		{"New/500ms-socket-timeout", given, bg},
	} {
		for _, op := range ops(c.b) {
			if err := op.fn(c.ctx); err != nil {
				t.Fatalf("%s %s with the server up: %v", c.name, op.name, err)
			}
		}
	}
	srv.Pause()
	t.Cleanup(srv.Resume)
	for _, c := range []struct {
		name string
		b    *Backend
		ctx  context.Context
	}{
		{"Open", opened, bg},
		{"Open/cancellable-context", opened, ctx},
		{"New/500ms-socket-timeout", given, bg},
	} {
		for _, op := range ops(c.b) {
			var err error
			start := time.Now()
			within(t, op.name, func() { err = op.fn(c.ctx) })
			took := time.Since(start)
			t.Logf("%s %s: %v after %v", c.name, op.name, err, took)
			if err == nil {
				t.Errorf("%s %s on a paused server: no error", c.name, op.name)
			}
			// TryLock is two operations (the lock, then its release in the
			// background): one timeout.
			if took > outBound {
				t.Errorf("%s %s on a paused server took %v; the bound is %v", c.name, op.name, took, outBound)
			}
		}
	}
}

// outRig is a region over a server of the test's own, the breaker off so
// that every operation reaches the network (the worst case).
type outRig struct {
	srv *testharness.MemcachedServer
	b   *Backend
	r   *region.Region
}

func newOutRig(t *testing.T) *outRig {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr}, WithTimeout(outTimeout), WithBreaker(0, 0))
	r := region.New(b, region.WithName("out"), region.WithExpiration(time.Minute), region.WithWaitTimeout(4*time.Second))
	t.Cleanup(func() { _ = r.Close() })
	return &outRig{srv: srv, b: b, r: r}
}

// outOp is one caller operation: prepare runs before the fault, run during
// it and returns the value it served; want lists what may be served (the
// creator's value always may).
type outOp struct {
	name    string
	prepare func(t *testing.T, g *outRig, key string)
	run     func(ctx context.Context, g *outRig, key string) (string, error)
	want    func(key string) []string
}

func made(key string) string   { return "made " + key }
func stored(key string) string { return "stored " + key }

func create(key string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return made(key), nil }
}

var outOps = []outOp{
	{name: "GetOrCreate/hit",
		prepare: func(t *testing.T, g *outRig, key string) {
			if err := g.r.Set(bg, key, stored(key)); err != nil {
				t.Fatal(err)
			}
		},
		run: func(ctx context.Context, g *outRig, key string) (string, error) {
			return region.GetOrCreate(ctx, g.r, key, create(key))
		},
		want: func(key string) []string { return []string{stored(key)} }},
	{name: "GetOrCreate/miss",
		run: func(ctx context.Context, g *outRig, key string) (string, error) {
			return region.GetOrCreate(ctx, g.r, key, create(key))
		}},
	{name: "GetOrCreate/miss/tags",
		prepare: func(t *testing.T, g *outRig, key string) {
			if err := g.r.InvalidateTags(bg, key+"-a"); err != nil { // makes the counter
				t.Fatal(err)
			}
		},
		run: func(ctx context.Context, g *outRig, key string) (string, error) {
			return region.GetOrCreate(ctx, g.r, key, create(key), region.WithTags(key+"-a", key+"-b"))
		}},
	{name: "GetOrCreate/stale",
		prepare: func(t *testing.T, g *outRig, key string) {
			if err := g.r.Set(bg, key, stored(key), region.WithTags(key+"-t")); err != nil {
				t.Fatal(err)
			}
		},
		run: func(ctx context.Context, g *outRig, key string) (string, error) {
			return region.GetOrCreate(ctx, g.r, key, create(key), region.ExpireAfter(time.Nanosecond), region.WithTags(key+"-t"))
		},
		want: func(key string) []string { return []string{stored(key)} }},
	{name: "GetOrCreate/locked-elsewhere",
		prepare: func(t *testing.T, g *outRig, key string) {
			// Another process holds the lock, with a long lease.
			raw := rawClient(t, g.srv.Addr)
			lk := g.b.Lock("out:k:" + key).Key()
			if err := raw.Add(&memcache.Item{Key: lk, Value: []byte("another process"), Expiration: 60}); err != nil {
				t.Fatal(err)
			}
		},
		run: func(ctx context.Context, g *outRig, key string) (string, error) {
			return region.GetOrCreate(ctx, g.r, key, create(key))
		}},
	{name: "GetOrCreateMulti/tags",
		run: func(ctx context.Context, g *outRig, key string) (string, error) {
			keys := []string{key + "-0", key + "-1"}
			m, err := region.GetOrCreateMulti(ctx, g.r, keys, func(_ context.Context, missing []string) (map[string]string, error) {
				out := make(map[string]string, len(missing))
				for _, k := range missing {
					out[k] = made(key)
				}
				return out, nil
			}, region.WithTags(key+"-t"))
			if err != nil {
				return "", err
			}
			for _, k := range keys {
				if m[k] != made(key) {
					return m[k], nil
				}
			}
			return made(key), nil
		}},
}

// fault brings one fault on, and returns what ends it, and a channel that
// the rounds after the first wait for (nil: none waits).
type fault struct {
	name  string
	start func(t *testing.T, g *outRig) (end func(), later <-chan struct{})
}

var (
	faultKilled = fault{"killed", func(t *testing.T, g *outRig) (func(), <-chan struct{}) {
		g.srv.Kill()
		return func() {
			if err := g.srv.Start(); err != nil {
				t.Fatal(err)
			}
		}, nil
	}}
	faultPaused = fault{"paused (SIGSTOP)", func(_ *testing.T, g *outRig) (func(), <-chan struct{}) {
		g.srv.Pause()
		return g.srv.Resume, nil
	}}
	// faultRestarting kills the server and starts it again while the
	// operations run: their first round meets it down, the later ones
	// empty (every entry, counter and generation lost).
	faultRestarting = fault{"restarting", func(t *testing.T, g *outRig) (func(), <-chan struct{}) {
		g.srv.Kill()
		up := make(chan struct{})
		var err error
		go func() {
			defer close(up)
			time.Sleep(outTimeout)
			err = g.srv.Start()
		}()
		return func() {
			<-up
			if err != nil {
				t.Fatal(err)
			}
		}, up
	}}
)

// TestRegionDuringOutage: with memcached killed, paused, or restarted while
// the calls run, every region read returns a value it may serve (the
// creator's, or the one stored before) and no error, each within three
// backend timeouts. Each operation runs three times in turn, on keys of
// its own; with the restart, the first time while memcached is down and
// the others once it is back, empty.
func TestRegionDuringOutage(t *testing.T) {
	for _, f := range []fault{faultKilled, faultPaused, faultRestarting} {
		t.Run(f.name, func(t *testing.T) {
			g := newOutRig(t)
			const rounds = 3
			keys := make([][]string, len(outOps))
			for i, op := range outOps {
				for n := range rounds {
					k := fmt.Sprintf("%s#%d", op.name, n)
					keys[i] = append(keys[i], k)
					if op.prepare != nil {
						op.prepare(t, g, k)
					}
				}
			}
			end, later := f.start(t, g)
			type result struct {
				max  time.Duration
				errs []string
			}
			results := make([]result, len(outOps))
			var wg sync.WaitGroup
			for i, op := range outOps {
				wg.Go(func() {
					for n, k := range keys[i] {
						if n > 0 && later != nil {
							<-later
						}
						start := time.Now()
						v, err := op.run(bg, g, k)
						results[i].max = max(results[i].max, time.Since(start))
						var want []string
						if op.want != nil {
							want = op.want(k)
						}
						switch {
						case err != nil:
							results[i].errs = append(results[i].errs, fmt.Sprintf("%s: error %v", k, err))
						case v != made(k) && !slices.Contains(want, v):
							results[i].errs = append(results[i].errs, fmt.Sprintf("%s: served %q", k, v))
						}
					}
				})
			}
			within(t, "the operations", wg.Wait)
			end()
			var report strings.Builder
			fmt.Fprintf(&report, "%s, timeout %v, bound %v:", f.name, outTimeout, outBound)
			for i, op := range outOps {
				fmt.Fprintf(&report, "\n  %-32s %6.0fms", op.name, float64(results[i].max)/float64(time.Millisecond))
			}
			t.Log(report.String())
			for i, op := range outOps {
				for _, e := range results[i].errs {
					t.Errorf("%s during %s: %s", op.name, f.name, e)
				}
				if results[i].max > outBound {
					t.Errorf("%s during %s took %v; the bound is %v", op.name, f.name, results[i].max, outBound)
				}
			}
			// Once memcached answers again the region works by itself.
			waitFor(t, "memcached to answer", func() bool {
				_, err := g.b.GetMulti(bg, []string{"x"})
				return err == nil
			})
			calls := 0
			for range 2 {
				v, err := region.GetOrCreate(bg, g.r, "after", func(context.Context) (string, error) { calls++; return "after", nil })
				if err != nil || v != "after" {
					t.Fatalf("after the fault: %q, %v", v, err)
				}
			}
			if calls != 1 {
				t.Fatalf("after the fault the creator ran %d times for a miss and a hit; want once", calls)
			}
		})
	}
}

// TestUnlockRetriedAfterPause: an Unlock that memcached does not answer
// fails within the bound, and the backend releases the lock once memcached
// answers again, rather than leaving it to block the other processes for
// its lease.
func TestUnlockRetriedAfterPause(t *testing.T) {
	srv := testharness.Memcached(t)
	raw := rawClient(t, srv.Addr)
	b := newBackend(t, []string{srv.Addr}, WithTimeout(outTimeout), WithBreaker(0, 0), WithLockTTL(time.Minute))
	l := b.Lock("k")
	if ok, err := l.TryLock(bg); !ok || err != nil {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	srv.Pause()
	start := time.Now()
	err := l.Unlock(bg)
	if took := time.Since(start); err == nil || took > outBound {
		t.Fatalf("Unlock with memcached paused = %v after %v; want an error within %v", err, took, outBound)
	}
	time.Sleep(time.Second)
	srv.Resume()
	waitFor(t, "the lock to be released", func() bool {
		_, err := raw.Get(l.Key())
		return errors.Is(err, memcache.ErrCacheMiss)
	})
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("the lock was released %v after the Unlock; the pause lasted 1s and the lease is a minute", waited)
	}
}

// TestWaitOnPausedServer: a waiter for another process's lock learns that
// memcached stopped answering within its timeout and gives up, rather than
// waiting for a holder that cannot finish.
func TestWaitOnPausedServer(t *testing.T) {
	srv := testharness.Memcached(t)
	raw := rawClient(t, srv.Addr)
	b := newBackend(t, []string{srv.Addr}, WithTimeout(outTimeout), WithBreaker(0, 0))
	l := b.Lock("k")
	if err := raw.Add(&memcache.Item{Key: l.Key(), Value: []byte("another process"), Expiration: 60}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Wait(bg) }()
	time.Sleep(50 * time.Millisecond)
	srv.Pause()
	t.Cleanup(srv.Resume)
	paused := time.Now()
	var err error
	within(t, "Wait", func() { err = <-done })
	// At most one poll interval (the timeout) and one poll's timeout.
	if took := time.Since(paused); err == nil || took > outBound {
		t.Fatalf("Wait with memcached paused = %v after %v; want an error within %v", err, took, outBound)
	}
}
