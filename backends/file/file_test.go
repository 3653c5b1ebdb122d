//go:build unix

package filebackend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/region"
)

// fakeClock is the backend's clock in tests that move time.
type fakeClock struct{ nanos atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.nanos.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.nanos.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.nanos.Add(int64(d)) }

// get reads one key through GetMulti.
func get(t testing.TB, b *Backend, key string) []byte {
	t.Helper()
	vals, err := b.GetMulti(ctx, []string{key})
	must(t, err)
	return vals[0]
}

func set(t testing.TB, b *Backend, key, value string, ttl time.Duration) {
	t.Helper()
	must(t, b.SetMulti(ctx, []region.Item{{Key: key, Value: []byte(value), TTL: ttl}}))
}

// present returns which of keys are there.
func present(t testing.TB, b *Backend, keys []string) []string {
	t.Helper()
	vals, err := b.GetMulti(ctx, keys)
	must(t, err)
	var out []string
	for i, v := range vals {
		if v != nil {
			out = append(out, keys[i])
		}
	}
	return out
}

func usage(t testing.TB, b *Backend) (int64, int64) {
	t.Helper()
	n, w, err := b.Usage(ctx)
	must(t, err)
	return n, w
}

func TestGetSetDeleteIncr(t *testing.T) {
	b := newTestBackend(t)
	if v := get(t, b, "a"); v != nil {
		t.Fatalf("empty backend has a = %q", v)
	}
	set(t, b, "a", "1", 0)
	set(t, b, "b", "", 0)
	vals, err := b.GetMulti(ctx, []string{"a", "missing", "b"})
	must(t, err)
	if string(vals[0]) != "1" || vals[1] != nil || vals[2] == nil || len(vals[2]) != 0 {
		t.Fatalf("GetMulti = %q; want [1 nil \"\"] with an empty, non-nil value", vals)
	}
	vals[0] = append(vals[0], "garbage"...) // appending to one never writes over another
	if string(vals[2]) != "" {
		t.Fatalf("append to one value changed the next: %q", vals[2])
	}
	must(t, b.Delete(ctx, "a", "missing"))
	if v := get(t, b, "a"); v != nil {
		t.Fatalf("a after Delete = %q", v)
	}
	n1, err := b.Incr(ctx, "c")
	must(t, err)
	if n1 <= 1 || n1 > 1<<counterStartBits {
		t.Fatalf("a new counter started at %d; want a random value in (1, 2^48]", n1)
	}
	n2, err := b.Incr(ctx, "c")
	must(t, err)
	if n2 != n1+1 || string(get(t, b, "c")) != strconv.FormatInt(n2, 10) {
		t.Fatalf("Incr = %d then %d, GetMulti %q", n1, n2, get(t, b, "c"))
	}
	set(t, b, "c", "not a number", 0)
	n3, err := b.Incr(ctx, "c")
	must(t, err)
	if n3 == n2+1 || n3 <= 1 {
		t.Fatalf("Incr of an unreadable counter = %d; want a fresh random start", n3)
	}
	if n, _ := usage(t, b); n != 2 {
		t.Fatalf("%d entries; want 2 (b, c)", n)
	}
}

// TestValuesSurviveReopen: entries and counters are in the file once the
// backend is closed and another opens the directory.
func TestValuesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	b, err := New(dir)
	must(t, err)
	set(t, b, "kept", "value", time.Hour)
	n, err := b.Incr(ctx, "counter")
	must(t, err)
	r := region.New(b, region.WithName("r"))
	must(t, r.Set(ctx, "user", "Ann"))
	must(t, b.Close())
	if _, err := b.GetMulti(ctx, []string{"kept"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetMulti after Close = %v; want ErrClosed", err)
	}

	b2 := openTestBackend(t, dir)
	if v := get(t, b2, "kept"); string(v) != "value" {
		t.Fatalf("after reopen kept = %q", v)
	}
	n2, err := b2.Incr(ctx, "counter")
	must(t, err)
	if n2 != n+1 {
		t.Fatalf("counter after reopen = %d; want %d", n2, n+1)
	}
	var u string
	found, err := region.New(b2, region.WithName("r")).Get(ctx, "user", &u)
	if err != nil || !found || u != "Ann" {
		t.Fatalf("region Get after reopen = %v, %v, %q", found, err, u)
	}
}

