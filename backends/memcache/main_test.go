package memcachebackend

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/dogpile-go/dogpile/internal/testharness"
)

func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }

// testTimeout is the operation timeout of the tests' backends: generous, as
// the machine running them may be slow, except where a test is about it.
const testTimeout = 2 * time.Second

// eventually is the generous deadline of a test waiting for an event.
const eventually = 15 * time.Second

var prefixSeq atomic.Int64

// uniquePrefix returns a prefix that no other test uses (memcached keys
// take no spaces).
func uniquePrefix(t testing.TB) string {
	name := strings.NewReplacer(" ", "_", "/", ".").Replace(t.Name())
	if len(name) > 150 {
		name = name[len(name)-150:]
	}
	return fmt.Sprintf("%s#%d", name, prefixSeq.Add(1))
}

// newBackend returns a backend made by Open over addrs, with the test
// timeout and a prefix of its own unless opts set others, closed when t
// ends.
func newBackend(t testing.TB, addrs []string, opts ...Option) *Backend {
	all := append([]Option{WithTimeout(testTimeout), WithPrefix(uniquePrefix(t))}, opts...)
	b, err := Open(addrs, all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// rawClient returns a client outside any backend, for inspecting and
// changing what the servers hold.
func rawClient(t testing.TB, addrs ...string) *memcache.Client {
	c := memcache.New(addrs...)
	c.Timeout = testTimeout
	t.Cleanup(func() { _ = c.Close() })
	return c
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

var bg = context.Background()
