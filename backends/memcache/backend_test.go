package memcachebackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// TestKeys: every key, however long or whatever bytes it holds, is stored
// under a key memcached takes, and distinct keys stay distinct: the short
// plain ones as they are, the others hashed, none landing on another.
func TestKeys(t *testing.T) {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr}, WithPrefix("kf"))
	raw := rawClient(t, srv.Addr)
	room := MaxKeyLen - len("kf:")
	long := strings.Repeat("x", 300)
	keys := []string{
		"plain:key",
		strings.Repeat("a", room),   // exactly fits: kept
		strings.Repeat("a", room+1), // one byte too long: hashed
		long,
		long + "y", // same first 250 bytes as long
		"with space",
		"with\x00nul",
		"tab\tand\nnewline",
		"del\x7f",
		"",
		"#starts-with-hash",
		"#" + hash(long), // spells the hashed form of long
		"ünïcödé",
	}
	items := make([]region.Item, len(keys))
	for i, k := range keys {
		items[i] = region.Item{Key: k, Value: []byte("value " + strconv.Itoa(i))}
	}
	if err := b.SetMulti(bg, items); err != nil {
		t.Fatal(err)
	}
	got, err := b.GetMulti(bg, keys)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for i, k := range keys {
		if want := "value " + strconv.Itoa(i); string(got[i]) != want {
			t.Errorf("key %q read %q, want %q", k, got[i], want)
		}
		mk := b.Key(k)
		if len(mk) > MaxKeyLen || !legal(mk) || !strings.HasPrefix(mk, "kf:") {
			t.Errorf("key %q stored as %q, which memcached cannot take", k, mk)
		}
		if other, dup := seen[mk]; dup {
			t.Errorf("keys %q and %q share the memcached key %q", other, k, mk)
		}
		seen[mk] = k
		// What the backend wrote is where Key says.
		it, err := raw.Get(mk)
		if err != nil || string(it.Value) != "value "+strconv.Itoa(i) {
			t.Errorf("memcached key %q (of %q): %v", mk, k, err)
		}
	}
	if k := b.Key("plain:key"); k != "kf:plain:key" {
		t.Errorf("a plain key is stored as %q, want it readable as kf:plain:key", k)
	}
	if k := b.Key(keys[1]); k != "kf:"+keys[1] {
		t.Errorf("a key of exactly %d bytes was hashed: %q", room, k)
	}
	for _, k := range []string{keys[2], long, "with space", "#starts-with-hash"} {
		if mk := b.Key(k); mk != "kf:#"+hash(k) {
			t.Errorf("key %q stored as %q, want it hashed", k, mk)
		}
	}
	if k := b.Key(""); k != "kf:" {
		t.Errorf("the empty key is stored as %q, want the prefix alone", k)
	}
	if lk := b.Lock("plain:key").Key(); seen[lk] != "" || len(lk) > MaxKeyLen {
		t.Errorf("lock key %q collides or is too long", lk)
	}
	// A region with its default layout (no mangler) over this backend
	// works with the same keys.
	r := region.New(b, region.WithName("keys"))
	t.Cleanup(func() { _ = r.Close() })
	for _, k := range keys {
		if err := r.Set(bg, k, "v:"+k, region.WithTags("tag with space", long)); err != nil {
			t.Fatalf("Set %q: %v", k, err)
		}
	}
	for _, k := range keys {
		var v string
		if found, err := r.Get(bg, k, &v, region.WithTags("tag with space", long)); err != nil || !found || v != "v:"+k {
			t.Errorf("region Get %q = %v, %v, %q", k, found, err, v)
		}
	}
}

// TestPrefixChecked: New refuses a prefix memcached cannot take or that
// leaves no room for keys.
func TestPrefixChecked(t *testing.T) {
	for _, p := range []string{"with space", "ctl\x01", strings.Repeat("p", maxPrefixLen)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("prefix %q accepted", p)
				}
			}()
			New(memcache.New("127.0.0.1:1"), WithPrefix(p))
		}()
	}
	b := New(memcache.New("127.0.0.1:1"), WithPrefix(strings.Repeat("p", maxPrefixLen-1)))
	if k := b.Lock(strings.Repeat("k", 1000)).Key(); len(k) != MaxKeyLen {
		t.Errorf("lock key after the longest prefix is %d bytes, want %d", len(k), MaxKeyLen)
	}
}

