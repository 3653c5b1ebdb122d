//go:build unix

package filebackend

import (
	"testing"

	"github.com/dogpile-go/dogpile/region"
	"github.com/dogpile-go/dogpile/region/regiontest"
)

// newTestBackend returns a backend on a directory of its own, closed when
// t ends.
func newTestBackend(t testing.TB, opts ...Option) *Backend {
	t.Helper()
	return openTestBackend(t, t.TempDir(), opts...)
}

// openTestBackend opens a backend on dir, closed when t ends.
func openTestBackend(t testing.TB, dir string, opts ...Option) *Backend {
	t.Helper()
	b, err := New(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return b
}

// TestRegion runs the region conformance suite on the file backend, with
// the default hold.
func TestRegion(t *testing.T) {
	regiontest.Run(t, func(t testing.TB) region.Backend { return newTestBackend(t) })
}

// TestRegionOpenPerOperation runs the suite with the file opened for every
// operation (WithHold(0)).
func TestRegionOpenPerOperation(t *testing.T) {
	regiontest.Run(t, func(t testing.TB) region.Backend { return newTestBackend(t, WithHold(0)) })
}
