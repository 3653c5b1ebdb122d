package memcachebackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	cb "github.com/dogpile-go/dogpile/internal/breaker"
	"github.com/dogpile-go/dogpile/region"
)

// Defaults of a Backend made without options.
const (
	// DefaultTimeout bounds each memcached operation (WithTimeout).
	DefaultTimeout = 100 * time.Millisecond
	// DefaultLockTTL is the lease of a distributed lock (WithLockTTL).
	DefaultLockTTL = 10 * time.Second
	// DefaultBreakerFailures is how many consecutive failures open the
	// circuit breaker (WithBreaker).
	DefaultBreakerFailures = 5
	// DefaultBreakerCooldown is how long the breaker stays open before a
	// probe (WithBreaker).
	DefaultBreakerCooldown = time.Second
	// DefaultMaxItemSize is memcached's default largest item (its -I
	// option): 1 MiB (WithMaxItemSize).
	DefaultMaxItemSize = 1 << 20
	// DefaultMaxIdleConns is the number of idle connections per server that
	// the client made by Open keeps (gomemcache keeps 2 by default, which
	// makes every concurrent caller beyond two dial a connection of its
	// own).
	DefaultMaxIdleConns = 64
)

const (
	counterStartBits = 48 // a new counter starts at a random value below 1<<48
	// itemOverhead is what memcached adds to a key and value in its item
	// size limit (header, CAS, suffix), rounded up: measured on memcached
	// 1.6.18, a value is taken while len(key)+len(value) stays at or below
	// the limit minus about 70 bytes.
	itemOverhead = 96
	// maxRelative is the longest expiration memcached reads as relative
	// (30 days in seconds); a larger one is an absolute Unix time.
	maxRelative = 30 * 24 * 60 * 60
	// incrAttempts bounds the retries of Incr when the counter is created,
	// evicted or repaired by others between its steps.
	incrAttempts = 8
)

// Backend is a region.Backend that keeps its entries in memcached, through
// gomemcache. It is safe for concurrent use. Close it to stop the goroutines
// it runs for its locks.
type Backend struct {
	client *memcache.Client
	owned  bool // made by Open: Close closes its connections
	prefix string
	// timeout bounds each operation; sockTimeout is the client's socket
	// timeout, read by New (see direct).
	timeout     time.Duration
	sockTimeout time.Duration
	lockTTL     time.Duration
	maxItem     int
	breaker     breaker
	releases    releaser // releases retried in the background
	reader      *reader  // the multi-get of one server; nil over the caller's client

	// ctx is cancelled by Close: it stops the lease renewals.
	ctx     context.Context
	cancel  context.CancelFunc
	renewMu sync.Mutex     // orders renewal starts before Close's wait
	closed  bool           // guarded by renewMu
	renewWG sync.WaitGroup // the lease renewals; Add is called under renewMu

	tooLarge atomic.Int64
}

// Option configures a Backend.
type Option func(*config)

// config is what the options set; New turns it into a Backend.
type config struct {
	prefix          string
	timeout         time.Duration
	lockTTL         time.Duration
	breakerFailures int
	breakerCooldown time.Duration
	maxItem         int
	maxIdle         int
}

// WithPrefix puts prefix and a colon before every key the backend stores
// ("myapp" stores key k as "myapp:k"; a prefix that already ends with a
// colon is used as it is), so that several applications can share a
// memcached. New panics if the prefix holds a space or a control character,
// or is longer than 205 bytes (memcached keys are at most 250).
func WithPrefix(prefix string) Option {
	return func(c *config) {
		if prefix != "" && !strings.HasSuffix(prefix, ":") {
			prefix += ":"
		}
		c.prefix = prefix
	}
}

// WithTimeout bounds every memcached operation, so that a slow or
// unreachable memcached costs a caller at most d per operation (the default
// is DefaultTimeout). Zero leaves operations bounded by the caller's context
// and the client's socket timeout only.
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// WithLockTTL sets the lease of the distributed lock (default
// DefaultLockTTL; d <= 0 keeps the default). A holder renews its lease while
// it holds the lock, so the TTL bounds only how long a holder that died
// blocks the others. memcached counts time in whole seconds: the lease
// given to memcached is d rounded up to a second, plus one (see Item TTLs
// in the package documentation).
func WithLockTTL(d time.Duration) Option { return func(c *config) { c.lockTTL = d } }

