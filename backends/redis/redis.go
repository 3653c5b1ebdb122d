package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	cb "github.com/dogpile-go/dogpile/internal/breaker"
	"github.com/dogpile-go/dogpile/region"
)

// Defaults of a Backend made without options.
const (
	// DefaultTimeout bounds each Redis operation (WithTimeout).
	DefaultTimeout = 100 * time.Millisecond
	// DefaultLockTTL is the lease of a distributed lock (WithLockTTL).
	DefaultLockTTL = 10 * time.Second
	// DefaultBreakerFailures is how many consecutive failures open the
	// circuit breaker (WithBreaker).
	DefaultBreakerFailures = 5
	// DefaultBreakerCooldown is how long the breaker stays open before a
	// probe (WithBreaker).
	DefaultBreakerCooldown = time.Second
)

const (
	counterStartBits  = 48                     // a new counter starts at a random value below 1<<48
	maxWaitPoll       = 200 * time.Millisecond // longest sleep of Wait between two polls
	minExtendInterval = time.Millisecond       // floor of the lease renewal period
)

// topology is how keys are spread over servers, which decides how a
// multi-key operation is sent.
type topology uint8

const (
	single  topology = iota // one server (or a Sentinel-managed master): multi-key commands work
	cluster                 // Redis Cluster: multi-key commands only within one slot
	sharded                 // Ring or an unknown client: only keys with the same hash part are together
)

// Backend is a region.Backend that keeps its entries in Redis. It is safe for
// concurrent use. Close it to release its notification connection; the
// client stays the caller's.
type Backend struct {
	client  goredis.UniversalClient
	topo    topology
	prefix  string // prepended to every key
	timeout time.Duration
	lockTTL time.Duration
	// ctxDeadlines: the client applies context deadlines to its sockets, so
	// an operation can run in the caller's goroutine and still end on time.
	ctxDeadlines bool
	breaker      breaker
	notify       notifier
	releases     releaser // the releases retried in the background
}

// Option configures a Backend.
type Option func(*Backend)

// WithPrefix puts prefix and a colon before every key the backend stores
// ("myapp" stores key k as "myapp:k"; a prefix that already ends with a colon
// is used as it is), so that several applications can share a Redis. Hash tags in keys keep working, as the prefix never contains
// a brace: New panics if it does.
func WithPrefix(prefix string) Option {
	return func(b *Backend) {
		if prefix != "" && !strings.HasSuffix(prefix, ":") {
			prefix += ":"
		}
		b.prefix = prefix
	}
}

// WithTimeout bounds every Redis operation, so that a slow or unreachable
// Redis costs a caller at most d per operation (the default is
// DefaultTimeout). Zero leaves operations bounded by the caller's context
// and the client's own timeouts only.
func WithTimeout(d time.Duration) Option { return func(b *Backend) { b.timeout = d } }

// WithLockTTL sets the lease of the distributed lock (default DefaultLockTTL;
// d <= 0 keeps the default: a lock without a lease would block the others
// for ever once its holder died). A holder extends its lease while it holds
// the lock, so the TTL bounds only how long a holder that died blocks the
// others.
func WithLockTTL(d time.Duration) Option { return func(b *Backend) { b.lockTTL = d } }

// WithBreaker sets the circuit breaker: after failures consecutive operations
// that Redis did not answer, every operation fails fast with an error
// wrapping ErrUnavailable; after cooldown one operation is let through as a
// probe, and when it succeeds the backend works again. The default is
// DefaultBreakerFailures and DefaultBreakerCooldown; failures <= 0 turns the
// breaker off.
func WithBreaker(failures int, cooldown time.Duration) Option {
	return func(b *Backend) { b.breaker.Threshold, b.breaker.Cooldown = failures, cooldown }
}

