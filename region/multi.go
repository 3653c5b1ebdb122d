package region

import (
	"context"
	"fmt"
	"slices"
)

// The many-key forms of Get, Set and Delete (dogpile's get_multi, set_multi
// and delete_multi). Each reads or writes all its keys in one backend call,
// with the tags and the invalidation record read as Get and Set read them.

// GetMulti decodes the fresh value stored under each of keys, as Get does
// for one key, and returns them by key; keys without a fresh value (missing,
// expired, invalidated or undecodable) are absent from the map. It reads
// every key, with the region's record and the tags of the call (WithTags)
// and of each key (WithKeyTags), in one backend round trip. It never locks
// and never regenerates. An error is the backend's: nothing could be read.
func GetMulti[T any](ctx context.Context, r *Region, keys []string, opts ...CallOption) (map[string]T, error) {
	out := make(map[string]T, len(keys))
	err := r.PeekMulti(ctx, keys, func(key string, payload []byte) error {
		var v T
		if err := r.codec.Unmarshal(payload, &v); err != nil {
			return err
		}
		out[key] = v
		return nil
	}, opts...)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PeekMulti is GetMulti for callers that decode payloads themselves, as
// Peek is for Get: decode receives the stored payload of each key that has a
// fresh value, once per key however often the key is given; an error from
// it makes that value a miss, counted as a decode failure.
func (r *Region) PeekMulti(ctx context.Context, keys []string, decode func(key string, payload []byte) error, opts ...CallOption) error {
	return r.peekMulti(ctx, keys, decode, collect(opts))
}

// peekMulti is PeekMulti with its options collected; co must be the call's
// own when it has WithKeyTags.
func (r *Region) peekMulti(ctx context.Context, keys []string, decode func(key string, payload []byte) error, co *callOptions) error {
	if len(keys) == 0 {
		return nil
	}
	bkeys := r.backendKeys(keys, co)
	s, err := r.read(ctx, bkeys, co)
	if err != nil {
		r.failed(ctx, OpRead, firstKey(keys), err)
		return fmt.Errorf("region %s: get %d keys: %w", r.name, len(keys), err)
	}
	var (
		env  envelope
		seen map[string]bool
	)
	if len(keys) > 1 {
		seen = make(map[string]bool, len(keys))
	}
	for i, k := range keys {
		if seen != nil {
			if seen[k] {
				continue
			}
			seen[k] = true
		}
		if r.classify(s.raw[i], &s, i, co, &env) != fresh || !r.decode(k, env.payload, func(b []byte) error { return decode(k, b) }) {
			if env.malformed != nil {
				r.decodeFailed(ctx, k, env.malformed)
			}
			r.stats.misses.Add(1)
			continue
		}
		r.stats.hits.Add(1)
	}
	return nil
}

// SetMulti stores each value of items under its key, created now, without
// locking, as Set does for one: the values carry the region's record and
// the tags of the call (WithTags) and of each key (WithKeyTags), read in one
// backend round trip, and are written together in another. A value that
// cannot be encoded is an error naming its key, and then nothing is stored.
//
// The values are written without the guards Set checks on a tag's counter
// (the backend has no guarded write of many items): a tag invalidated
// between the read and the write is caught by every later read instead,
// since the values carry the tag's older stamp.
func (r *Region) SetMulti(ctx context.Context, items map[string]any, opts ...CallOption) error {
	return r.setMulti(ctx, items, collect(opts))
}

// setMulti is SetMulti with its options collected; co must be the call's
// own when it has WithKeyTags.
func (r *Region) setMulti(ctx context.Context, items map[string]any, co *callOptions) error {
	if len(items) == 0 {
		return nil
	}
	keys := make([]string, 0, len(items))
	for k := range items {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the order of the backend call: deterministic
	payloads := make([][]byte, len(keys))
	for i, k := range keys {
		p, err := r.codec.Marshal(items[k])
		if err != nil {
			return fmt.Errorf("region %s: set %q: encode: %w", r.name, k, err)
		}
		payloads[i] = p
	}
	bkeys := r.backendKeys(keys, co)
	s, b, err := r.prepareWrite(ctx, bkeys, co)
	if err == nil {
		err = r.writeAll(ctx, bkeys, payloads, &s, co, b)
	}
	if err != nil {
		return fmt.Errorf("region %s: set %d keys: %w", r.name, len(keys), err)
	}
	return nil
}

// prepareWrite reads what values about to be made or stored under bkeys are
// stamped with: the region's record and the tags of the call and of each
// key, without the entries themselves. It gives every tag that has no
// counter yet (and the record, if it lacks a generation) a fresh one, as
// Set does. The budget it returns bounds the rest of the write, as a Set's
// does.
func (r *Region) prepareWrite(ctx context.Context, bkeys []string, co *callOptions) (snapshot, *budget, error) {
	s, err := r.readOf(ctx, bkeys, nil, co)
	b := r.newBudget(false)
	if err == nil {
		err = b.do(ctx, func(ctx context.Context) error { return r.initStamps(ctx, &s) })
	}
	if err != nil {
		r.failed(ctx, OpTags, "", err)
	}
	return s, b, err
}

// writeAll stores payloads[i] under bkeys[i] (nil: skipped), stamped as s
// read them, in one backend call within the budget b. Nothing is stored
// while an invalidation of one of the tags is unconfirmed (s.bypass).
func (r *Region) writeAll(ctx context.Context, bkeys []string, payloads [][]byte, s *snapshot, co *callOptions, b *budget) error {
	if s.bypass {
		return nil
	}
	now := s.now
	expires, dies, ttl := r.lifetimes(now, co, s.pending)
	items := make([]Item, 0, len(bkeys))
	for i, k := range bkeys {
		if payloads[i] == nil {
			continue
		}
		env := envelope{created: now, expires: expires, dies: dies, hard: s.inv.hard, soft: s.inv.soft, stamps: s.stampsOf(i), tags: s.tagsOf(i), payload: payloads[i]}
		items = append(items, Item{Key: k, Value: env.marshal(), TTL: ttl})
	}
	if len(items) == 0 {
		return nil
	}
	err := b.do(ctx, func(ctx context.Context) error { return r.backend.SetMulti(ctx, items) })
	if err != nil {
		r.failed(ctx, OpStore, "", err)
	}
	return err
}

// DeleteMulti removes the values stored under keys, in one backend call.
// Deleting a missing key is not an error.
func (r *Region) DeleteMulti(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	bkeys := make([]string, len(keys))
	for i, k := range keys {
		bkeys[i] = r.entryKey(k)
	}
	if err := r.backend.Delete(ctx, bkeys...); err != nil {
		r.failed(ctx, OpDelete, firstKey(keys), err)
		return fmt.Errorf("region %s: delete %d keys: %w", r.name, len(keys), err)
	}
	return nil
}
