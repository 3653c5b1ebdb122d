package region

import (
	"context"
	"sync/atomic"
	"time"
)

// Backend is where a Region keeps its bytes. It knows nothing of values,
// expiration or locking rules: the Region owns all of that, so every backend
// behaves the same way. Implementations must be safe for concurrent use.
//
// Keys are opaque strings chosen by the Region. A backend that has limits on
// key length or characters should be paired with a key mangler
// (see WithKeyMangler and HashMangler).
type Backend interface {
	// GetMulti returns the value stored under each key, in the order of keys.
	// A missing or expired key has a nil entry. It reads all keys in one round
	// trip where the store allows it. It must not keep keys after it returns
	// (a ProcessLocal backend may be passed keys in recycled memory).
	GetMulti(ctx context.Context, keys []string) ([][]byte, error)

	// SetMulti stores every item, each with its own time to live.
	SetMulti(ctx context.Context, items []Item) error

	// SetIf stores item only if every guard holds at the moment of the write,
	// and reports whether it stored. A backend that cannot check guards
	// atomically with the write must check them as close to it as it can:
	// guards only save useless writes, the Region never relies on them for
	// correctness.
	SetIf(ctx context.Context, item Item, guards []Guard) (bool, error)

	// Delete removes the keys; deleting a missing key is not an error.
	Delete(ctx context.Context, keys ...string) error

	// Incr atomically adds one to the counter at key and returns the new
	// value. A missing counter starts from a random value rather than zero, so
	// a counter that was evicted and created again never repeats a value it
	// had before. GetMulti reads a counter as its decimal text.
	Incr(ctx context.Context, key string) (int64, error)

	// Mutex returns the lock that serialises regeneration of key across
	// processes, or nil when in-process locking is enough (the Region always
	// locks in-process first, so a backend private to one process returns nil).
	Mutex(key string) Mutex
}

// Item is one value to store.
type Item struct {
	Key   string
	Value []byte
	// TTL is the backend's hard time to live; zero means no expiry (the
	// default over a ProcessLocal backend: the value stays until evicted).
	// It is longer than the Region's expiration so that stale values exist
	// to be served while one caller regenerates (see WithStaleTTL).
	TTL time.Duration
}

// Guard is a condition on a write: the key must hold exactly Value, or be
// missing when Value is nil.
type Guard struct {
	Key   string
	Value []byte
}

// Mutex is a lock on one key that a backend may make distributed. It is used
// only by the caller that already leads regeneration in its own process.
type Mutex interface {
	// TryLock takes the lock without waiting and reports whether it did.
	TryLock(ctx context.Context) (bool, error)
	// Unlock releases the lock if this Mutex still holds it.
	Unlock(ctx context.Context) error
	// Wait blocks until the current holder releases the lock or its lease
	// runs out, or until ctx ends. It may return early; callers re-check.
	Wait(ctx context.Context) error
}

// Fencer is implemented by a Mutex that can fence writes: while the lock is
// held, Fence returns a guard that holds only as long as the lock is still
// this Mutex's. The Region adds it to the guards of the value it stores under
// the lock, so a creator whose lock expired and passed to another process
// never overwrites that process's value.
type Fencer interface {
	Fence() Guard
}

// ProcessLocal is implemented by backends that only the current process can
// reach (memory, null). A Region over one keeps its invalidation record in
// memory instead of reading it from the backend on every call.
type ProcessLocal interface {
	ProcessLocal() bool
}

// CounterRefs is implemented by ProcessLocal backends whose counters stay
// at one address for the backend's life: a Region then reads tag versions
// with an atomic load instead of a lookup. Counter returns the counter at
// key, creating it from a random value when it is missing.
type CounterRefs interface {
	Counter(key string) *atomic.Int64
}

// TagBumper is implemented by shared backends that apply one phase of a tag
// invalidation, for many tags, in one round trip (the Redis backend: one
// script on a single server; one per slot, pipelined to the nodes in
// parallel, on a cluster). For each i it increments the counter at
// counters[i] (a missing counter starts from a fresh value, as Incr does)
// and, when delta is not 0, adds delta to the writer count of the pending
// marker at markers[i] (never below 0) and sets that marker to expire after
// lease. A region whose backend implements it sends each phase of
// InvalidateTags, PreInvalidateTags and PostInvalidateTags as one call.
type TagBumper interface {
	BumpTags(ctx context.Context, counters, markers []string, delta int64, lease time.Duration) error
}