// New returns a backend that stores its entries through client: a
// *redis.Client (single server or Sentinel), a *redis.ClusterClient, or any
// other redis.UniversalClient.
//
// For the operation timeout to hold even when Redis hangs without closing
// its connections, a client made with ContextTimeoutEnabled is cheapest:
// without it each operation runs in a goroutine of its own that the backend
// stops waiting for at the timeout.
func New(client goredis.UniversalClient, opts ...Option) *Backend {
	b := &Backend{
		client:  client,
		timeout: DefaultTimeout,
		lockTTL: DefaultLockTTL,
		breaker: breaker{cb.Breaker{Threshold: DefaultBreakerFailures, Cooldown: DefaultBreakerCooldown}},
	}
	switch c := client.(type) {
	case *goredis.Client:
		b.topo, b.ctxDeadlines = single, c.Options().ContextTimeoutEnabled
	case *goredis.ClusterClient:
		b.topo, b.ctxDeadlines = cluster, c.Options().ContextTimeoutEnabled
	case *goredis.Ring:
		b.topo, b.ctxDeadlines = sharded, c.Options().ContextTimeoutEnabled
	default:
		b.topo = sharded
	}
	for _, o := range opts {
		o(b)
	}
	if strings.ContainsRune(b.prefix, '{') {
		panic(fmt.Sprintf("redisbackend: prefix %q contains '{', which would change the cluster slot of every key", b.prefix))
	}
	if b.lockTTL <= 0 {
		b.lockTTL = DefaultLockTTL
	}
	b.notify.b = b
	b.releases.init(b)
	return b
}

// Close releases the connection the backend listens for unlock
// notifications on, and stops retrying the releases of locks that Redis
// did not answer (see Lock.Unlock). It does not close the client. Locks
// still held stay held until unlocked or expired.
func (b *Backend) Close() error {
	b.releases.close()
	return b.notify.close()
}

// Timeout returns the bound of each Redis operation (WithTimeout; zero when
// operations are bounded only by the caller's context and the client). A
// region reads it to bound what one of its calls spends on Redis during an
// outage: at most three timeouts.
func (b *Backend) Timeout() time.Duration { return b.timeout }

// Client returns the client the backend was made with.
func (b *Backend) Client() goredis.UniversalClient { return b.client }

// Key returns the Redis key under which the backend stores key.
func (b *Backend) Key(key string) string { return b.prefix + key }

func (b *Backend) keys(keys []string) []string {
	if b.prefix == "" {
		return keys
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = b.prefix + k
	}
	return out
}

// run runs op on Redis under the breaker and the operation timeout.
func run[T any](ctx context.Context, b *Backend, what string, op func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	probe, err := b.breaker.allow()
	if err != nil {
		return zero, fmt.Errorf("redisbackend: %s: %w", what, err)
	}
	octx, cancel := ctx, context.CancelFunc(func() {})
	if b.timeout > 0 {
		octx, cancel = context.WithTimeout(ctx, b.timeout)
	}
	defer cancel()
	var v T
	if b.ctxDeadlines || octx.Done() == nil {
		v, err = op(octx)
	} else {
		v, err = bounded(octx, op)
	}
	b.breaker.record(probe, classify(ctx, err))
	if err != nil && !errors.Is(err, goredis.Nil) {
		if dl, ok := octx.Deadline(); ok && ctx.Err() == nil && !time.Now().Before(dl) && !errors.Is(err, context.DeadlineExceeded) {
			// A socket deadline set from the operation timeout: say so.
			return v, fmt.Errorf("redisbackend: %s: %w: %w", what, context.DeadlineExceeded, err)
		}
		return v, fmt.Errorf("redisbackend: %s: %w", what, err)
	}
	return v, err
}

