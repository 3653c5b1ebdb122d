package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

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

// TestServerDown: with the server killed every operation fails (within the
// timeout: none hangs), the breaker then fails fast without touching the
// network, and after a restart the backend works again by itself.
func TestServerDown(t *testing.T) {
	for _, ctxDeadlines := range []bool{false, true} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", ctxDeadlines), func(t *testing.T) {
			srv := testharness.Redis(t)
			hook := &countHook{}
			client := goredis.NewClient(&goredis.Options{Addr: srv.Addr, ContextTimeoutEnabled: ctxDeadlines})
			client.AddHook(hook)
			t.Cleanup(func() { _ = client.Close() })
			const failures, cooldown = 3, 2 * time.Second
			b := newBackend(t, client, WithPrefix("down"), WithTimeout(300*time.Millisecond), WithBreaker(failures, cooldown))
			for _, op := range ops(b) {
				if err := op.fn(bg); err != nil {
					t.Fatalf("%s with the server up: %v", op.name, err)
				}
			}

			srv.Kill()
			for i, op := range ops(b)[:failures] {
				var err error
				within(t, op.name, func() { err = op.fn(bg) })
				if err == nil {
					t.Fatalf("%s with the server down: no error", op.name)
				}
				if errors.Is(err, ErrUnavailable) {
					t.Fatalf("%s: breaker open after %d failures, want %d: %v", op.name, i, failures, err)
				}
			}
			// Open: every operation fails fast, without reaching the client.
			for _, op := range ops(b) {
				before := hook.n.Load()
				var err error
				within(t, op.name, func() { err = op.fn(bg) })
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("%s with the breaker open = %v, want ErrUnavailable", op.name, err)
				}
				if n := hook.n.Load() - before; n != 0 {
					t.Fatalf("%s with the breaker open sent %d commands", op.name, n)
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
		})
	}
}

// TestHungServer: a server that accepts commands but does not answer (a
// long Lua script) costs an operation its timeout, not the client's read
// timeout.
func TestHungServer(t *testing.T) {
	for _, ctxDeadlines := range []bool{false, true} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", ctxDeadlines), func(t *testing.T) {
			srv := testharness.Redis(t)
			raw := newClient(t, srv.Addr)
			// Other clients get BUSY only after 10s: until then they hang.
			if err := raw.ConfigSet(bg, "busy-reply-threshold", "10000").Err(); err != nil {
				t.Fatal(err)
			}
			client := goredis.NewClient(&goredis.Options{Addr: srv.Addr, ContextTimeoutEnabled: ctxDeadlines, MaxRetries: -1})
			t.Cleanup(func() { _ = client.Close() })
			b := newBackend(t, client, WithTimeout(200*time.Millisecond), WithBreaker(0, 0))
			if _, err := b.GetMulti(bg, []string{"a"}); err != nil {
				t.Fatal(err)
			}
			busy := goredis.NewClient(&goredis.Options{Addr: srv.Addr, ReadTimeout: -1})
			t.Cleanup(func() { _ = busy.Close() })
			t.Cleanup(srv.Kill) // first: nothing waits for the script to end
			go busy.Eval(bg, "while true do end", nil)
			// Make sure the script runs: a command sent now does not answer.
			waitFor(t, "the server to hang", func() bool {
				ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
				defer cancel()
				probe := goredis.NewClient(&goredis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
				defer probe.Close()
				return errors.Is(probe.Ping(ctx).Err(), os.ErrDeadlineExceeded)
			})
			for _, op := range ops(b) {
				var err error
				start := time.Now()
				within(t, op.name, func() { err = op.fn(bg) })
				t.Logf("%s: %v after %v", op.name, err, time.Since(start))
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("%s on a hung server = %v, want the operation deadline", op.name, err)
				}
			}
		})
	}
}