// TestValuesSurviveKilledWriter: a child process writes, then is stuck in
// an operation that holds the file, then is SIGKILLed; the store lock goes
// with it, and what it committed is read here.
func TestValuesSurviveKilledWriter(t *testing.T) {
	dir := t.TempDir()
	b := openTestBackend(t, dir, WithTimeout(200*time.Millisecond))
	c := startChild(t, "holdstore", dir, "k")
	c.expect("written")
	// The child holds the file: this process cannot open it, and says so
	// within its timeout.
	if _, err := b.GetMulti(ctx, []string{"k"}); !errors.Is(err, ErrBusy) {
		t.Fatalf("GetMulti while another process holds the file = %v; want ErrBusy", err)
	}
	c.kill()
	if v := get(t, b, "k"); string(v) != "from the child" {
		t.Fatalf("after the writer was killed k = %q", v)
	}
}

// TestTTL: an entry lives for its time to live, then reads as missing, to
// GetMulti, to SetIf's guards and to Incr; the next write removes it.
func TestTTL(t *testing.T) {
	clock := newFakeClock()
	b := newTestBackend(t, withClock(clock.now))
	set(t, b, "short", "s", 10*time.Second)
	set(t, b, "forever", "f", 0)
	set(t, b, "counter", "41", 10*time.Second)
	clock.advance(10*time.Second - 1)
	if got := present(t, b, []string{"short", "forever", "counter"}); len(got) != 3 {
		t.Fatalf("just before the TTL present = %v", got)
	}
	clock.advance(1)
	if got := present(t, b, []string{"short", "forever", "counter"}); !slices.Equal(got, []string{"forever"}) {
		t.Fatalf("at the TTL present = %v; want [forever]", got)
	}
	ok, err := b.SetIf(ctx, region.Item{Key: "x", Value: []byte("1")}, []region.Guard{{Key: "short", Value: []byte("s")}})
	if err != nil || ok {
		t.Fatalf("SetIf guarded on the expired value = %v, %v; want false", ok, err)
	}
	ok, err = b.SetIf(ctx, region.Item{Key: "x", Value: []byte("1")}, []region.Guard{{Key: "short", Value: nil}})
	if err != nil || !ok {
		t.Fatalf("SetIf guarded on the expired key being missing = %v, %v; want true", ok, err)
	}
	n, err := b.Incr(ctx, "counter")
	must(t, err)
	if n == 42 {
		t.Fatal("Incr continued an expired counter")
	}
	// The first write (the SetIf that did not store) removed both expired
	// entries; Incr made the counter again: forever, x, counter remain.
	if n, _ := usage(t, b); n != 3 {
		t.Fatalf("%d entries; want 3", n)
	}
	if st := b.Stats(); st.Expired != 2 {
		t.Fatalf("Stats().Expired = %d; want 2", st.Expired)
	}
}

// TestEvictionLRU: over the entry bound, the least recently accessed go,
// reads counting as accesses.
func TestEvictionLRU(t *testing.T) {
	clock := newFakeClock()
	b := newTestBackend(t, WithMaxEntries(10), withClock(clock.now), WithStampFlush(0))
	var keys []string
	for i := range 10 {
		keys = append(keys, fmt.Sprintf("k%d", i))
		set(t, b, keys[i], "v", 0)
		clock.advance(time.Millisecond)
	}
	// Read k0..k2: they are now the most recently accessed.
	if got := present(t, b, keys[:3]); len(got) != 3 {
		t.Fatal(got)
	}
	clock.advance(time.Millisecond)
	var news []string
	for i := range 5 {
		news = append(news, fmt.Sprintf("n%d", i))
		set(t, b, news[i], "v", 0)
		clock.advance(time.Millisecond)
	}
	all := append(slices.Clone(keys), news...)
	want := append([]string{"k0", "k1", "k2", "k8", "k9"}, news...)
	if got := present(t, b, all); !slices.Equal(got, want) {
		t.Fatalf("after 15 writes with a bound of 10: %v; want %v", got, want)
	}
	if n, _ := usage(t, b); n != 10 {
		t.Fatalf("%d entries; want 10", n)
	}
	if st := b.Stats(); st.Evicted != 5 || st.Expired != 0 {
		t.Fatalf("stats %+v; want 5 evicted", st)
	}
}