// bounded runs op in a goroutine and returns when it does or ctx ends,
// whichever comes first: a client that ignores context deadlines on its
// sockets cannot hold the caller longer than the timeout.
func bounded[T any](ctx context.Context, op func(ctx context.Context) (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := op(ctx)
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// GetMulti reads keys in one round trip: an MGET on a single server, a
// pipeline of GETs that the client sends to the cluster nodes in parallel
// otherwise.
func (b *Backend) GetMulti(ctx context.Context, keys []string) ([][]byte, error) {
	if len(keys) == 0 {
		return [][]byte{}, nil
	}
	rkeys := b.keys(keys)
	if b.topo == single {
		return run(ctx, b, "get", func(ctx context.Context) ([][]byte, error) {
			vals, err := b.client.MGet(ctx, rkeys...).Result()
			if err != nil {
				return nil, err
			}
			if len(vals) != len(rkeys) {
				return nil, fmt.Errorf("MGET returned %d values for %d keys", len(vals), len(rkeys))
			}
			out := make([][]byte, len(vals))
			for i, v := range vals {
				if s, ok := v.(string); ok {
					out[i] = []byte(s)
				}
			}
			return out, nil
		})
	}
	return run(ctx, b, "get", func(ctx context.Context) ([][]byte, error) {
		cmds := make([]*goredis.StringCmd, len(rkeys))
		_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, k := range rkeys {
				cmds[i] = p.Get(ctx, k)
			}
			return nil
		})
		if err != nil && !errors.Is(err, goredis.Nil) {
			return nil, err
		}
		out := make([][]byte, len(cmds))
		for i, c := range cmds {
			v, err := c.Bytes()
			switch {
			case err == nil:
				out[i] = v
			case !errors.Is(err, goredis.Nil):
				return nil, err
			}
		}
		return out, nil
	})
}

// ttlMillis is ttl in milliseconds, rounded up; zero for no expiry.
func ttlMillis(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return int64((ttl + time.Millisecond - 1) / time.Millisecond)
}

// SetMulti stores items in one pipeline, each with its own time to live
// (PX; zero means no expiry).
func (b *Backend) SetMulti(ctx context.Context, items []region.Item) error {
	if len(items) == 0 {
		return nil
	}
	_, err := run(ctx, b, "set", func(ctx context.Context) (struct{}, error) {
		if len(items) == 1 {
			return struct{}{}, b.client.Set(ctx, b.prefix+items[0].Key, items[0].Value, expiry(items[0].TTL)).Err()
		}
		_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, it := range items {
				p.Set(ctx, b.prefix+it.Key, it.Value, expiry(it.TTL))
			}
			return nil
		})
		return struct{}{}, err
	})
	return err
}

// expiry is a time to live as go-redis's Set takes it: zero keeps the key
// forever, a positive duration below a millisecond becomes one millisecond
// (go-redis sends PX for durations that are not whole seconds).
func expiry(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return 0
	}
	return max(ttl, time.Millisecond)
}

// setIfScript stores KEYS[1] = ARGV[1] with PX ARGV[2] ("0": no expiry) if
// every guard holds. KEYS[i] (i >= 2) is a guard key and ARGV[i+1] its
// condition: "" means the key must be missing, "=" followed by a value means
// it must hold exactly that value. A guard key of another type than a
// string counts as missing, as GetMulti (MGET) reads it, so a guard on what
// GetMulti returned holds and the SET replaces the key (the region repairs
// an unreadable counter that way).
var setIfScript = goredis.NewScript(`
for i = 2, #KEYS do
  local want = ARGV[i + 1]
  local ok, cur = pcall(redis.call, 'GET', KEYS[i])
  if not ok then cur = false end
  if want == '' then
    if cur then return 0 end
  elseif cur ~= string.sub(want, 2) then
    return 0
  end
end
local px = tonumber(ARGV[2])
if px > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
`)