// WithBreaker sets the circuit breaker: after failures consecutive
// operations that memcached did not answer, every operation fails fast with
// an error wrapping ErrUnavailable; after cooldown one operation is let
// through as a probe, and when it succeeds the backend works again. The
// default is DefaultBreakerFailures and DefaultBreakerCooldown; failures <= 0
// turns the breaker off.
func WithBreaker(failures int, cooldown time.Duration) Option {
	return func(c *config) { c.breakerFailures, c.breakerCooldown = failures, cooldown }
}

// WithMaxItemSize sets the largest item the servers take (memcached's -I;
// default DefaultMaxItemSize). A value that, with its key, would not fit is
// not sent: it is not stored, which is a miss for later readers, and counted
// (Stats().TooLarge), not an error.
func WithMaxItemSize(n int) Option {
	return func(c *config) { c.maxItem = n }
}

// WithMaxIdleConns sets how many idle connections per server the client
// made by Open keeps (default DefaultMaxIdleConns). New, which takes the
// caller's client, ignores it.
func WithMaxIdleConns(n int) Option {
	return func(c *config) { c.maxIdle = n }
}

func collect(opts []Option) config {
	c := config{
		timeout:         DefaultTimeout,
		lockTTL:         DefaultLockTTL,
		breakerFailures: DefaultBreakerFailures,
		breakerCooldown: DefaultBreakerCooldown,
		maxItem:         DefaultMaxItemSize,
		maxIdle:         DefaultMaxIdleConns,
	}
	for _, o := range opts {
		o(&c)
	}
	if c.lockTTL <= 0 {
		c.lockTTL = DefaultLockTTL
	}
	if c.maxItem <= 0 {
		c.maxItem = DefaultMaxItemSize
	}
	return c
}

// New returns a backend that stores its entries through client, which stays
// the caller's (Close does not close it). Keys are spread over the client's
// servers by the client.
//
// An operation runs in the caller's goroutine when its context has no
// deadline and the client's socket timeout (client.Timeout, or gomemcache's
// default of 500ms when zero) is no longer than the backend's timeout: the
// socket deadline then bounds it. Otherwise it runs in a goroutine of its
// own that the backend stops waiting for at the timeout or when the context
// ends (the goroutine itself ends at the client's socket timeout). So, for
// the cheapest calls, give the client a Timeout no longer than the
// backend's, as Open does. New reads client.Timeout once.
func New(client *memcache.Client, opts ...Option) *Backend {
	return build(client, false, collect(opts))
}

// Open returns a backend over a client of its own for the memcached
// servers at addrs ("host:port", or a Unix socket path), with the client's
// socket timeout set to the backend's timeout and DefaultMaxIdleConns idle
// connections per server (WithMaxIdleConns). It does not connect: the
// first operation does. Close closes the client's connections.
func Open(addrs []string, opts ...Option) (*Backend, error) {
	if len(addrs) == 0 {
		return nil, errors.New("memcachebackend: no server address")
	}
	cfg := collect(opts)
	var servers memcache.ServerList
	if err := servers.SetServers(addrs...); err != nil {
		return nil, fmt.Errorf("memcachebackend: servers %q: %w", addrs, err)
	}
	client := memcache.NewFromSelector(&servers)
	client.Timeout = cfg.timeout
	if cfg.timeout <= 0 {
		client.Timeout = memcache.DefaultTimeout
	}
	client.MaxIdleConns = cfg.maxIdle
	b := build(client, true, cfg)
	b.reader = &reader{servers: &servers, timeout: client.Timeout, maxIdle: cfg.maxIdle}
	return b, nil
}