// TestEvictionExpiredFirst: expired entries go before any live one, even
// the least recently accessed.
func TestEvictionExpiredFirst(t *testing.T) {
	clock := newFakeClock()
	b := newTestBackend(t, WithMaxEntries(10), withClock(clock.now), WithStampFlush(0))
	for i := range 8 {
		set(t, b, fmt.Sprintf("old%d", i), "v", 0)
		clock.advance(time.Millisecond)
	}
	// The most recently written, but expiring.
	set(t, b, "e0", "v", time.Second)
	set(t, b, "e1", "v", time.Second)
	clock.advance(2 * time.Second)
	set(t, b, "n0", "v", 0)
	set(t, b, "n1", "v", 0)
	var all []string
	for i := range 8 {
		all = append(all, fmt.Sprintf("old%d", i))
	}
	if got := present(t, b, all); len(got) != 8 {
		t.Fatalf("live entries evicted before expired ones: %v", got)
	}
	if st := b.Stats(); st.Evicted != 0 || st.Expired != 2 {
		t.Fatalf("stats %+v; want 2 expired, 0 evicted", st)
	}
	if n, _ := usage(t, b); n != 10 {
		t.Fatalf("%d entries; want 10", n)
	}
}

// TestEvictionBytes: the byte bound counts keys, values and the overhead;
// an entry too big for the bound is not stored and its key's old value is
// gone.
func TestEvictionBytes(t *testing.T) {
	clock := newFakeClock()
	value := make([]byte, 1000)
	one := weightOf("k0", len(value))
	b := newTestBackend(t, WithMaxBytes(4*one), withClock(clock.now))
	for i := range 6 {
		must(t, b.SetMulti(ctx, []region.Item{{Key: fmt.Sprintf("k%d", i), Value: value}}))
		clock.advance(time.Millisecond)
	}
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	if got := present(t, b, keys); !slices.Equal(got, keys[2:]) {
		t.Fatalf("present %v; want %v", got, keys[2:])
	}
	if n, w := usage(t, b); n != 4 || w != 4*one {
		t.Fatalf("usage %d entries, %d bytes; want 4, %d", n, w, 4*one)
	}
	ok, err := b.SetIf(ctx, region.Item{Key: "k5", Value: make([]byte, 5*len(value))}, nil)
	if err != nil || ok {
		t.Fatalf("SetIf of an entry over the bound = %v, %v; want false", ok, err)
	}
	if v := get(t, b, "k5"); v != nil {
		t.Fatal("the old value of a key whose new value was too big is still served")
	}
	if st := b.Stats(); st.Evicted != 2 {
		t.Fatalf("stats %+v; want 2 evicted", st)
	}
}

// TestFileSizeBounded: writing 20 times the bound through the backend
// leaves a file of a few times the bound: freed pages are reused. The
// bound asserted is generous (16×); the size is logged.
func TestFileSizeBounded(t *testing.T) {
	const maxBytes = 512 << 10
	dir := t.TempDir()
	b := openTestBackend(t, dir, WithMaxBytes(maxBytes))
	value := make([]byte, 1000)
	for i := range 20 * maxBytes / 1000 / 50 {
		items := make([]region.Item, 50)
		for j := range items {
			items[j] = region.Item{Key: fmt.Sprintf("key-%d-%d", i, j), Value: value}
		}
		must(t, b.SetMulti(ctx, items))
	}
	n, w := usage(t, b)
	fi, err := os.Stat(filepath.Join(dir, "data.db"))
	must(t, err)
	t.Logf("after %d bytes written: %d entries weighing %d bytes, file %d bytes (%.1f× the bound)",
		20*maxBytes, n, w, fi.Size(), float64(fi.Size())/maxBytes)
	if w > maxBytes {
		t.Fatalf("entries weigh %d; bound %d", w, maxBytes)
	}
	if fi.Size() > 16*maxBytes {
		t.Fatalf("file is %d bytes for a bound of %d", fi.Size(), maxBytes)
	}
}