// SetIf stores item if every guard holds. On a single server the guards are
// checked and the item written atomically, by one Lua script. On a cluster
// that holds only for guards in the item's slot (the lock fence is one):
// guards in other slots are read first, in one pipeline, and the write
// follows only if they hold, which is as close as a cluster allows.
func (b *Backend) SetIf(ctx context.Context, item region.Item, guards []region.Guard) (bool, error) {
	key := b.prefix + item.Key
	local, remote := guards, []region.Guard(nil)
	if b.topo != single {
		local = make([]region.Guard, 0, len(guards))
		for _, g := range guards {
			if b.together(key, b.prefix+g.Key) {
				local = append(local, g)
			} else {
				remote = append(remote, g)
			}
		}
	}
	if len(remote) > 0 {
		ok, err := b.check(ctx, remote)
		if err != nil || !ok {
			return false, err
		}
	}
	keys := make([]string, 1+len(local))
	keys[0] = key
	args := make([]any, 2+len(local))
	args[0] = item.Value
	args[1] = strconv.FormatInt(ttlMillis(item.TTL), 10)
	for i, g := range local {
		keys[1+i] = b.prefix + g.Key
		args[2+i] = condition(g)
	}
	n, err := run(ctx, b, "set if", func(ctx context.Context) (int64, error) {
		return setIfScript.Run(ctx, b.client, keys, args...).Int64()
	})
	return n == 1, err
}

// condition encodes a guard's value for setIfScript.
func condition(g region.Guard) []byte {
	if g.Value == nil {
		return []byte{}
	}
	c := make([]byte, 1+len(g.Value))
	c[0] = '='
	copy(c[1:], g.Value)
	return c
}

// check reads the guards' keys in one pipeline and reports whether they all
// hold.
func (b *Backend) check(ctx context.Context, guards []region.Guard) (bool, error) {
	keys := make([]string, len(guards))
	for i, g := range guards {
		keys[i] = g.Key
	}
	vals, err := b.GetMulti(ctx, keys)
	if err != nil {
		return false, err
	}
	for i, g := range guards {
		if (vals[i] == nil) != (g.Value == nil) || string(vals[i]) != string(g.Value) {
			return false, nil
		}
	}
	return true, nil
}

// together reports whether a script may use the Redis keys a and b together.
func (b *Backend) together(a, c string) bool {
	switch b.topo {
	case single:
		return true
	case cluster:
		return slot(a) == slot(c)
	default:
		return hashPart(a) == hashPart(c)
	}
}

// Delete removes keys: one UNLINK on a single server, a pipeline of UNLINKs
// (one per key, so none spans slots) otherwise.
func (b *Backend) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	rkeys := b.keys(keys)
	_, err := run(ctx, b, "delete", func(ctx context.Context) (struct{}, error) {
		if b.topo == single || len(rkeys) == 1 {
			return struct{}{}, b.client.Unlink(ctx, rkeys...).Err()
		}
		_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, k := range rkeys {
				p.Unlink(ctx, k)
			}
			return nil
		})
		return struct{}{}, err
	})
	return err
}

// incrScript increments KEYS[1], first setting it to ARGV[1] if it is
// missing or holds anything INCR cannot take (text, a float, a key of
// another type): as bumpScript does, an unreadable counter is repaired with
// a fresh start instead of failing every call. Counters are stored without
// expiry.
var incrScript = goredis.NewScript(`
local ok, v = pcall(redis.call, 'GET', KEYS[1])
if not ok or not v or not string.find(v, '^%-?%d+$') or #v > 18 then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], ARGV[1])
end
return redis.call('INCR', KEYS[1])
`)

// Incr increments the counter at key. A missing or unreadable counter starts
// from a random 48-bit value, so a counter deleted or evicted and made again does not
// repeat the values it had. Counters never expire.
func (b *Backend) Incr(ctx context.Context, key string) (int64, error) {
	start := rand.Int64N(1 << counterStartBits)
	return run(ctx, b, "incr", func(ctx context.Context) (int64, error) {
		return incrScript.Run(ctx, b.client, []string{b.prefix + key}, start).Int64()
	})
}

// Mutex returns the distributed lock on key (see Lock).
func (b *Backend) Mutex(key string) region.Mutex { return b.Lock(key) }

var _ region.Backend = (*Backend)(nil)
