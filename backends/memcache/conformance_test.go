package memcachebackend

import (
	"testing"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
	"github.com/dogpile-go/dogpile/region/regiontest"
)

// TestRegion runs the region conformance suite on memcached, every backend
// with a prefix of its own:
//
//   - Open: one server, through the client Open makes (operations run in
//     the caller's goroutine);
//   - New/two-servers: the caller's client with gomemcache's defaults
//     (its socket timeout is longer than the backend's, so operations run
//     in goroutines bounded by the timeout), keys spread over two servers.
func TestRegion(t *testing.T) {
	srv := testharness.Memcached(t)
	t.Run("Open", func(t *testing.T) {
		regiontest.Run(t, func(t testing.TB) region.Backend {
			return newBackend(t, []string{srv.Addr})
		})
	})
	t.Run("New/two-servers", func(t *testing.T) {
		other := testharness.Memcached(t)
		client := memcache.New(srv.Addr, other.Addr)
		t.Cleanup(func() { _ = client.Close() })
		regiontest.Run(t, func(t testing.TB) region.Backend {
			b := New(client, WithTimeout(testTimeout), WithPrefix(uniquePrefix(t)))
			t.Cleanup(func() { _ = b.Close() })
			return b
		})
	})
}
