//go:build unix

package filebackend

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dogpile-go/dogpile/region"
)

// Defaults of a Backend made without options.
const (
	// DefaultMaxBytes bounds the bytes the entries weigh (WithMaxBytes).
	DefaultMaxBytes = 256 << 20
	// DefaultTimeout bounds the wait for the store lock (WithTimeout).
	DefaultTimeout = time.Second
	// DefaultHold is how long a process keeps the file open once it has
	// opened it (WithHold).
	DefaultHold = 2 * time.Millisecond
	// DefaultStampFlush is how often the accesses a process read are
	// written to the file when it writes nothing else (WithStampFlush).
	DefaultStampFlush = time.Second
)

// Errors of the backend. They are wrapped; test them with errors.Is.
var (
	// ErrCorrupt: the file could not be read as a database, or a
	// transaction found it damaged. The operation fails (a region reads it
	// as a miss); the next operation replaces the file with an empty one.
	ErrCorrupt = errors.New("filebackend: cache file damaged")
	// ErrForeign: the directory holds a bbolt file of another program.
	// The backend never deletes it: New fails.
	ErrForeign = errors.New("filebackend: the data file is a bbolt file of another program")
	// ErrBusy: the store lock was not free within the operation timeout
	// (another process held the file that long: stopped, or a very long
	// transaction).
	ErrBusy = errBusy
	// ErrClosed: the Backend was closed.
	ErrClosed = errClosedStore
)

// counterStartBits: a new counter starts at a random value below 1<<48.
const counterStartBits = 48

// maxPending bounds the accesses a process remembers between two writes
// (see "Eviction"); accesses to other keys beyond it are not recorded.
const maxPending = 1 << 12

// Backend is a region.Backend that keeps its entries in one bbolt file
// shared by the processes of one host. It is safe for concurrent use.
// Close it when done.
type Backend struct {
	dir        string
	st         *store
	timeout    time.Duration
	maxBytes   int64
	maxEntries int64
	flushEvery time.Duration
	now        func() time.Time

	mu      sync.Mutex
	pending map[string]int64 // guarded by mu; key → when this process last read it

	evicted   atomic.Int64
	expiredN  atomic.Int64
	corrupted atomic.Int64

	stop     chan struct{}
	stopped  chan struct{}
	closing  sync.Once
	closeErr error
}

// Option configures a Backend.
type Option func(*config)

type config struct {
	maxBytes   int64
	maxEntries int64
	timeout    time.Duration
	hold       time.Duration
	flushEvery time.Duration
	sync       bool
	now        func() time.Time
}

// WithMaxBytes bounds what the entries weigh: their keys (four times: the
// record and its three index entries), their values and a fixed overhead of
// 109 bytes each. Beyond it, entries are evicted (see "Eviction"). The
// default is DefaultMaxBytes; n <= 0 removes the bound.
func WithMaxBytes(n int64) Option { return func(c *config) { c.maxBytes = n } }

// WithMaxEntries bounds the number of entries (counters included); beyond
// it, entries are evicted. The default is no bound on the count.
func WithMaxEntries(n int64) Option { return func(c *config) { c.maxEntries = n } }

// WithTimeout bounds how long an operation waits for the store lock while
// another process holds the file (stopped, for instance, or in a very long
// transaction): it costs the others at most d per operation, then the
// operation fails with ErrBusy, which a region reads as a miss. The
// default is DefaultTimeout; d <= 0 bounds the wait by the context only.
// The transaction itself, once the file is open, is not bounded (a disk
// read cannot be interrupted), nor are waits for the process's own
// goroutines, which end within a timeout and a hold.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithHold sets how long, at most, a process keeps the file open once it
// has opened it: the operations its goroutines start meanwhile use the open
// handle, without opening the file again. The handle is closed earlier
// when the process has made no operation for 1ms, or when another process
// waits for the file (see "Sharing the file"). d <= 0 closes the file as
// soon as no operation is in flight (operations that overlap share an open,
// for 1ms at most): every operation of a process that makes one at a time
// opens the file. The default is DefaultHold.
func WithHold(d time.Duration) Option { return func(c *config) { c.hold = d } }

