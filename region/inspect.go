package region

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"path"
	"strings"
	"time"
)

// Inspection: what a region holds, for operators and tools (cmd/dogpile).
// It lists the backend's keys under the region's prefix, so only a backend
// that can list them (Scanner) supports it. It reads; it never stores,
// locks or counts a hit or a miss.

// Scanner is implemented by backends that can list their keys (memory,
// Redis, file; memcached cannot). Region.Entries and Region.Inspect need it.
type Scanner interface {
	// Scan calls yield with the keys that begin with prefix and the value
	// of each, a batch at a time, until every key was yielded once, yield
	// returns false, or ctx ends. A key that disappears between its listing
	// and its read is left out, as is one that expires. yield must not keep
	// the slices after it returns. A key written during the scan may or may
	// not be yielded. The error is the backend's, or ctx's.
	Scan(ctx context.Context, prefix string, yield func(keys []string, values [][]byte) bool) error
}

// EntryInfo is what a region knows of one stored entry, without its value.
type EntryInfo struct {
	// Key is the entry's key as the region stores it: the caller's key
	// after the key mangler (WithKeyMangler), without the region's prefix.
	// Region.Entry takes it back.
	Key string
	// BackendKey is the key the region passes to its backend (a backend
	// may add a prefix of its own, as the Redis backend's WithPrefix does).
	BackendKey string
	// Size is the number of bytes stored: the envelope and the payload.
	Size int
	// Created is when the value was made (the read before its creator ran).
	Created time.Time
	// Expires is when the value goes stale under the expiration it was
	// stored with; zero: never.
	Expires time.Time
	// Dies is when the value stops being served at all (an entry filled
	// while an invalidation of its tags was in progress lives no longer
	// than the invalidation lease); zero: never.
	Dies time.Time
	// Stale reports that a read now would serve the value stale: past
	// Expires, or made before a soft Invalidate.
	Stale bool
	// Expired reports that a read now would not serve the value at all: it
	// is past Dies, was invalidated (a hard Invalidate, or a bump of one of
	// its tags), or is stored in a format this version does not read (then
	// the times and tags are unknown, zero).
	Expired bool
	// Tags are the names of the tags the value depends on (see WithTags
	// and WithKeyTags), in the order it was stamped with them.
	Tags []string
}

// Summary counts what a region holds (Region.Inspect).
type Summary struct {
	// Entries is the number of entries; Bytes the bytes stored for them
	// (EntryInfo.Size summed).
	Entries, Bytes int64
	// Stale and Expired count the entries that are stale, or would not be
	// served, at the inspection (EntryInfo.Stale, EntryInfo.Expired); the
	// rest are fresh.
	Stale, Expired int64
	// Tags is the number of tag counters the region keeps in the backend:
	// one per tag that values were stamped with or that was invalidated.
	Tags int64
}

// InspectOption configures Entries.
type InspectOption func(*inspectOptions)

type inspectOptions struct {
	match string // a path.Match pattern on EntryInfo.Key; "" for every key
}

// InspectMatch lists only the entries whose Key matches pattern, a glob
// as path.Match takes it, except that '/' is a character like any other
// ('*' matches any run of characters, '?' one, "[a-z]" a class, '\\' quotes
// the next character).
func InspectMatch(pattern string) InspectOption {
	return func(o *inspectOptions) { o.match = pattern }
}

// scanner returns the region's backend's Scanner, or an error matching
// errors.ErrUnsupported.
func (r *Region) scanner() (Scanner, error) {
	sc, ok := optional[Scanner](r.backend)
	if !ok {
		return nil, fmt.Errorf("region %s: inspect: the backend %T cannot list its keys: %w", r.name, r.backend, errors.ErrUnsupported)
	}
	return sc, nil
}

// Entries lists the region's entries, in the backend's order, with their
// metadata as a read by this region would see it now. Only the region's own
// entries are listed (its prefix; a region whose name begins with this
// one's never shows). Entries that appear or change during the listing may
// or may not be seen. Breaking out of the loop stops the scan.
//
// Over a backend that cannot list its keys (memcached), it yields one error
// matching errors.ErrUnsupported. Any error ends the listing; it is the last
// thing yielded.
func (r *Region) Entries(ctx context.Context, opts ...InspectOption) iter.Seq2[EntryInfo, error] {
	var o inspectOptions
	for _, opt := range opts {
		opt(&o)
	}
	return func(yield func(EntryInfo, error) bool) {
		sc, err := r.scanner()
		if err == nil && o.match != "" {
			if _, err = path.Match(globOf(o.match), ""); err != nil {
				err = fmt.Errorf("region %s: inspect: match %q: %w", r.name, o.match, err)
			}
		}
		if err != nil {
			yield(EntryInfo{}, err)
			return
		}
		stopped := false
		err = sc.Scan(ctx, r.entryPrefix, func(keys []string, vals [][]byte) bool {
			if o.match != "" {
				keys, vals = matching(keys, vals, len(r.entryPrefix), globOf(o.match))
			}
			if len(keys) == 0 {
				return true
			}
			infos, err := r.inspectBatch(ctx, keys, vals)
			if err != nil {
				stopped = true
				yield(EntryInfo{}, err)
				return false
			}
			for _, info := range infos {
				if !yield(info, nil) {
					stopped = true
					return false
				}
			}
			return true
		})
		if err != nil && !stopped {
			yield(EntryInfo{}, fmt.Errorf("region %s: inspect: %w", r.name, err))
		}
	}
}

