package redisbackend

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/internal/testharness"
)

func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }

// testTimeout is the operation timeout of the tests' backends: generous, as
// the machine running them may be slow, except where a test is about it.
const testTimeout = 2 * time.Second

// eventually is the generous deadline of a test waiting for an event.
const eventually = 15 * time.Second

var prefixSeq atomic.Int64

// uniquePrefix returns a prefix that no other test uses.
func uniquePrefix(t testing.TB) string {
	name := strings.NewReplacer("{", "_", "}", "_", " ", "_").Replace(t.Name())
	return fmt.Sprintf("%s#%d", name, prefixSeq.Add(1))
}

// newClient returns a client for a single server, closed when t ends.
func newClient(t testing.TB, addr string) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newClusterClient returns a cluster client, closed when t ends.
func newClusterClient(t testing.TB, addrs []string) *goredis.ClusterClient {
	c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newBackend returns a backend over client, closed when t ends.
func newBackend(t testing.TB, client goredis.UniversalClient, opts ...Option) *Backend {
	all := append([]Option{WithTimeout(testTimeout)}, opts...)
	b := New(client, all...)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// shared returns a backend on the shared server with a prefix of its own,
// and a raw client for inspecting it.
func shared(t testing.TB, opts ...Option) (*Backend, *goredis.Client) {
	srv := testharness.SharedRedis(t)
	raw := newClient(t, srv.Addr)
	return newBackend(t, newClient(t, srv.Addr), append([]Option{WithPrefix(uniquePrefix(t))}, opts...)...), raw
}

// within runs f and fails the test if it has not returned after the
// generous deadline, so a bug shows as a failure rather than a hang.
func within(t testing.TB, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(eventually):
		t.Fatalf("%s did not return within %v", what, eventually)
	}
}

// waitFor polls cond until it holds, failing after the generous deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countHook counts the commands and pipelines a client sends.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *countHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

var bg = context.Background()