// WithStampFlush sets how often the accesses this process read, which are
// kept in memory, are written to the file when no other write of the
// process has carried them (see "Eviction"). d <= 0: only writes carry
// them. The default is DefaultStampFlush.
func WithStampFlush(d time.Duration) Option { return func(c *config) { c.flushEvery = d } }

// WithSync makes every write transaction fsync the file before it returns,
// so that entries survive a crash of the machine, not only of the process;
// the cost is a disk flush per write. Off by default: the page cache keeps
// what a process wrote when the process dies.
func WithSync(on bool) Option { return func(c *config) { c.sync = on } }

// withClock sets the clock of expiry and access stamps (tests).
func withClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// New returns a backend keeping its files in dir, which it creates if
// needed: data.db (the bbolt file), store.lock, writer.lock and wait.lock
// (the locks that share it, see "Sharing the file") and keys/ (the dogpile
// locks, one file per locked key). Every process of the host that opens the
// same dir shares the cache.
//
// New opens the file once: a damaged file is replaced by an empty one
// (Stats().Resets counts it); a bbolt file of another program makes New
// fail with ErrForeign.
func New(dir string, opts ...Option) (*Backend, error) {
	c := config{maxBytes: DefaultMaxBytes, timeout: DefaultTimeout, hold: DefaultHold, flushEvery: DefaultStampFlush, now: time.Now}
	for _, o := range opts {
		o(&c)
	}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		return nil, fmt.Errorf("filebackend: %w", err)
	}
	st, err := newStore(dir, filepath.Join(dir, "data.db"), c.hold, c.timeout, c.sync)
	if err != nil {
		return nil, fmt.Errorf("filebackend: %w", err)
	}
	st.prepare = prepareLayout
	b := &Backend{
		dir: dir, st: st, timeout: c.timeout,
		maxBytes: max(c.maxBytes, 0), maxEntries: max(c.maxEntries, 0),
		flushEvery: c.flushEvery, now: c.now,
		pending: make(map[string]int64),
		stop:    make(chan struct{}), stopped: make(chan struct{}),
	}
	// Open the file read-write once: it is made, checked, or replaced.
	if err := b.update(context.Background(), "open", func(*wtx) error { return nil }); err != nil {
		_ = st.close()
		return nil, err
	}
	if b.flushEvery > 0 {
		go b.flusher()
	} else {
		close(b.stopped)
	}
	return b, nil
}

// Dir returns the directory of the backend's files.
func (b *Backend) Dir() string { return b.dir }

// Timeout returns the bound of the wait for the store lock (WithTimeout). A
// region reads it to bound what one of its calls spends on the backend when
// the file is held by a process that does not let it go.
func (b *Backend) Timeout() time.Duration { return b.timeout }

// Close writes the accesses not yet written, closes the file and stops the
// background goroutine. Operations in flight finish first; later ones fail
// with ErrClosed. Locks still held stay held until unlocked (or until their
// process exits).
func (b *Backend) Close() error {
	b.closing.Do(func() {
		close(b.stop)
		<-b.stopped
		err := b.flushStamps(context.Background())
		if errors.Is(err, ErrClosed) {
			err = nil
		}
		b.closeErr = errors.Join(err, b.st.close())
	})
	return b.closeErr
}

// flusher writes the pending accesses every flushEvery, until Close.
func (b *Backend) flusher() {
	defer close(b.stopped)
	t := time.NewTicker(b.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		b.mu.Lock()
		n := len(b.pending)
		b.mu.Unlock()
		if n > 0 {
			_ = b.flushStamps(context.Background())
		}
	}
}

// flushStamps writes the pending accesses in a transaction of their own.
func (b *Backend) flushStamps(ctx context.Context) error {
	return b.update(ctx, "flush accesses", func(*wtx) error { return nil })
}

// Stats are counts of what this Backend did since New (other processes
// count their own).
type Stats struct {
	Evicted int64 // entries removed to keep the bounds, expired ones excepted
	Expired int64 // expired entries removed
	Corrupt int64 // records read as missing because they were damaged
	Resets  int64 // damaged files replaced by an empty one
	Opens   int64 // times the file was opened
}

