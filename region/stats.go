package region

import (
	"errors"
	"sync/atomic"
)

// Stats counts what the region did since it was made.
type Stats struct {
	Hits           int64 // fresh values served
	Misses         int64 // calls that found no usable value
	StaleServed    int64 // expired or soft-invalidated values served during regeneration
	Regenerations  int64 // creator runs
	LockWaits      int64 // callers that waited for another caller's value
	DecodeFailures int64 // stored values that could not be read back (treated as misses)
	Errors         int64 // backend errors (never returned by GetOrCreate: they cost a miss)
	NotStored      int64 // created values not stored; NotStoredBy says why
	NotStoredBy    NotStoredCounts

	// Invalidations counts the invalidations of tags that reached the
	// backend (InvalidateTags, and each phase of PreInvalidateTags and
	// PostInvalidateTags), those the retrier landed among them.
	Invalidations int64
	// InvalidationFailures counts the invalidations that could not be
	// written; each one's tags are retried in the background.
	InvalidationFailures int64
	// InvalidationRetries counts the attempts of the retrier;
	// InvalidationsRetried those that landed.
	InvalidationRetries  int64
	InvalidationsRetried int64
}

// NotStoredCounts breaks Stats.NotStored down by reason; the fields add up
// to it.
type NotStoredCounts struct {
	// ShouldCache: the call's ShouldCache returned false.
	ShouldCache int64
	// TagsChanged: a tag the value depends on was invalidated while it was
	// made (or, with a distributed lock, the lock was lost meanwhile): the
	// value may predate that invalidation.
	TagsChanged int64
	// Bypassed: an invalidation of one of its tags has not reached the
	// backend yet (see InvalidateTags), or the tags could not be read: what
	// depends on them is not stored.
	Bypassed int64
	// Unencodable: the codec could not encode the value, or its Payload
	// said it cannot be stored.
	Unencodable int64
	// Partial: its Payload reported a value made together with an error
	// (ErrPartial): the callers get it, the backend does not.
	Partial int64
}

// Errors a Payloader returns for a value that is not to be stored.
var (
	// ErrUnencodable says that a value cannot be encoded so that it reads
	// back exactly; it is counted in NotStoredBy.Unencodable, as is any
	// other error from Payload.
	ErrUnencodable = errors.New("region: value cannot be encoded exactly")
	// ErrPartial says that a value was made together with an error, and is
	// given to the callers but not stored; it is counted in
	// NotStoredBy.Partial.
	ErrPartial = errors.New("region: value made with an error")
)

// counters are what Stats reports; every one is atomic.
type counters struct {
	hits, misses, staleServed, regenerations, lockWaits, decodeFailures, errors atomic.Int64
	notStored                                                                   atomic.Int64
	shouldCache, tagsChanged, bypassed, unencodable, partial                    atomic.Int64 // by reason

	invalidations, invalidationFailures, invalidationRetries, invalidationsRetried atomic.Int64
}

// notStoredBy counts a value not stored for the reason counted in c.
func (c *counters) notStoredBy(reason *atomic.Int64) {
	reason.Add(1)
	c.notStored.Add(1)
}

// Stats returns a snapshot of the region's counters.
func (r *Region) Stats() Stats {
	c := &r.stats
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), StaleServed: c.staleServed.Load(),
		Regenerations: c.regenerations.Load(), LockWaits: c.lockWaits.Load(),
		DecodeFailures: c.decodeFailures.Load(), Errors: c.errors.Load(), NotStored: c.notStored.Load(),
		NotStoredBy: NotStoredCounts{
			ShouldCache: c.shouldCache.Load(), TagsChanged: c.tagsChanged.Load(), Bypassed: c.bypassed.Load(),
			Unencodable: c.unencodable.Load(), Partial: c.partial.Load(),
		},
		Invalidations: c.invalidations.Load(), InvalidationFailures: c.invalidationFailures.Load(),
		InvalidationRetries: c.invalidationRetries.Load(), InvalidationsRetried: c.invalidationsRetried.Load(),
	}
}