// TestSetIf checks each kind of guard against the server.
func TestSetIf(t *testing.T) {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	item := func(k, v string) region.Item { return region.Item{Key: k, Value: []byte(v)} }
	g := func(k string, v any) region.Guard {
		if v == nil {
			return region.Guard{Key: k}
		}
		return region.Guard{Key: k, Value: []byte(v.(string))}
	}
	if err := b.SetMulti(bg, []region.Item{item("ctr", "5")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		item   region.Item
		guards []region.Guard
		want   bool
		holds  string // what k holds after
	}{
		{"must be missing, is", item("k", "1"), []region.Guard{g("k", nil)}, true, "1"},
		{"must be missing, is not", item("k", "2"), []region.Guard{g("k", nil)}, false, "1"},
		{"must hold 1, does", item("k", "3"), []region.Guard{g("k", "1")}, true, "3"},
		{"must hold 1, holds 3", item("k", "4"), []region.Guard{g("k", "1")}, false, "3"},
		{"other key holds 5", item("k", "5"), []region.Guard{g("ctr", "5")}, true, "5"},
		{"other key holds 5, not 6", item("k", "6"), []region.Guard{g("ctr", "6")}, false, "5"},
		{"other key missing", item("k", "7"), []region.Guard{g("nothing", nil)}, true, "7"},
		{"other key not missing", item("k", "8"), []region.Guard{g("ctr", nil)}, false, "7"},
		{"other key must hold empty", item("k", "9"), []region.Guard{g("nothing", "")}, false, "7"},
		{"all hold", item("k", "10"), []region.Guard{g("ctr", "5"), g("nothing", nil), g("k", "7")}, true, "10"},
		{"one of three fails", item("k", "11"), []region.Guard{g("ctr", "5"), g("nothing", nil), g("k", "7")}, false, "10"},
		{"two guards on k that cannot both hold", item("k", "12"), []region.Guard{g("k", "10"), g("k", nil)}, false, "10"},
		{"no guards", item("k", "13"), nil, true, "13"},
	} {
		ok, err := b.SetIf(bg, c.item, c.guards)
		if err != nil || ok != c.want {
			t.Errorf("%s: SetIf = %v, %v; want %v", c.name, ok, err, c.want)
		}
		vals, err := b.GetMulti(bg, []string{"k"})
		if err != nil || string(vals[0]) != c.holds {
			t.Errorf("%s: k holds %q (%v); want %q", c.name, vals[0], err, c.holds)
		}
	}
}

// TestSetIfIsCompareAndSet: a guard on the item's own key is checked by
// memcached with the write (cas), so concurrent read-modify-writes, as the
// region makes of its record and pending markers, lose no update: 8
// goroutines adding 1 fifty times each end at exactly 400.
func TestSetIfIsCompareAndSet(t *testing.T) {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				for {
					vals, err := b.GetMulti(bg, []string{"n"})
					if err != nil {
						t.Error(err)
						return
					}
					n, _ := strconv.Atoi(string(vals[0])) // missing: 0
					ok, err := b.SetIf(bg, region.Item{Key: "n", Value: []byte(strconv.Itoa(n + 1))}, []region.Guard{{Key: "n", Value: vals[0]}})
					if err != nil {
						t.Error(err)
						return
					}
					if ok {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	vals, err := b.GetMulti(bg, []string{"n"})
	if err != nil || string(vals[0]) != strconv.Itoa(workers*each) {
		t.Fatalf("after %d compare-and-set increments n = %q (%v)", workers*each, vals[0], err)
	}
}

// TestIncr: a missing counter starts from a random value (never 0 or 1),
// GetMulti reads counters as decimal text, concurrent first increments of a
// missing counter each get their own value (the add race is handled), and
// a counter incr cannot take is repaired.
func TestIncr(t *testing.T) {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	raw := rawClient(t, srv.Addr)

	first, err := b.Incr(bg, "c")
	if err != nil || first <= 1 || first > 1<<counterStartBits+1 {
		t.Fatalf("first Incr = %d, %v; want a random start above 1", first, err)
	}
	second, err := b.Incr(bg, "c")
	if err != nil || second != first+1 {
		t.Fatalf("second Incr = %d, %v; want %d", second, err, first+1)
	}
	if vals, err := b.GetMulti(bg, []string{"c"}); err != nil || string(vals[0]) != strconv.FormatInt(second, 10) {
		t.Fatalf("GetMulti of the counter = %q, %v", vals[0], err)
	}

	const n = 40
	for round := range 5 {
		key := fmt.Sprintf("race%d", round)
		got := make([]int64, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				v, err := b.Incr(bg, key)
				if err != nil {
					t.Error(err)
				}
				got[i] = v
			})
		}
		close(start)
		wg.Wait()
		slices.Sort(got)
		for i := 1; i < n; i++ {
			if got[i] != got[i-1]+1 {
				t.Fatalf("round %d: %d concurrent Incr of a missing counter returned %v; want %d consecutive values", round, n, got, n)
			}
		}
	}

	for _, bad := range []string{"not a number", "-5", "12.5", "18446744073709551615"} {
		if err := raw.Set(&memcache.Item{Key: b.Key("bad"), Value: []byte(bad)}); err != nil {
			t.Fatal(err)
		}
		v, err := b.Incr(bg, "bad")
		if err != nil || v <= 1 || v > 1<<counterStartBits+1 {
			t.Fatalf("Incr of a counter holding %q = %d, %v; want a fresh start", bad, v, err)
		}
		if vals, _ := b.GetMulti(bg, []string{"bad"}); string(vals[0]) != strconv.FormatInt(v, 10) {
			t.Fatalf("repaired counter holds %q, Incr returned %d", vals[0], v)
		}
	}
}

// TestExpiration: TTLs become memcached expirations rounded up, plus a
// second, relative up to 30 days and absolute beyond.
func TestExpiration(t *testing.T) {
	for _, c := range []struct {
		ttl  time.Duration
		want int32
	}{
		{0, 0},
		{-time.Second, 0},
		{time.Nanosecond, 2},
		{time.Second, 2},
		{time.Second + time.Nanosecond, 3},
		{1500 * time.Millisecond, 3},
		{time.Minute, 61},
		{maxRelative*time.Second - time.Second, maxRelative},
	} {
		if got := expiration(c.ttl); got != c.want {
			t.Errorf("expiration(%v) = %d, want %d", c.ttl, got, c.want)
		}
	}
	before := time.Now().Unix()
	got := int64(expiration(maxRelative * time.Second))
	after := time.Now().Unix()
	if got < before+maxRelative+1 || got > after+maxRelative+1 {
		t.Errorf("expiration(30 days) = %d, want the absolute time %d..%d", got, before+maxRelative+1, after+maxRelative+1)
	}
	if got := expiration(100 * 365 * 24 * time.Hour); got != 0 {
		t.Errorf("expiration(100 years) = %d, want 0 (no expiry: past 2038)", got)
	}
}

// TestExpirationOnServer: an item stored with a sub-second TTL is still
// there when memcached's clock has ticked once, a moment at which an item
// stored with memcached's own one-second expiration is gone.
func TestExpirationOnServer(t *testing.T) {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	raw := rawClient(t, srv.Addr)
	// The control first: it expires at the tick after the one it was stored
	// in, and the item, stored in that tick or a later one, must outlive it.
	if err := raw.Set(&memcache.Item{Key: b.Key("control"), Value: []byte("v"), Expiration: 1}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMulti(bg, []region.Item{{Key: "short", Value: []byte("v"), TTL: time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(eventually)
	for {
		if _, err := raw.Get(b.Key("control")); errors.Is(err, memcache.ErrCacheMiss) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the control item did not expire")
		}
		time.Sleep(time.Millisecond)
	}
	// At once, within the tick at which the control expired.
	if vals, err := b.GetMulti(bg, []string{"short"}); err != nil || vals[0] == nil {
		t.Fatalf("an item with a 1ms TTL expired with the one-second control (%v): its expiration was not rounded up", err)
	}
}

// TestTooLarge: a value larger than memcached takes is not stored and
// counted, never an error for the caller; the region serves it and later
// reads miss. That holds both for a value the backend knows too large
// (WithMaxItemSize) and for one the server refuses (a server with a smaller
// -I than the backend was told).
func TestTooLarge(t *testing.T) {
	for _, c := range []struct {
		name     string
		itemSize string
		size     int
	}{
		{"over the backend's limit", "", 2 << 20},
		{"over the server's limit", "512k", 700 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			var opts []testharness.MemcachedOption
			if c.itemSize != "" {
				opts = append(opts, testharness.WithMemcachedItemSize(c.itemSize))
			}
			srv := testharness.Memcached(t, opts...)
			b := newBackend(t, []string{srv.Addr})
			r := region.New(b, region.WithName("big"))
			t.Cleanup(func() { _ = r.Close() })
			big := strings.Repeat("x", c.size)
			if err := r.Set(bg, "k", big); err != nil {
				t.Fatalf("Set of %d bytes: %v; want no error", c.size, err)
			}
			var v string
			if found, err := r.Get(bg, "k", &v); err != nil || found {
				t.Fatalf("Get after a too large Set = %v, %v; want a miss", found, err)
			}
			calls := 0
			for i := range 2 {
				got, err := region.GetOrCreate(bg, r, "g", func(context.Context) (string, error) { calls++; return big, nil }, region.WithTags("t"))
				if err != nil || got != big || calls != i+1 {
					t.Fatalf("GetOrCreate %d: %d bytes, %v, %d creator calls; want the value, made each time", i, len(got), err, calls)
				}
			}
			if n := b.Stats().TooLarge; n != 3 {
				t.Fatalf("TooLarge = %d, want 3", n)
			}
			if err := r.Set(bg, "small", "fits"); err != nil {
				t.Fatal(err)
			}
			if found, err := r.Get(bg, "small", &v); err != nil || !found {
				t.Fatalf("a small value after the large ones: %v, %v", found, err)
			}
		})
	}
	// The largest value the limit lets through is stored.
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	k := "edge"
	v := bytes.Repeat([]byte("y"), DefaultMaxItemSize-itemOverhead-len(b.Key(k)))
	if err := b.SetMulti(bg, []region.Item{{Key: k, Value: v}}); err != nil {
		t.Fatal(err)
	}
	if vals, err := b.GetMulti(bg, []string{k}); err != nil || len(vals[0]) != len(v) || b.Stats().TooLarge != 0 {
		t.Fatalf("a value of %d bytes, within the limit, was not stored: %d bytes, %v, %+v", len(v), len(vals[0]), err, b.Stats())
	}
}

// TestLock: one holder at a time; the fence holds only while the lock is
// the holder's; Unlock frees it for the next.
func TestLock(t *testing.T) {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	a, c := b.Lock("k"), b.Lock("k")
	if ok, err := a.TryLock(bg); !ok || err != nil {
		t.Fatalf("first TryLock = %v, %v", ok, err)
	}
	if ok, err := a.TryLock(bg); ok || err != nil {
		t.Fatalf("TryLock of a held Lock = %v, %v; want false", ok, err)
	}
	if ok, err := c.TryLock(bg); ok || err != nil {
		t.Fatalf("second holder's TryLock = %v, %v; want false", ok, err)
	}
	fenceA := a.Fence()
	store := func(v string, fence region.Guard) bool {
		ok, err := b.SetIf(bg, region.Item{Key: "entry", Value: []byte(v)}, []region.Guard{fence})
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !store("by a", fenceA) {
		t.Fatal("the holder's fenced store failed")
	}
	if store("by c", c.Fence()) {
		t.Fatal("a store fenced by a Lock that is not held landed")
	}
	if err := a.Unlock(bg); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.TryLock(bg); !ok || err != nil {
		t.Fatalf("TryLock after Unlock = %v, %v", ok, err)
	}
	if store("late a", fenceA) {
		t.Fatal("a store fenced by a lock since released and taken by another landed")
	}
	if !store("by c", c.Fence()) {
		t.Fatal("the new holder's fenced store failed")
	}
	if err := c.Unlock(bg); err != nil {
		t.Fatal(err)
	}
	if err := c.Unlock(bg); err != nil {
		t.Fatalf("Unlock of a Lock not held: %v", err)
	}
}

// TestUnlockKeepsAnothersLock: a holder whose lock expired and was taken by
// another process does not release that process's lock.
func TestUnlockKeepsAnothersLock(t *testing.T) {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	raw := rawClient(t, srv.Addr)
	l := b.Lock("k")
	if ok, err := l.TryLock(bg); !ok || err != nil {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	// The lease ran out and another process took the lock.
	if err := raw.Set(&memcache.Item{Key: l.Key(), Value: []byte("another process"), Expiration: 60}); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(bg); err != nil {
		t.Fatal(err)
	}
	it, err := raw.Get(l.Key())
	if err != nil || string(it.Value) != "another process" {
		t.Fatalf("after the former holder's Unlock the lock holds %v, %v; want the other process's token", it, err)
	}
}

// TestLockRenewal: a holder keeps its lock past its lease: an item stored
// with the same expiration and not renewed is gone meanwhile.
func TestLockRenewal(t *testing.T) {
	srv := testharness.Memcached(t)
	const ttl = 2 * time.Second
	b := newBackend(t, []string{srv.Addr}, WithLockTTL(ttl))
	raw := rawClient(t, srv.Addr)
	l := b.Lock("k")
	if ok, err := l.TryLock(bg); !ok || err != nil {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	control := b.Key("control")
	if err := raw.Set(&memcache.Item{Key: control, Value: []byte("x"), Expiration: expiration(ttl)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the control item to expire", func() bool {
		_, err := raw.Get(control)
		return errors.Is(err, memcache.ErrCacheMiss)
	})
	time.Sleep(ttl) // and as long again
	it, err := raw.Get(l.Key())
	if err != nil || string(it.Value) != string(l.Fence().Value) {
		t.Fatalf("a held lock was lost after its lease: %v, %v", it, err)
	}
	if err := l.Unlock(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Get(l.Key()); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("lock still there after Unlock: %v", err)
	}
}

// TestCloseStopsRenewals: after Close, a lock still held is no longer
// renewed, and expires with its lease.
func TestCloseStopsRenewals(t *testing.T) {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr}, WithLockTTL(time.Second))
	raw := rawClient(t, srv.Addr)
	l := b.Lock("k")
	if ok, err := l.TryLock(bg); !ok || err != nil {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	within(t, "Close", func() { _ = b.Close() })
	waitFor(t, "the lock to expire", func() bool {
		_, err := raw.Get(l.Key())
		return errors.Is(err, memcache.ErrCacheMiss)
	})
}

// TestLockWait: Wait returns when the holder releases the lock, when its
// lease runs out (a holder that died), and when its context ends.
func TestLockWait(t *testing.T) {
	srv := testharness.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	raw := rawClient(t, srv.Addr)

	holder, waiter := b.Lock("released"), b.Lock("released")
	if ok, err := holder.TryLock(bg); !ok || err != nil {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	done := make(chan error, 1)
	go func() { done <- waiter.Wait(bg) }()
	time.Sleep(50 * time.Millisecond) // let it poll a few times
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v while the lock was held", err)
	default:
	}
	if err := holder.Unlock(bg); err != nil {
		t.Fatal(err)
	}
	within(t, "Wait after Unlock", func() {
		if err := <-done; err != nil {
			t.Errorf("Wait = %v", err)
		}
	})

	dead := b.Lock("dead")
	if err := raw.Add(&memcache.Item{Key: dead.Key(), Value: []byte("a process that died"), Expiration: 1}); err != nil {
		t.Fatal(err)
	}
	within(t, "Wait for a lease to run out", func() {
		if err := dead.Wait(bg); err != nil {
			t.Errorf("Wait = %v", err)
		}
	})
	if _, err := raw.Get(dead.Key()); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("Wait returned while the dead holder's lock was there: %v", err)
	}

	stuck := b.Lock("stuck")
	if err := raw.Add(&memcache.Item{Key: stuck.Key(), Value: []byte("forever")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	within(t, "Wait with a context that ends", func() {
		if err := stuck.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait = %v; want the context's error", err)
		}
	})
}

// TestOpen checks Open's arguments and the client it makes.
func TestOpen(t *testing.T) {
	if _, err := Open(nil); err == nil {
		t.Error("Open with no address succeeded")
	}
	if _, err := Open([]string{"not a host:port:at all"}); err == nil {
		t.Error("Open with a bad address succeeded")
	}
	b, err := Open([]string{"127.0.0.1:1"}, WithTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if c := b.Client(); c.Timeout != 300*time.Millisecond || c.MaxIdleConns != DefaultMaxIdleConns {
		t.Errorf("Open's client: timeout %v, %d idle connections", c.Timeout, c.MaxIdleConns)
	}
	if !b.direct(bg) || b.Timeout() != 300*time.Millisecond {
		t.Error("operations of a backend made by Open do not run in the caller's goroutine")
	}
	if n := New(memcache.New("127.0.0.1:1")); n.direct(bg) {
		t.Error("operations over a client whose socket timeout (500ms) outlasts the backend's (100ms) run in the caller's goroutine")
	}
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	if b.direct(ctx) {
		t.Error("an operation for a context that can end runs in the caller's goroutine")
	}
}

// TestGetMulti reads missing, empty, large and repeated keys, through each
// path of the multi-get: the backend's own gets on one server (Open), and
// gomemcache's GetMulti over two servers (Open) or the caller's client
// (New).
func TestGetMulti(t *testing.T) {
	a, c := testharness.Memcached(t), testharness.Memcached(t)
	given := memcache.New(a.Addr)
	t.Cleanup(func() { _ = given.Close() })
	newGiven := New(given, WithTimeout(testTimeout), WithPrefix(uniquePrefix(t)))
	t.Cleanup(func() { _ = newGiven.Close() })
	for _, be := range []struct {
		name string
		b    *Backend
	}{
		{"Open/one-server", newBackend(t, []string{a.Addr})},
		{"Open/two-servers", newBackend(t, []string{a.Addr, c.Addr})},
		{"New", newGiven},
	} {
		t.Run(be.name, func(t *testing.T) {
			b := be.b
			large := bytes.Repeat([]byte("L"), 600<<10)
			items := []region.Item{
				{Key: "empty", Value: []byte{}},
				{Key: "large", Value: large},
				{Key: "small", Value: []byte("s")},
			}
			for i := range 20 {
				items = append(items, region.Item{Key: fmt.Sprint("n", i), Value: []byte(fmt.Sprint("v", i))})
			}
			if err := b.SetMulti(bg, items); err != nil {
				t.Fatal(err)
			}
			keys := []string{"small", "missing", "empty", "large", "small", "missing"}
			for i := range 20 {
				keys = append(keys, fmt.Sprint("n", i))
			}
			vals, err := b.GetMulti(bg, keys)
			if err != nil || len(vals) != len(keys) {
				t.Fatalf("GetMulti = %d values, %v", len(vals), err)
			}
			check := func(i int, want []byte) {
				t.Helper()
				if (vals[i] == nil) != (want == nil) || !bytes.Equal(vals[i], want) {
					t.Errorf("key %d (%q): %d bytes (nil %v), want %d (nil %v)", i, keys[i], len(vals[i]), vals[i] == nil, len(want), want == nil)
				}
			}
			check(0, []byte("s"))
			check(1, nil)
			check(2, []byte{})
			check(3, large)
			check(4, []byte("s"))
			check(5, nil)
			for i := range 20 {
				check(6+i, []byte(fmt.Sprint("v", i)))
			}
			// A long command line: 500 keys of 200 bytes, every other one
			// stored.
			var many []string
			var manyItems []region.Item
			for i := range 500 {
				k := fmt.Sprintf("%0200d", i)
				many = append(many, k)
				if i%2 == 0 {
					manyItems = append(manyItems, region.Item{Key: k, Value: []byte(k[190:])})
				}
			}
			if err := b.SetMulti(bg, manyItems); err != nil {
				t.Fatal(err)
			}
			mvals, err := b.GetMulti(bg, many)
			if err != nil {
				t.Fatal(err)
			}
			for i, k := range many {
				if want := k[190:]; (i%2 == 0) != (mvals[i] != nil) || (i%2 == 0 && string(mvals[i]) != want) {
					t.Fatalf("key %d of 500: %q", i, mvals[i])
				}
			}
			if vals, err := b.GetMulti(bg, nil); err != nil || len(vals) != 0 {
				t.Errorf("GetMulti of no key = %v, %v", vals, err)
			}
		})
	}
}