// Stats returns the backend's counts.
func (b *Backend) Stats() Stats {
	return Stats{
		Evicted: b.evicted.Load(), Expired: b.expiredN.Load(), Corrupt: b.corrupted.Load(),
		Resets: b.st.resets.Load(), Opens: b.st.opens.Load(),
	}
}

// Usage returns the number of entries in the file and what they weigh (see
// WithMaxBytes), as of its last write.
func (b *Backend) Usage(ctx context.Context) (entries, bytes int64, err error) {
	err = b.view(ctx, "usage", func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m == nil {
			return nil
		}
		if c, n := m.Get(countKey), m.Get(bytesKey); len(c) == 8 && len(n) == 8 {
			entries, bytes = int64(beUint(c)), int64(beUint(n))
		}
		return nil
	})
	return entries, bytes, err
}

func beUint(b []byte) uint64 {
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// view runs fn in a read-only transaction.
func (b *Backend) view(ctx context.Context, what string, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filebackend: %s: %w", what, err)
	}
	db, err := b.st.acquire(ctx, false)
	if err != nil {
		return fmt.Errorf("filebackend: %s: %w", what, err)
	}
	defer b.st.release()
	if err := b.guard(func() error { return db.View(fn) }); err != nil {
		return fmt.Errorf("filebackend: %s: %w", what, err)
	}
	return nil
}

// update runs fn in a read-write transaction, which also writes the
// accesses this process read since its last write, removes some expired
// entries and evicts what the bounds require.
func (b *Backend) update(ctx context.Context, what string, fn func(w *wtx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filebackend: %s: %w", what, err)
	}
	db, err := b.st.acquire(ctx, true)
	if err != nil {
		return fmt.Errorf("filebackend: %s: %w", what, err)
	}
	defer b.st.release()
	b.mu.Lock()
	var touched map[string]int64
	if len(b.pending) > 0 {
		touched = b.pending
		b.pending = make(map[string]int64, len(touched))
	}
	b.mu.Unlock()
	err = b.guard(func() error {
		return db.Update(func(tx *bolt.Tx) error {
			w, err := b.begin(tx, b.now().UnixNano())
			if err != nil {
				return err
			}
			for k, at := range touched {
				if err := w.touch(k, at); err != nil {
					return err
				}
			}
			if err := fn(w); err != nil {
				return err
			}
			return w.commit()
		})
	})
	if err != nil {
		return fmt.Errorf("filebackend: %s: %w", what, err)
	}
	return nil
}

// guard runs a transaction; a panic of bbolt (a damaged page) or a layout
// found damaged is ErrCorrupt, and the file is replaced by the next open.
func (b *Backend) guard(tx func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
		if errors.Is(err, errCorruptLayout) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if errors.Is(err, ErrCorrupt) {
			b.st.markDamaged()
		}
	}()
	return tx()
}

// touched records that this process read key at.
func (b *Backend) touched(keys []string, hits []bool, at int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, k := range keys {
		if !hits[i] {
			continue
		}
		if _, ok := b.pending[k]; ok || len(b.pending) < maxPending {
			b.pending[strings.Clone(k)] = at
		}
	}
}