// TestSetIfAtomicAcrossBackends: goroutines of two backends on one
// directory (two sets of descriptors, locked as two processes are) race to
// store under a guard that the key is missing: exactly one wins.
func TestSetIfAtomicAcrossBackends(t *testing.T) {
	dir := t.TempDir()
	bs := []*Backend{openTestBackend(t, dir), openTestBackend(t, dir, WithHold(0))}
	for round := range 20 {
		key := fmt.Sprintf("k%d", round)
		var wins atomic.Int64
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				ok, err := bs[i%2].SetIf(ctx, region.Item{Key: key, Value: []byte(strconv.Itoa(i))}, []region.Guard{{Key: key}})
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d SetIf calls stored under a guard that the key is missing; want 1", round, wins.Load())
		}
	}
}

// TestIncrAcrossBackends: increments from two backends on one directory
// are never lost nor repeated.
func TestIncrAcrossBackends(t *testing.T) {
	dir := t.TempDir()
	bs := []*Backend{openTestBackend(t, dir), openTestBackend(t, dir)}
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				n, err := bs[i%2].Incr(ctx, "c")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[n] {
					t.Errorf("Incr returned %d twice", n)
				}
				seen[n] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	lo, hi := int64(1<<62), int64(0)
	for n := range seen {
		lo, hi = min(lo, n), max(hi, n)
	}
	if len(seen) != 400 || hi-lo != 399 {
		t.Fatalf("%d distinct values from %d to %d; want 400 consecutive", len(seen), lo, hi)
	}
}

// TestBumpTags: one phase of an invalidation moves the counters as Incr
// does and the markers' writer counts, never below 0, with the lease.
func TestBumpTags(t *testing.T) {
	clock := newFakeClock()
	b := newTestBackend(t, withClock(clock.now))
	must(t, b.BumpTags(ctx, []string{"c1", "c2"}, []string{"m1", "m2"}, 1, time.Second))
	c1, _ := parseCounter(get(t, b, "c1"))
	must(t, b.BumpTags(ctx, []string{"c1", "c2"}, []string{"m1", "m2"}, 1, time.Second))
	if c, _ := parseCounter(get(t, b, "c1")); c != c1+1 {
		t.Fatalf("c1 = %d after %d", c, c1)
	}
	if m := string(get(t, b, "m1")); m != "2" {
		t.Fatalf("marker after two +1 = %q", m)
	}
	must(t, b.BumpTags(ctx, []string{"c1"}, []string{"m1"}, -1, time.Second))
	must(t, b.BumpTags(ctx, []string{"c1"}, []string{"m1"}, -1, time.Second))
	must(t, b.BumpTags(ctx, []string{"c1"}, []string{"m1"}, -1, time.Second))
	if m := string(get(t, b, "m1")); m != "0" {
		t.Fatalf("marker after +2 -3 = %q; want 0", m)
	}
	clock.advance(time.Second)
	if m := get(t, b, "m2"); m != nil {
		t.Fatalf("marker outlived its lease: %q", m)
	}
	if c := get(t, b, "c2"); c == nil {
		t.Fatal("a counter expired")
	}
}

