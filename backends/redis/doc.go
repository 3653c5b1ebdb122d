// Package redisbackend is a region backend on Redis, through go-redis
// (github.com/redis/go-redis/v9). It takes a redis.UniversalClient, so one
// code path serves a single server, Sentinel and Redis Cluster:
//
//	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}})
//	b := redisbackend.New(client, redisbackend.WithPrefix("myapp"))
//	r := region.New(b, region.WithExpiration(10*time.Minute))
//
// # Key layout
//
// Every key the region chooses is stored under the prefix, "myapp:" + key
// (no prefix by default). With the prefix P: the keys of a region named N
// are:
//
//	P:N:k:<key>                 an entry (envelope: stamps, times, payload)
//	P:N:inv                     the region's invalidation record
//	P:N:t:{N:<tag>}             a tag's counter, decimal text, never expires
//	P:N:p:{N:<tag>}             a tag's pending-invalidation marker, with the lease as TTL
//	P:{P:N:k:<key>}:lock        the distributed lock on an entry (a token, with the lock TTL)
//
// A prefix never contains '{' (New panics if it does), so hash tags inside
// keys keep deciding the Cluster slot. The lock key of a key that has a hash
// tag {T} is "{T}:lock:" + key, after the prefix; a key with no braces gets
// "{" + prefix + key + "}:lock", which Redis hashes on exactly the string the
// key itself is hashed on. Either way a lock lives in its entry's slot.
//
// # Cluster
//
// On a *redis.ClusterClient entries spread over the slots by their own key,
// so the load spreads evenly over the nodes; a tag's counter and its
// pending marker share a slot (the {N:<tag>} hash tag), and different tags
// spread too. A read of a hit fetches its entry, the invalidation record and
// its tag counters in one pipelined batch of GETs that go-redis splits by
// node and sends to the nodes in parallel: one round trip of wall time, not
// one per slot. On a single server the same read is a single MGET.
//
// SetIf is atomic only within one slot. Its Lua script checks the guards
// that live in the item's slot (the lock fence always does) together with
// the write; guards in other slots (tag counters) are read just before, in
// one pipeline. A tag invalidated between that read and the write is not
// caught by the write, but it is caught by every later read: the entry
// carries the old stamp, which no longer matches the counter, so it is a
// miss. The region relies on stamps for correctness and on guards only to
// save useless writes.
//
// A *redis.Ring or any other UniversalClient is treated like a cluster that
// keeps together only keys with the same hash tag.
//
// # Lock protocol
//
// Mutex(key) returns a Lock, an efficiency lock in the sense of Kleppmann's
// "How to do distributed locking": it keeps processes from regenerating the
// same value at once, and correctness never depends on it.
//
//   - TryLock: SET lockkey token NX PX ttl, with 128 random bits of
//     crypto/rand as token. While held, a goroutine renews the lease every
//     ttl/3 with a compare-and-PEXPIRE script, so a slow regeneration keeps
//     its lock, and a holder that dies (even by SIGKILL) frees it within one
//     ttl (WithLockTTL, default 10s).
//   - Fence: the guard {lockkey, token}. The region writes the value it made
//     under the lock only while the lock still holds its token, atomically
//     (the lock and the entry share a slot): a holder whose lease ran out and
//     passed to another process never overwrites that process's value.
//   - Unlock: stops the renewal (without waiting for one in flight), then a
//     compare-and-delete script deletes the lock only if it still holds
//     this token (never another holder's lock) and PUBLISHes on the channel
//     named like the lock key. A release Redis does not answer (and the SET
//     of a TryLock whose answer was lost) is retried by a goroutine of the
//     Backend, with backoff, until Redis answers, the lease has run out or
//     the Backend is closed: waiters elsewhere are freed as soon as Redis
//     is back, not when the lease ends.
//   - Wait: subscribes to that channel over one PubSub connection per
//     Backend, made on the first wait and multiplexing every lock this
//     process waits on, and polls the lock's PTTL, sleeping min(pttl, 200ms,
//     the operation timeout) with jitter between polls. It returns when the
//     lock is gone: at once on the notification, at worst one poll after
//     the lease ends when the holder died. It never spins. The poll is a
//     script, which CLIENT PAUSE WRITE holds as it holds the holder's store
//     and release: a waiter learns that Redis takes no writes within one
//     timeout, and gives up, instead of waiting for a holder that cannot
//     finish.
//
// Unlike dogpile.cache's Redis lock, a lock that is no longer ours is never
// deleted, a long regeneration does not lose its lock, a waiter is woken by
// the release rather than by a sleep, and a dead holder costs at most one
// lease.
//
// # Failures
//
// Every operation is bounded by the operation timeout (WithTimeout, default
// 100ms), so a slow or unreachable Redis costs a caller at most that much
// per operation; the region turns the error into a miss and makes the value
// itself. A GetOrCreate makes several operations (a read, the lock, the
// tag stamps, the store, the release), but once one has failed it makes no
// more, and the backend reports its timeout (Timeout) so that the region
// caps what one such call spends on Redis at 2.5 timeouts however slowly
// Redis answers: with Redis paused, down, out of memory or slow, it takes
// at most three timeouts beyond its creator's own time. Get, Delete and
// the invalidations are one operation each; Set stops at its first failed
// operation.
// After five consecutive operations that Redis did not answer
// (WithBreaker), a circuit breaker opens: every operation then fails at once
// with an error wrapping ErrUnavailable, without touching the network. After
// the cooldown (1s by default) one operation is let through as a probe; when
// it succeeds the backend works again by itself. Error replies from a Redis
// that answered (other than LOADING, CLUSTERDOWN, MASTERDOWN, TRYAGAIN, BUSY
// and too many clients) do not count as failures. All errors wrap the
// underlying one and can be inspected with errors.Is and errors.As.
//
// The timeout is cheapest with a client made with ContextTimeoutEnabled:
// then it is applied to the socket. Otherwise each operation runs in a
// goroutine that the backend stops waiting for at the timeout.
package redisbackend
