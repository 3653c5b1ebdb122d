package region

import "time"

// Option configures a Region.
type Option func(*Region)

// WithName names the region. The name prefixes every key the region stores,
// so regions that share a backend never see each other's entries.
// The default name is "default".
func WithName(name string) Option { return func(r *Region) { r.name = name } }

// WithExpiration sets how long a value stays fresh. After that it is stale:
// one caller regenerates it while the others are served the stale value.
// Zero, the default, means values never expire.
func WithExpiration(d time.Duration) Option { return func(r *Region) { r.expiration = d } }

// WithStaleTTL sets how long a value is kept past its expiration so that it
// can be served stale during regeneration; it is added to the expiration to
// give the backend's hard time to live. Zero or less means no hard time to
// live: values that expire are kept until the backend evicts them.
//
// Without it, a region keeps stale values as dogpile.cache does, until the
// backend evicts them, so that a key read less often than its expiration is
// still served stale at once while one caller regenerates it, rather than
// being a miss that every caller waits for:
//
//   - over a ProcessLocal backend (memory), values have no hard time to live:
//     they stay until evicted by the backend's size bound;
//   - over a shared backend (Redis, memcached, ...), whose memory other
//     processes share and where a key is never evicted by size unless the
//     server is configured to, the hard time to live is the expiration plus
//     the larger of the expiration and DefaultStaleTTL (24 hours).
//
// Values that never expire (no expiration, NeverExpire) have no hard time
// to live either way, and an entry filled during an invalidation lives no
// longer than the invalidation lease (WithInvalidationLease).
func WithStaleTTL(d time.Duration) Option {
	return func(r *Region) { r.staleTTL = d; r.staleSet = true }
}

// DefaultStaleTTL is the least time that a region over a shared backend
// keeps an expired value, by default, so that it can be served stale while
// one caller regenerates it (see WithStaleTTL).
const DefaultStaleTTL = 24 * time.Hour

// WithKeyMangler transforms every caller key before it reaches the backend,
// for backends with limits on key length or characters. See HashMangler.
func WithKeyMangler(m func(key string) string) Option {
	return func(r *Region) { r.mangle = m }
}

// WithCodec sets how values are encoded. The default is MsgpackCodec.
func WithCodec(c Codec) Option { return func(r *Region) { r.codec = c } }

// WithAsyncRegeneration makes even the caller that finds an expired value
// return it at once, while the new value is made in the background. At most
// maxConcurrent regenerations run at a time across the region (and never two
// for one key); when all slots are busy the stale value is served and a later
// caller tries again. Values that are missing still block their callers.
func WithAsyncRegeneration(maxConcurrent int) Option {
	return func(r *Region) {
		if maxConcurrent < 1 {
			maxConcurrent = 1
		}
		r.async = make(chan struct{}, maxConcurrent)
	}
}

// WithCreatorTimeout bounds each run of a creator. The creator runs on a
// context detached from any one caller's cancellation (it keeps the first
// caller's values), so this timeout is what ends a creator that hangs.
// Zero, the default, sets no bound beyond the wait timeout.
func WithCreatorTimeout(d time.Duration) Option { return func(r *Region) { r.creatorTimeout = d } }

// WithWaitTimeout bounds how long a caller waits for a value that another
// caller (in this process or, with a distributed backend, in another one) is
// making. When it runs out the caller runs the creator itself, unless
// WithoutWaitFallback is set, in which case it gets ErrWaitTimeout.
// The default is one minute.
func WithWaitTimeout(d time.Duration) Option { return func(r *Region) { r.waitTimeout = d } }

// WithoutWaitFallback makes a caller whose wait timeout runs out return
// ErrWaitTimeout instead of running the creator itself.
func WithoutWaitFallback() Option { return func(r *Region) { r.noWaitFallback = true } }

// WithInvalidationLease sets how long an entry filled while an invalidation
// is in progress on one of its tags (see PreInvalidateTags) may live. It
// bounds how long a process that dies between its commit and its
// invalidation can leave stale entries behind. The default is 10 seconds.
func WithInvalidationLease(d time.Duration) Option { return func(r *Region) { r.lease = d } }

// WithClock replaces time.Now, for tests that move time by hand.
func WithClock(now func() time.Time) Option { return func(r *Region) { r.now = now } }

// CallOption changes one call of GetOrCreate, GetOrCreateMulti, Load, Get
// or Set.
type CallOption func(*callOptions)

// callOptions are the options of one call. collect builds them and Load
// adds bkeyTags before the call's first read; they are read-only from then
// on, by the call and the regenerations it starts. noOptions is shared by
// the calls without options and never written.
type callOptions struct {
	expiration    time.Duration // meaningful when expirationSet
	expirationSet bool
	ignoreExpiry  bool
	shouldCache   func(any) bool
	tags          *tagSet             // nil: no tags
	keyTags       map[string][]string // caller key → tags of that key only
	bkeyTags      map[string][]string // the same by backend key; set by Load
}

// WithKeyTags gives keys tags of their own, in addition to those of
// WithTags: tags maps a caller key to its tags. GetOrCreateMulti and Load
// read every key's tags in the same backend round trip. Use it where each
// value depends on its own rows (the GORM plugin's per-parent entries).
func WithKeyTags(tags map[string][]string) CallOption {
	return func(o *callOptions) { o.keyTags = tags }
}

// tagsOf returns the tags a value stored under the backend key bkey
// depends on: the call's, and those of its key (WithKeyTags).
func (o *callOptions) tagsOf(bkey string) []string {
	kt := o.bkeyTags[bkey]
	if len(kt) == 0 {
		return o.tagList()
	}
	return append(append([]string(nil), o.tagList()...), kt...)
}

// tagList returns the call's tags.
func (o *callOptions) tagList() []string {
	if o.tags == nil {
		return nil
	}
	return o.tags.tags
}

// NeverExpire is the expiration override meaning "never stale".
const NeverExpire time.Duration = -1

// ExpireAfter overrides the region's expiration for this call: for the
// freshness check of what it reads and for what it stores. Pass NeverExpire
// for values that never go stale.
func ExpireAfter(d time.Duration) CallOption {
	return func(o *callOptions) { o.expiration, o.expirationSet = d, true }
}

// IgnoreExpiration treats any value present as fresh, however old, and
// ignores soft invalidation. Hard invalidation and tag invalidation still
// apply: they mean the data changed.
func IgnoreExpiration() CallOption { return func(o *callOptions) { o.ignoreExpiry = true } }

// ShouldCache stores a created value only when keep returns true; the value
// is returned to the callers either way.
func ShouldCache[T any](keep func(T) bool) CallOption {
	return func(o *callOptions) {
		o.shouldCache = func(v any) bool {
			t, ok := v.(T)
			return ok && keep(t)
		}
	}
}

// WithTags makes the values of this call depend on tags: InvalidateTags on
// any of them turns every value stored with it into a miss, in every process
// that shares the backend. The GORM plugin uses table names as tags.
//
// Build the option once and reuse it where the same tags recur: it remembers
// each region's backend keys for its tags.
func WithTags(tags ...string) CallOption {
	ts := &tagSet{tags: append([]string(nil), tags...)}
	return func(o *callOptions) {
		if o.tags == nil {
			o.tags = ts
			return
		}
		o.tags = &tagSet{tags: append(append([]string(nil), o.tags.tags...), ts.tags...)}
	}
}