// TestAccessesFlushedAcrossBackends: what one backend read counts for the
// eviction another makes once the reader has written its accesses (here
// at its Close).
func TestAccessesFlushedAcrossBackends(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	a := openTestBackend(t, dir, WithMaxEntries(3), withClock(clock.now), WithStampFlush(0))
	reader, err := New(dir, WithMaxEntries(3), withClock(clock.now), WithStampFlush(0))
	must(t, err)
	for _, k := range []string{"k0", "k1", "k2"} {
		set(t, a, k, "v", 0)
		clock.advance(time.Millisecond)
	}
	if v := get(t, reader, "k0"); v == nil {
		t.Fatal("k0 missing")
	}
	clock.advance(time.Millisecond)
	must(t, reader.Close())
	set(t, a, "k3", "v", 0)
	if got := present(t, a, []string{"k0", "k1", "k2", "k3"}); !slices.Equal(got, []string{"k0", "k2", "k3"}) {
		t.Fatalf("present %v; want [k0 k2 k3]: the other backend's read of k0 was not counted", got)
	}
}

// TestWriterNotStarvedByReaders: two backends on one directory (two
// processes, as far as flock is concerned) read without pause, their holds
// overlapping, so the store is never free of readers; a third one's
// writes still get in, each within its timeout (500ms, generous: a hold
// is 2ms), because readers stop coming in while a writer waits.
func TestWriterNotStarvedByReaders(t *testing.T) {
	dir := t.TempDir()
	w := openTestBackend(t, dir, WithTimeout(500*time.Millisecond))
	set(t, w, "k", "v", 0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads atomic.Int64
	for range 2 {
		r := openTestBackend(t, dir)
		for range 2 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := r.GetMulti(ctx, []string{"k"}); err != nil {
						t.Error(err)
						return
					}
					reads.Add(1)
				}
			})
		}
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	deadline := time.Now().Add(eventually)
	for reads.Load() < 100 {
		if time.Now().After(deadline) {
			t.Fatal("the readers did not read")
		}
		time.Sleep(time.Millisecond)
	}
	var worst time.Duration
	for i := range 20 {
		start := time.Now()
		if err := w.SetMulti(ctx, []region.Item{{Key: fmt.Sprint("w", i), Value: []byte("v")}}); err != nil {
			t.Fatalf("write %d among readers: %v", i, err)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("20 writes among %d reads: slowest %v", reads.Load(), worst)
}

// TestHoldYieldsToOtherProcess: a backend with an hour's hold that uses
// the file without pause lets it go as soon as another backend on the
// directory waits for it (wait.lock), for readers and writers alike: each
// operation of the other gets in within its timeout (500ms, generous: it
// waits for one operation and a poll).
func TestHoldYieldsToOtherProcess(t *testing.T) {
	for _, holderWrites := range []bool{true, false} {
		t.Run(fmt.Sprintf("holder writes %v", holderWrites), func(t *testing.T) {
			dir := t.TempDir()
			holder := openTestBackend(t, dir, WithHold(time.Hour))
			other := openTestBackend(t, dir, WithTimeout(500*time.Millisecond))
			set(t, holder, "k", "v", 0)
			stop, done := make(chan struct{}), make(chan struct{})
			var ops atomic.Int64
			go func() {
				defer close(done)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var err error
					if holderWrites {
						err = holder.SetMulti(ctx, []region.Item{{Key: "h" + strconv.Itoa(i%100), Value: []byte("v")}})
					} else {
						_, err = holder.GetMulti(ctx, []string{"k"})
					}
					if err != nil {
						t.Error(err)
						return
					}
					ops.Add(1)
				}
			}()
			defer func() {
				close(stop)
				<-done
			}()
			deadline := time.Now().Add(eventually)
			for ops.Load() < 10 {
				if time.Now().After(deadline) {
					t.Fatal("the holder made no operation")
				}
				time.Sleep(time.Millisecond)
			}
			var worst time.Duration
			for i := range 20 {
				start := time.Now()
				var err error
				if holderWrites {
					_, err = other.GetMulti(ctx, []string{"k"})
				} else {
					err = other.SetMulti(ctx, []region.Item{{Key: "o" + strconv.Itoa(i), Value: []byte("v")}})
				}
				if err != nil {
					t.Fatalf("operation %d of the other backend: %v", i, err)
				}
				worst = max(worst, time.Since(start))
			}
			t.Logf("holder made %d operations; the other's slowest of 20 took %v", ops.Load(), worst)
		})
	}
}
