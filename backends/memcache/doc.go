// Package memcachebackend is a region backend on memcached, through
// gomemcache (github.com/bradfitz/gomemcache/memcache):
//
//	b, err := memcachebackend.Open([]string{"127.0.0.1:11211"}, memcachebackend.WithPrefix("myapp"))
//	if err != nil { ... }
//	defer b.Close()
//	r := region.New(b, region.WithExpiration(10*time.Minute))
//
// Open makes a client of its own, tuned for the backend; New takes the
// caller's *memcache.Client. With several servers the client spreads the
// keys over them (gomemcache's ServerList) and a multi-get asks them in
// parallel.
//
// # Keys
//
// memcached keys are at most 250 bytes, without spaces or control
// characters. The backend is safe with any key by itself, without a key
// mangler on the region: it stores a key k as prefix+k when memcached takes
// that and k does not begin with '#', and otherwise as prefix + "#" + the
// base64 of k's SHA-256 (44 bytes after the prefix). Region keys are short
// and plain (name:k:<key>, name:t:{name:tag}, ...), so they stay readable;
// a long caller key, or one with spaces, is hashed. A lock is stored as
// prefix + "#L" + the hash of the key it locks (45 bytes): none of the three
// forms can equal another (see Backend.Key). Region.WithKeyMangler still
// works on top, and is harmless.
//
// # Operations
//
//   - GetMulti: one "gets k1 k2 ..." per server, one round trip. Over a
//     backend made by Open, keys that all live on one server (always, with
//     one server) are read by the backend itself in the caller's goroutine,
//     over connections of its own: gomemcache's GetMulti reads in a
//     goroutine per server even for one, and on a busy machine the
//     hand-offs cost as much as the round trip, which would make a region
//     hit (its entry and the region's record, four keys) twice as slow as a
//     gomemcache Get. Keys spread over several servers, and every read over
//     the caller's client (New), go through gomemcache's GetMulti, which
//     asks the servers in parallel.
//   - SetMulti: a set per item (the text protocol has no multi-set).
//   - SetIf: a guard on the item's own key is checked by memcached with the
//     write: "must be missing" is an add, "must hold v" a cas on the CAS id
//     that the gets of v returned, so the region's compare-and-set (its
//     record, its pending markers) is atomic. Guards on other keys (the tag
//     counters, the lock's fence) are read in one multi-get just before the
//     write: memcached has no multi-key transaction, so a tag invalidated
//     between that read and the write is not caught by the write. It is
//     caught by every later read: the entry carries the old stamp, which no
//     longer matches the counter, so it is a miss. The region relies on
//     stamps for correctness and on guards only to save useless writes.
//   - Incr: memcached's incr, which fails on a missing key; a missing
//     counter is created with add at a random 48-bit start plus one (an add
//     that loses the race to another caller's add falls back to incr). A
//     counter that incr cannot take (not a decimal) is replaced by a fresh
//     start with cas.
//   - Delete: a delete per key.
//
// TagBumper is not implemented (memcached has no scripts): the region
// invalidates each tag with its own Incr, and counts writers in and out of
// its pending markers with SetIf, compare-and-set on the marker.
//
// # Item TTLs
//
// memcached counts expiration in whole seconds, relative up to 30 days and
// as an absolute Unix time beyond (the backend converts, with the local
// clock). Its clock ticks once a second, so an item given n seconds may
// expire after n-1. The backend rounds a TTL up to a second and adds one:
// an item may outlive its TTL by up to two seconds and never expires before
// it. That is the direction that fails safe: expiring early turns a stale
// value the region meant to serve during a regeneration into a miss (its
// callers wait), while living late changes nothing, because the region
// decides from the envelope whether a value is fresh, stale or dead, and a
// lock or pending marker that lives late only makes others wait or fills
// live shorter. A TTL whose absolute time would not fit memcached's 32-bit
// field (past 2038) becomes no expiry, for the same reason.
//
// # Item size
//
// memcached refuses items larger than its -I limit (1 MiB by default). A
// value that would not fit (WithMaxItemSize, less the per-item overhead) is
// not sent, and one that memcached refuses as too large is not stored
// either; both are counted in Stats().TooLarge and are not errors: the
// caller gets its value, later readers miss.
//
// # Lock protocol
//
// Mutex(key) returns a Lock, an efficiency lock (correctness never depends
// on it), with a lease and a token:
//
//   - TryLock: add lockkey token, with the lock TTL (WithLockTTL, default
//     10s) as expiration; the token is 128 random bits of crypto/rand. While
//     held, a goroutine renews the lease every TTL/3 by cas of the token
//     onto itself with a new expiration, so a slow regeneration keeps its
//     lock and a holder that dies (even by SIGKILL) frees it within one TTL
//     (plus memcached's rounding).
//   - Unlock: stops the renewal, then compare-and-expire: gets the lock and,
//     if it holds this token, cas it with a negative expiration, which
//     memcached takes as "expired now". The cas fails if the lock changed
//     after the gets, so a lock that expired and was taken by another is
//     never released by its former holder: unlike a get-then-delete, this
//     leaves no window. A release memcached does not answer (and the add
//     of a TryLock whose answer was lost) is retried in the background, as
//     the Redis backend does.
//   - Fence: the guard {lock, token}. The region adds it to the guards of
//     the value stored under the lock, so a holder whose lease ran out does
//     not overwrite the value of the process that took the lock next. As
//     SetIf reads guards on other keys before it writes, the fence closes
//     that case except for one window: the lease running out, and another
//     process taking the lock, between that read and the set (one round
//     trip, while the renewal keeps the lease far from running out unless
//     memcached stopped answering the renewals). The late value is then
//     stored over the next holder's; it carries the stamps read before it
//     was made, so if a tag was invalidated since, it is a miss to every
//     reader, and otherwise it is as valid as the value it replaced: the
//     region's stamps, not the fence, keep values consistent with
//     invalidations.
//   - Wait: memcached has no notifications, so Wait polls the lock (a get),
//     sleeping from 2ms, doubling, up to 100ms (and the operation timeout),
//     with jitter. A released lock is seen within one poll.
//
// # Eviction, restart and outages
//
// Anything memcached evicts or loses fails towards a miss, never a stale
// hit. Tag counters and the region's generations are items like any other:
// when one is evicted, or memcached restarts and loses everything, the
// entries stamped with it are misses (a missing counter never matches a
// stamp), and the counter made again starts from a fresh random value, so
// it does not repeat one that old entries carry. Entries evicted are
// misses. A region over this backend keeps no copy of any of them.
//
// Two things memcached may evict are not failures towards a miss, but
// they need a second fault to matter. A lock evicted under memory pressure
// lets a second process regenerate the same key at once (the fence then
// keeps the first holder's value out, as above). A tag's pending marker
// evicted between a writer's two invalidation phases lets values filled in
// that window live their normal life instead of the invalidation lease; the
// writer's second phase still invalidates them, so only a writer that also
// dies before that phase leaves them behind. Give memcached the memory to
// keep what it holds (-m), as its eviction statistics show.
//
// Every operation is bounded by the operation timeout (WithTimeout, default
// 100ms), and the backend reports it (Timeout), so that the region caps
// what one call spends on memcached during an outage, as it does for Redis:
// with memcached killed, paused or restarting, a region read costs a
// bounded latency and returns the created value, never an error or a
// wrong value. After five consecutive operations that memcached did not
// answer (WithBreaker), a circuit breaker opens and every operation fails at
// once with an error wrapping ErrUnavailable; after the cooldown (1s) one
// operation is let through as a probe. The breaker is one per backend: with
// several servers, one server down opens it for all of them for a cooldown
// at a time.
//
// After a restart, the idle connections kept to the server are dead, and
// found so only when used: the first operation that fails on a dropped
// connection closes every idle connection and is tried once more, on a new
// one, so a restart does not cost one failed operation per pooled
// connection.
//
// gomemcache takes no context. An operation runs in the caller's goroutine
// when its context has no deadline and the client's socket timeout is no
// longer than the backend's (a client made by Open); otherwise it runs in a
// goroutine that the backend stops waiting for at the timeout or when the
// context ends, and that ends by itself at the client's socket timeout.
package memcachebackend