// globOf is pattern for path.Match with '/' an ordinary character: both
// the pattern and the keys it is matched against have it replaced by NUL.
func globOf(pattern string) string { return strings.ReplaceAll(pattern, "/", "\x00") }

// matching returns the keys (and their values) whose part after skip
// bytes matches glob (a valid globOf pattern).
func matching(keys []string, vals [][]byte, skip int, glob string) ([]string, [][]byte) {
	var ks []string
	var vs [][]byte
	for i, k := range keys {
		if ok, _ := path.Match(glob, strings.ReplaceAll(k[skip:], "/", "\x00")); ok {
			ks, vs = append(ks, k), append(vs, vals[i])
		}
	}
	return ks, vs
}

// Entry returns the metadata of the entry stored under key, a Key as
// Entries lists it (the caller's key after the key mangler), and whether
// there is one. Unlike Metadata, it reports an entry that would not be
// served (Expired) too.
func (r *Region) Entry(ctx context.Context, key string) (EntryInfo, bool, error) {
	bkey := r.entryPrefix + key
	vals, err := r.backend.GetMulti(ctx, []string{bkey})
	if err == nil && len(vals) != 1 {
		err = fmt.Errorf("backend returned %d values for 1 key", len(vals))
	}
	if err != nil {
		r.failed(ctx, OpMetadata, key, err)
		return EntryInfo{}, false, fmt.Errorf("region %s: entry %q: %w", r.name, key, err)
	}
	if vals[0] == nil {
		return EntryInfo{}, false, nil
	}
	infos, err := r.inspectBatch(ctx, []string{bkey}, vals)
	if err != nil {
		return EntryInfo{}, false, err
	}
	return infos[0], true, nil
}

// EntryPayload returns the payload of the entry stored under key (a Key as
// Entries lists it), as the region's codec wrote it, whether or not it
// would be served, and whether there is one in a format this version
// reads.
func (r *Region) EntryPayload(ctx context.Context, key string) ([]byte, bool, error) {
	vals, err := r.backend.GetMulti(ctx, []string{r.entryPrefix + key})
	if err == nil && len(vals) != 1 {
		err = fmt.Errorf("backend returned %d values for 1 key", len(vals))
	}
	if err != nil {
		r.failed(ctx, OpRead, key, err)
		return nil, false, fmt.Errorf("region %s: entry payload %q: %w", r.name, key, err)
	}
	var env envelope
	if vals[0] == nil || env.unmarshal(vals[0]) != nil {
		return nil, false, nil
	}
	return env.payload, true, nil
}

// inspectBatch describes the entries stored under the backend keys bkeys
// with values vals (none nil), reading the region's record and the
// counters of their tags in one backend call.
func (r *Region) inspectBatch(ctx context.Context, bkeys []string, vals [][]byte) ([]EntryInfo, error) {
	infos := make([]EntryInfo, len(bkeys))
	envs := make([]envelope, len(bkeys))
	readable := make([]bool, len(bkeys))
	var union []string
	index := map[string]int{}
	sel := make([][]int, len(bkeys))
	for i, k := range bkeys {
		infos[i] = EntryInfo{Key: k[len(r.entryPrefix):], BackendKey: k, Size: len(vals[i]), Expired: true}
		env := &envs[i]
		if env.unmarshal(vals[i]) != nil {
			continue
		}
		tags, err := env.tagList()
		if err != nil || len(tags) != env.nstamps {
			continue
		}
		readable[i] = true
		infos[i].Tags = tags
		infos[i].Created = unixTime(env.created)
		infos[i].Expires = unixTime(env.expires)
		infos[i].Dies = unixTime(env.dies)
		for _, t := range tags {
			j, ok := index[t]
			if !ok {
				j = len(union)
				index[t] = j
				union = append(union, t)
			}
			sel[i] = append(sel[i], j)
		}
	}
	co := collect([]CallOption{WithTags(union...)})
	s, err := r.readOf(ctx, nil, nil, co)
	if err != nil {
		r.failed(ctx, OpMetadata, "", err)
		return nil, fmt.Errorf("region %s: inspect: read tags: %w", r.name, err)
	}
	s.sel, s.shared = sel, 0
	for i := range infos {
		if !readable[i] {
			continue
		}
		st := r.classify(vals[i], &s, i, nil, &envs[i])
		infos[i].Stale, infos[i].Expired = st == stale, st == miss
	}
	return infos, nil
}

// unixTime is t Unix nanoseconds as a Time; zero for 0.
func unixTime(t int64) time.Time {
	if t == 0 {
		return time.Time{}
	}
	return time.Unix(0, t)
}

// Inspect counts the region's entries, their bytes, those stale or that
// would not be served now, and the region's tag counters, listing the
// region's keys (see Entries). Over a backend that cannot list its keys it
// returns an error matching errors.ErrUnsupported.
func (r *Region) Inspect(ctx context.Context) (Summary, error) {
	var sum Summary
	for e, err := range r.Entries(ctx) {
		if err != nil {
			return Summary{}, err
		}
		sum.Entries++
		sum.Bytes += int64(e.Size)
		if e.Stale {
			sum.Stale++
		}
		if e.Expired {
			sum.Expired++
		}
	}
	sc, err := r.scanner()
	if err != nil {
		return Summary{}, err
	}
	err = sc.Scan(ctx, r.prefix+"t:", func(keys []string, _ [][]byte) bool {
		sum.Tags += int64(len(keys))
		return true
	})
	if err != nil {
		return Summary{}, fmt.Errorf("region %s: inspect: tags: %w", r.name, err)
	}
	return sum, nil
}