func build(client *memcache.Client, owned bool, cfg config) *Backend {
	checkPrefix(cfg.prefix)
	b := &Backend{
		client:      client,
		owned:       owned,
		prefix:      cfg.prefix,
		timeout:     cfg.timeout,
		sockTimeout: client.Timeout,
		lockTTL:     cfg.lockTTL,
		maxItem:     cfg.maxItem,
		breaker:     breaker{cb.Breaker{Threshold: cfg.breakerFailures, Cooldown: cfg.breakerCooldown}},
	}
	if b.sockTimeout <= 0 {
		b.sockTimeout = memcache.DefaultTimeout
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.releases.init(b)
	return b
}

// Close stops renewing the leases of the locks still held, stops retrying
// the releases of locks that memcached did not answer (see Lock.Unlock), and
// waits for those goroutines. A backend made by Open also closes its
// client's idle connections. Locks still held stay held until they expire.
// The backend still works after Close, without those goroutines.
func (b *Backend) Close() error {
	b.renewMu.Lock()
	b.closed = true
	b.renewMu.Unlock()
	b.cancel()
	b.renewWG.Wait()
	b.releases.close()
	if b.reader != nil {
		b.reader.closeIdle(true)
	}
	if b.owned {
		if err := b.client.Close(); err != nil {
			return fmt.Errorf("memcachebackend: close: %w", err)
		}
	}
	return nil
}

// Timeout returns the bound of each memcached operation (WithTimeout; zero
// when operations are bounded only by the caller's context and the client).
// A region reads it to bound what one of its calls spends on memcached
// during an outage.
func (b *Backend) Timeout() time.Duration { return b.timeout }

// Client returns the client the backend stores through.
func (b *Backend) Client() *memcache.Client { return b.client }

// Stats are the backend's counters.
type Stats struct {
	// TooLarge counts the values not stored because they exceed the item
	// size limit (WithMaxItemSize), or because memcached refused them as
	// too large.
	TooLarge int64
}

// Stats returns the backend's counters.
func (b *Backend) Stats() Stats { return Stats{TooLarge: b.tooLarge.Load()} }

// direct reports whether an operation for ctx may run in the caller's
// goroutine: nothing but the backend's timeout bounds it, and the client's
// socket deadline is within that.
func (b *Backend) direct(ctx context.Context) bool {
	return ctx.Done() == nil && (b.timeout <= 0 || b.sockTimeout <= b.timeout)
}

// run runs op under the breaker and the operation timeout. op's error is
// memcached's or the network's: ops turn the answers that are results
// (a miss, a failed add or cas) into values.
func run[T any](ctx context.Context, b *Backend, what string, op func() (T, error)) (T, error) {
	var zero T
	probe, err := b.breaker.allow()
	if err != nil {
		return zero, fmt.Errorf("memcachebackend: %s: %w", what, err)
	}
	var v T
	op = retryStale(b, op)
	if b.direct(ctx) {
		v, err = op()
	} else {
		octx, cancel := ctx, context.CancelFunc(func() {})
		if b.timeout > 0 {
			octx, cancel = context.WithTimeout(ctx, b.timeout)
		}
		v, err = bounded(octx, op)
		cancel()
	}
	b.breaker.record(probe, classify(ctx, err))
	if err != nil {
		return v, fmt.Errorf("memcachebackend: %s: %w", what, err)
	}
	return v, nil
}

// retryStale wraps op so that an operation that failed on a connection the
// server dropped (it restarted, or went away and came back) is tried once
// more, on a new connection. gomemcache keeps idle connections per server
// and finds a connection dead only by using it: after a restart, every idle
// one would fail one operation. So the first such failure closes the
// client's idle connections (gomemcache's Client.Close; the client stays
// usable), all of them, as those to the same server are dead too, and the
// retry dials afresh. Only a dropped connection is retried, which fails at
// once: not a timeout, nor a refused dial (the server is down), which a
// retry would only make longer. Every operation of the backend may run
// twice: reads, sets and deletes are idempotent; an Incr that landed before
// its connection dropped moves the counter by two, which is still a new
// value; a guarded write that landed reports, on its retry, that it did
// not store, as its guard no longer holds; the lock's add is handled in
// TryLock.
func retryStale[T any](b *Backend, op func() (T, error)) func() (T, error) {
	return func() (T, error) {
		v, err := op()
		if err != nil && droppedConn(err) {
			_ = b.client.Close()
			if b.reader != nil {
				b.reader.closeIdle(false)
			}
			v, err = op()
		}
		return v, err
	}
}

// droppedConn reports whether err is the failure of a connection that the
// server closed or reset.
func droppedConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// bounded runs op in a goroutine and returns when it does or ctx ends,
// whichever comes first. gomemcache takes no context: a goroutine left
// behind ends by itself at the client's socket timeout.
func bounded[T any](ctx context.Context, op func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := op()
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

// GetMulti reads keys with one multi-get: one "gets" per server. Over a
// backend made by Open, keys that all live on one server (always, with
// one server) are read in the caller's goroutine (see reader); otherwise
// through gomemcache's GetMulti, which asks the servers in parallel.
func (b *Backend) GetMulti(ctx context.Context, keys []string) ([][]byte, error) {
	if len(keys) == 0 {
		return [][]byte{}, nil
	}
	mkeys := b.keys(keys)
	vals, err := run(ctx, b, "get", func() ([]got, error) { return b.multiGet(mkeys) })
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = v.value
	}
	return out, nil
}

// multiGet reads the memcached keys, index for index.
func (b *Backend) multiGet(keys []string) ([]got, error) {
	if b.reader != nil {
		addr, one, err := b.reader.server(keys)
		if err != nil {
			return nil, err
		}
		if one {
			return b.reader.gets(addr, keys)
		}
	}
	items, err := b.client.GetMulti(keys)
	if err != nil {
		return nil, err
	}
	out := make([]got, len(keys))
	for i, k := range keys {
		if it := items[k]; it != nil {
			out[i] = got{value: it.Value, cas: it.CasID}
		}
	}
	return out, nil
}

// expiration converts a time to live into memcached's expiration: whole
// seconds, relative up to 30 days, an absolute Unix time beyond. It rounds
// up, and adds a second, because memcached's clock ticks in whole seconds
// and an item stored late in a tick would otherwise lose up to one: an item
// may outlive its TTL by up to two seconds, never expire before it (an
// early expiry is a miss where the region expected a stale value to serve;
// a late one changes nothing, as the region decides from the envelope what
// is fresh, stale or dead). Zero means no expiry; so does an absolute time
// past what memcached's 32-bit field holds (2038).
func expiration(ttl time.Duration) int32 {
	if ttl <= 0 {
		return 0
	}
	secs := int64((ttl+time.Second-1)/time.Second) + 1
	if secs <= maxRelative {
		return int32(secs)
	}
	abs := time.Now().Unix() + secs
	if abs > math.MaxInt32 {
		return 0
	}
	return int32(abs)
}

// fits reports whether memcached would take key and value as one item.
func (b *Backend) fits(key string, value []byte) bool {
	return len(key)+len(value)+itemOverhead <= b.maxItem
}

// tooLargeReply reports whether err is memcached refusing an item as too
// large.
func tooLargeReply(err error) bool {
	return err != nil && strings.Contains(err.Error(), "SERVER_ERROR object too large")
}

// SetMulti stores items, each with its own time to live (see expiration),
// one set per item (memcached's text protocol has no multi-set), all within
// one operation timeout. An item too large for memcached is skipped and
// counted (Stats), not an error.
func (b *Backend) SetMulti(ctx context.Context, items []region.Item) error {
	mitems := make([]*memcache.Item, 0, len(items))
	for _, it := range items {
		k := b.key(it.Key)
		if !b.fits(k, it.Value) {
			b.tooLarge.Add(1)
			continue
		}
		mitems = append(mitems, &memcache.Item{Key: k, Value: it.Value, Expiration: expiration(it.TTL)})
	}
	if len(mitems) == 0 {
		return nil
	}
	_, err := run(ctx, b, "set", func() (struct{}, error) {
		for _, mi := range mitems {
			if err := b.client.Set(mi); err != nil {
				if tooLargeReply(err) {
					b.tooLarge.Add(1)
					continue
				}
				return struct{}{}, err
			}
		}
		return struct{}{}, nil
	})
	return err
}

// guard is a region.Guard on a memcached key.
type guard struct {
	key   string
	value []byte // nil: must be missing
}

// holds reports whether g, what memcached holds (a nil value: missing),
// satisfies want.
func holds(g got, want []byte) bool {
	if want == nil {
		return g.value == nil
	}
	return g.value != nil && bytes.Equal(g.value, want)
}

// SetIf stores item if every guard holds. A guard on the item's own key is
// checked by memcached with the write: "must be missing" is an add, "must
// hold v" a cas on the CAS id read with v (gets). Guards on other keys (tag
// counters, the lock's fence) are read in the same multi-get, just before
// the write: memcached has no multi-key transaction, so a key changed
// between that read and the write is not caught. The region relies on
// stamps for correctness, not on guards (see the package documentation).
// An item too large for memcached is not stored and counted: false, nil.
func (b *Backend) SetIf(ctx context.Context, item region.Item, guards []region.Guard) (bool, error) {
	k := b.key(item.Key)
	if !b.fits(k, item.Value) {
		b.tooLarge.Add(1)
		return false, nil
	}
	var (
		self    []byte
		hasSelf bool
		others  []guard
		read    []string // the keys of others, in order, then k if it is read
	)
	for _, g := range guards {
		gk := b.key(g.Key)
		if gk != k {
			others = append(others, guard{gk, g.Value})
			read = append(read, gk)
			continue
		}
		if hasSelf && ((self == nil) != (g.Value == nil) || !bytes.Equal(self, g.Value)) {
			return false, nil // two guards on the key that cannot both hold
		}
		self, hasSelf = g.Value, true
	}
	if hasSelf && self != nil {
		read = append(read, k)
	}
	mi := &memcache.Item{Key: k, Value: item.Value, Expiration: expiration(item.TTL)}
	return run(ctx, b, "set if", func() (bool, error) {
		var vals []got
		if len(read) > 0 {
			var err error
			if vals, err = b.multiGet(read); err != nil {
				return false, err
			}
		}
		for i, g := range others {
			if !holds(vals[i], g.value) {
				return false, nil
			}
		}
		var err error
		switch {
		case !hasSelf:
			err = b.client.Set(mi)
		case self == nil:
			err = b.client.Add(mi)
		default:
			cur := vals[len(vals)-1] // the item's own key, read last
			if !holds(cur, self) {
				return false, nil
			}
			mi.CasID = cur.cas
			err = b.client.CompareAndSwap(mi)
		}
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, memcache.ErrNotStored), errors.Is(err, memcache.ErrCASConflict), errors.Is(err, memcache.ErrCacheMiss):
			return false, nil
		case tooLargeReply(err):
			b.tooLarge.Add(1)
			return false, nil
		}
		return false, err
	})
}

