package region

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Metadata is what a region knows of a stored value besides the value
// itself (dogpile's get_value_metadata), as one read saw it.
type Metadata struct {
	// Created is when the value was made: the time of the read that
	// preceded its creator's run (or the Set's), by the region's clock.
	Created time.Time
	// Age is how old the value was at the read: the read's time less
	// Created.
	Age time.Duration
	// Expires is when the value goes stale, under the expiration of the
	// read's options (ExpireAfter) or, without one, the one it was stored
	// with; the zero Time when it never does.
	Expires time.Time
	// Stale reports that the value was stale at the read: expired, or
	// made before a soft invalidation. GetOrCreate serves it while one
	// caller regenerates it; Get does not.
	Stale bool
}

// Metadata returns the metadata of the value stored under key, and whether
// there is a usable one: fresh or stale, and not invalidated (hard or by a
// tag of the call's options), as GetOrCreate sees it. Like Get, it never
// locks and never regenerates, and an error is the backend's. It does not
// decode the value; it counts neither a hit nor a miss.
func (r *Region) Metadata(ctx context.Context, key string, opts ...CallOption) (Metadata, bool, error) {
	co := collect(opts)
	s, err := r.read(ctx, []string{r.entryKey(key)}, co)
	if err != nil {
		r.failed(ctx, OpMetadata, key, err)
		return Metadata{}, false, fmt.Errorf("region %s: metadata %q: %w", r.name, key, err)
	}
	var env envelope
	st := r.classify(s.raw[0], &s, 0, co, &env)
	if st == miss {
		return Metadata{}, false, nil
	}
	md := Metadata{Created: time.Unix(0, env.created), Age: time.Duration(s.now - env.created), Stale: st == stale}
	switch {
	case co.expirationSet && co.expiration >= 0:
		md.Expires = time.Unix(0, env.created+int64(co.expiration))
	case co.expirationSet:
		// NeverExpire: no expiry.
	case env.expires != 0:
		md.Expires = time.Unix(0, env.expires)
	}
	return md, true, nil
}

// LockProber is implemented by a Mutex that can tell whether its lock is
// held, by anyone, without taking it (the Redis backend's Lock does). Locked
// reports whether it is held now; the answer may be out of date as soon as
// it is returned.
type LockProber interface {
	Locked(ctx context.Context) (bool, error)
}

// KeyIsLocked reports whether a value for key is being made right now: by a
// caller in this process, or, over a backend whose Mutex is distributed, by
// one in any process that shares the backend (dogpile's key_is_locked,
// which here applies the key mangler and the region's prefix, as every other
// call does). The answer may be out of date as soon as it is returned.
//
// When no caller of this process makes the value and the backend hands out
// a Mutex that cannot be asked without being taken (it does not implement
// LockProber), KeyIsLocked returns false and an error wrapping
// errors.ErrUnsupported.
func (r *Region) KeyIsLocked(ctx context.Context, key string) (bool, error) {
	bkey := r.entryKey(key)
	r.flights.mu.Lock()
	_, local := r.flights.m[bkey]
	r.flights.mu.Unlock()
	if local {
		return true, nil
	}
	m := r.backend.Mutex(bkey)
	if m == nil {
		return false, nil // the in-process lock is the only one
	}
	p, ok := optional[LockProber](m)
	if !ok {
		return false, fmt.Errorf("region %s: key is locked %q: the backend's lock cannot be probed: %w", r.name, key, errors.ErrUnsupported)
	}
	locked, err := p.Locked(ctx)
	if err != nil {
		r.failed(ctx, OpMetadata, key, err)
		return false, fmt.Errorf("region %s: key is locked %q: %w", r.name, key, err)
	}
	return locked, nil
}