// GetMulti reads keys in one read-only transaction. A key that is missing,
// expired, or whose record is damaged has a nil entry.
func (b *Backend) GetMulti(ctx context.Context, keys []string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	var few [8]bool
	hits := few[:0]
	if len(keys) > len(few) {
		hits = make([]bool, 0, len(keys))
	}
	hits = hits[:len(keys)]
	now := b.now().UnixNano()
	err := b.view(ctx, "get", func(tx *bolt.Tx) error {
		vb := tx.Bucket(bucketValues)
		if vb == nil {
			return nil
		}
		var raw [8][]byte
		vals := raw[:0]
		if len(keys) > len(raw) {
			vals = make([][]byte, 0, len(keys))
		}
		size := 0
		for _, k := range keys {
			rec := vb.Get([]byte(k))
			v, exp, ok := decode(k, rec)
			switch {
			case rec == nil:
			case !ok:
				b.corrupted.Add(1)
			case live(exp, now):
				size += len(v)
				vals = append(vals, v)
				continue
			}
			vals = append(vals, nil)
		}
		buf := make([]byte, 0, size)
		for i, v := range vals {
			if v == nil {
				continue
			}
			at := len(buf)
			buf = append(buf, v...)
			out[i] = buf[at:len(buf):len(buf)]
			hits[i] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.touched(keys, hits, now)
	return out, nil
}

// expiry is the absolute expiry of an entry stored now with ttl.
func expiry(now int64, ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	if now > math.MaxInt64-int64(ttl) {
		return 0
	}
	return now + int64(ttl)
}

// SetMulti stores every item in one transaction, each with its own time to
// live.
func (b *Backend) SetMulti(ctx context.Context, items []region.Item) error {
	if len(items) == 0 {
		return nil
	}
	return b.update(ctx, "set", func(w *wtx) error {
		for _, it := range items {
			if _, err := w.put(it.Key, it.Value, expiry(w.now, it.TTL)); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetIf stores item if every guard holds, checking the guards and writing
// in one read-write transaction: atomically, for every process.
func (b *Backend) SetIf(ctx context.Context, item region.Item, guards []region.Guard) (bool, error) {
	stored := false
	err := b.update(ctx, "set if", func(w *wtx) error {
		for _, g := range guards {
			cur := w.get(g.Key)
			if (cur == nil) != (g.Value == nil) || string(cur) != string(g.Value) {
				return nil
			}
		}
		var err error
		stored, err = w.put(item.Key, item.Value, expiry(w.now, item.TTL))
		return err
	})
	return stored && err == nil, err
}

// Delete removes keys in one transaction.
func (b *Backend) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	return b.update(ctx, "delete", func(w *wtx) error {
		for _, k := range keys {
			if err := w.remove([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Incr increments the counter at key in one transaction. A missing,
// expired or unreadable counter starts from a random 48-bit value, so a
// counter that was evicted and made again does not repeat a value it had.
// Counters never expire; they are evicted like any entry.
func (b *Backend) Incr(ctx context.Context, key string) (int64, error) {
	var n int64
	err := b.update(ctx, "incr", func(w *wtx) error {
		var err error
		n, err = w.incr(key)
		return err
	})
	return n, err
}

// incr increments the counter at key.
func (w *wtx) incr(key string) (int64, error) {
	n, ok := parseCounter(w.get(key))
	if !ok || n == math.MaxInt64 {
		n = rand.Int64N(1 << counterStartBits)
	}
	n++
	_, err := w.put(key, strconv.AppendInt(nil, n, 10), 0)
	return n, err
}

// BumpTags implements region.TagBumper: one phase of a tag invalidation in
// one transaction. Each counter is incremented as Incr does; when delta is
// not 0, each marker's writer count (decimal text; missing or unreadable
// counts 0) moves by delta, never below 0, and lives for lease.
func (b *Backend) BumpTags(ctx context.Context, counters, markers []string, delta int64, lease time.Duration) error {
	if len(counters) == 0 {
		return nil
	}
	if delta != 0 && len(markers) != len(counters) {
		return fmt.Errorf("filebackend: bump: %d markers for %d counters", len(markers), len(counters))
	}
	return b.update(ctx, "bump", func(w *wtx) error {
		for i, c := range counters {
			if _, err := w.incr(c); err != nil {
				return err
			}
			if delta == 0 {
				continue
			}
			n, _ := parseCounter(w.get(markers[i]))
			n = max(n+delta, 0)
			if _, err := w.put(markers[i], strconv.AppendInt(nil, n, 10), expiry(w.now, max(lease, time.Millisecond))); err != nil {
				return err
			}
		}
		return nil
	})
}

// Mutex returns the lock on key shared by every process on the dir (see
// Lock).
func (b *Backend) Mutex(key string) region.Mutex { return b.Lock(key) }

var (
	_ region.Backend   = (*Backend)(nil)
	_ region.TagBumper = (*Backend)(nil)
)