// Delete removes keys, one delete each, within one operation timeout.
func (b *Backend) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	mkeys := b.keys(keys)
	_, err := run(ctx, b, "delete", func() (struct{}, error) {
		for _, k := range mkeys {
			if err := b.client.Delete(k); err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
				return struct{}{}, err
			}
		}
		return struct{}{}, nil
	})
	return err
}

// Incr increments the counter at key with memcached's incr. memcached's incr
// fails on a missing key, so a missing counter is created with add, at a
// random 48-bit value plus one (the value Incr returns then): a counter
// evicted or lost in a restart and made again does not repeat the values it
// had. When another caller creates it between the incr and the add, the add
// fails and Incr increments theirs. A counter that holds what incr cannot
// take (not a decimal), or whose increment leaves the int64 range or wraps
// round to 0, is replaced by a fresh start with cas, as the Redis backend
// repairs one. Counters never expire
// (memcached may still evict them: see the package documentation).
func (b *Backend) Incr(ctx context.Context, key string) (int64, error) {
	k := b.key(key)
	return run(ctx, b, "incr", func() (int64, error) { return b.incr(k) })
}

// incr is Incr on the memcached key k.
func (b *Backend) incr(k string) (int64, error) {
	for range incrAttempts {
		n, err := b.client.Increment(k, 1)
		switch {
		case err == nil && n > 0 && n <= math.MaxInt64:
			return int64(n), nil
		case err == nil, nonNumeric(err):
			// Beyond an int64, or wrapped round to 0: as unreadable.
			v, ok, err := b.repairCounter(k)
			if err != nil || ok {
				return v, err
			}
		case errors.Is(err, memcache.ErrCacheMiss):
			v := freshCounter()
			err := b.client.Add(&memcache.Item{Key: k, Value: strconv.AppendInt(nil, v, 10)})
			if err == nil {
				return v, nil
			}
			if !errors.Is(err, memcache.ErrNotStored) {
				return 0, err
			}
			// Made by another caller meanwhile: increment theirs.
		default:
			return 0, err
		}
	}
	return 0, fmt.Errorf("counter %q changed under every one of %d attempts", k, incrAttempts)
}

