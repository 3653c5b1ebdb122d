// Package null is a region backend that stores nothing: every read is a
// miss. Use it in tests, or to switch caching off without changing the code
// that uses a region. Concurrent callers of one key in one process still
// share one creator run, because that lock lives in the region.
package null

import (
	"context"
	"math/rand/v2"

	"github.com/dogpile-go/dogpile/region"
)

// Backend stores nothing.
type Backend struct{}

// New returns a null backend.
func New() Backend { return Backend{} }

// GetMulti reports every key missing.
func (Backend) GetMulti(_ context.Context, keys []string) ([][]byte, error) {
	return make([][]byte, len(keys)), nil
}

// SetMulti discards the items.
func (Backend) SetMulti(context.Context, []region.Item) error { return nil }

// SetIf discards the item and reports that it was not stored.
func (Backend) SetIf(context.Context, region.Item, []region.Guard) (bool, error) { return false, nil }

// Delete does nothing.
func (Backend) Delete(context.Context, ...string) error { return nil }

// Incr returns a random value, as a counter that was never stored would.
func (Backend) Incr(context.Context, string) (int64, error) { return rand.Int64(), nil }

// Mutex returns nil.
func (Backend) Mutex(string) region.Mutex { return nil }

var _ region.Backend = Backend{}

// ProcessLocal reports that only this process reaches the backend.
func (Backend) ProcessLocal() bool { return true }