// freshCounter is the value of a counter created by Incr.
func freshCounter() int64 { return rand.Int64N(1<<counterStartBits) + 1 }

// nonNumeric reports whether err is memcached refusing to increment a value
// that is not a decimal number.
func nonNumeric(err error) bool {
	return err != nil && strings.Contains(err.Error(), "non-numeric")
}

// repairCounter replaces the unreadable counter at k with a fresh start,
// by cas on what it read, and reports whether it did; false with no error
// means that k changed meanwhile (the caller tries again).
func (b *Backend) repairCounter(k string) (int64, bool, error) {
	it, err := b.client.Get(k)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if n, perr := strconv.ParseUint(string(it.Value), 10, 64); perr == nil && n < math.MaxInt64 {
		return 0, false, nil // readable now: increment it
	}
	v := freshCounter()
	it.Value, it.Expiration = strconv.AppendInt(nil, v, 10), 0
	switch err := b.client.CompareAndSwap(it); {
	case err == nil:
		return v, true, nil
	case errors.Is(err, memcache.ErrCASConflict), errors.Is(err, memcache.ErrNotStored), errors.Is(err, memcache.ErrCacheMiss):
		return 0, false, nil
	default:
		return 0, false, err
	}
}

// Mutex returns the distributed lock on key (see Lock).
func (b *Backend) Mutex(key string) region.Mutex { return b.Lock(key) }

var _ region.Backend = (*Backend)(nil)
