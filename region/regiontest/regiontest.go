// Package regiontest is the conformance suite of region.Region over a
// Backend: every rule of the dogpile lock, expiration, invalidation and the
// envelope, checked with exact counts. Each backend's tests run it:
//
//	func TestRegion(t *testing.T) {
//		regiontest.Run(t, func(t testing.TB) region.Backend { return memory.New() })
//	}
//
// The suite moves time with a fake clock (region.WithClock), so no test
// depends on how fast the machine is. newBackend must return a backend whose
// keys no other test sees (a fresh one, or one with its own prefix).
package regiontest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/region"
)

// Clock is a fake clock for region.WithClock; it moves only when told.
type Clock struct{ nanos atomic.Int64 }

// NewClock returns a clock set to a fixed instant.
func NewClock() *Clock {
	c := &Clock{}
	c.nanos.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.nanos.Load()) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.nanos.Add(int64(d)) }

// User is the small struct the suite caches.
type User struct {
	ID    int64
	Name  string
	Email string
	Tags  []string
}

// Run runs the whole suite against backends made by newBackend.
func Run(t *testing.T, newBackend func(t testing.TB) region.Backend) {
	s := &suite{newBackend: newBackend}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"GetSetDelete", s.testGetSetDelete},
		{"StampedeOnMissingKey", s.testStampedeMissing},
		{"StampedeOnExpiredKeyServesStale", s.testStampedeExpired},
		{"MultiOverlappingMissing", s.testMultiOverlappingMissing},
		{"MultiOverlappingExpired", s.testMultiOverlappingExpired},
		{"MultiOneRoundTrip", s.testMultiOneRoundTrip},
		{"CreatorErrorNotCached", s.testCreatorError},
		{"CreatorPanicDoesNotWedge", s.testCreatorPanic},
		{"CancelledWaiterReturnsPromptly", s.testCancelledWaiter},
		{"CancelledLeaderDoesNotCancelCreator", s.testCancelledLeader},
		{"HardInvalidation", s.testHardInvalidation},
		{"SoftInvalidation", s.testSoftInvalidation},
		{"SoftInvalidationWithoutExpiration", s.testSoftWithoutExpiration},
		{"UndecodablePayloadRegenerated", s.testUndecodable},
		{"CorruptEntryRegenerated", s.testCorruptEntry},
		{"OldEnvelopeFormatRegenerated", s.testOldEnvelope},
		{"ShouldCacheFalseNotStored", s.testShouldCache},
		{"ExpirationOverrides", s.testExpirationOverrides},
		{"IgnoreExpiration", s.testIgnoreExpiration},
		{"AsyncRegeneration", s.testAsyncRegeneration},
		{"TagInvalidation", s.testTagInvalidation},
		{"FillRacingInvalidationNotStored", s.testFillRacingInvalidation},
		{"KeyTagsInvalidateOneKey", s.testKeyTags},
		{"PreInvalidationLease", s.testPreInvalidationLease},
		{"WaitTimeoutFallsBackToCreator", s.testWaitTimeoutFallback},
		{"WaitTimeoutError", s.testWaitTimeoutError},
		{"KeyMangler", s.testKeyMangler},
		{"JSONCodec", s.testJSONCodec},
		{"ParallelMixedWorkload", s.testParallelMixed},
	} {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	newBackend func(t testing.TB) region.Backend
}

// region returns a region over a new backend, with a fake clock.
func (s *suite) region(t *testing.T, opts ...region.Option) (*region.Region, region.Backend, *Clock) {
	t.Helper()
	b := s.newBackend(t)
	clock := NewClock()
	all := append([]region.Option{region.WithName("suite"), region.WithClock(clock.Now)}, opts...)
	return region.New(b, all...), b, clock
}

// counter counts creator runs per key.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) add(keys ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	for _, k := range keys {
		c.n[k]++
	}
}

func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.n {
		n += v
	}
	return n
}

var ctx = context.Background()

// eventually waits (without asserting how long) until cond holds; it fails
// the test after a generous deadline so that a bug cannot hang the suite.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func userCreator(calls *counter, key string, u User) func(context.Context) (User, error) {
	return func(context.Context) (User, error) {
		calls.add(key)
		return u, nil
	}
}

func (s *suite) testGetSetDelete(t *testing.T) {
	r, _, _ := s.region(t)
	var u User
	found, err := r.Get(ctx, "user:1", &u)
	if err != nil || found {
		t.Fatalf("Get on empty region = %v, %v; want false, nil", found, err)
	}
	want := User{ID: 1, Name: "Ann", Tags: []string{"a", "b"}}
	if err := r.Set(ctx, "user:1", want); err != nil {
		t.Fatal(err)
	}
	found, err = r.Get(ctx, "user:1", &u)
	if err != nil || !found || u.Name != want.Name || len(u.Tags) != 2 {
		t.Fatalf("Get after Set = %v, %v, %+v", found, err, u)
	}
	if err := r.Delete(ctx, "user:1"); err != nil {
		t.Fatal(err)
	}
	if found, _ := r.Get(ctx, "user:1", &u); found {
		t.Fatal("Get after Delete found a value")
	}
	if err := r.Delete(ctx, "user:1"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func (s *suite) testStampedeMissing(t *testing.T) {
	r, _, _ := s.region(t)
	var calls counter
	release := make(chan struct{})
	create := func(context.Context) (User, error) {
		calls.add("k")
		<-release
		return User{ID: 42, Name: "made once"}, nil
	}
	const n = 1000
	var wg sync.WaitGroup
	results := make([]User, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = region.GetOrCreate(ctx, r, "k", create)
		}()
	}
	// Hold the creator until every goroutine has either joined the flight or
	// is about to: the region's counters say how many are waiting.
	eventually(t, "callers to reach the region", func() bool {
		st := r.Stats()
		return st.Misses >= n
	})
	close(release)
	wg.Wait()
	if got := calls.get("k"); got != 1 {
		// A caller whose read of the backend failed (a timeout under load)
		// takes no value made by a run that began before it arrived: it
		// looks again, and may run the creator once more. That is the
		// failure model (a backend error costs a miss), so each backend
		// error may cost one run; nothing else may.
		st := r.Stats()
		if st.Errors == 0 || int64(got) > 1+st.Errors {
			t.Fatalf("creator ran %d times for %d concurrent callers; want 1 (stats %+v)", got, n, st)
		}
		t.Logf("creator ran %d times: %d backend errors made callers look again (stats %+v)", got, st.Errors, st)
	}
	for i := range n {
		if errs[i] != nil || results[i].ID != 42 {
			t.Fatalf("caller %d got %+v, %v", i, results[i], errs[i])
		}
	}
	if st := r.Stats(); st.LockWaits != n-1 || st.Regenerations != 1 {
		t.Fatalf("stats = %+v; want %d lock waits and 1 regeneration", st, n-1)
	}
}

func (s *suite) testStampedeExpired(t *testing.T) {
	r, _, clock := s.region(t, region.WithExpiration(time.Minute))
	if err := r.Set(ctx, "k", User{ID: 1, Name: "old"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	const n = 100
	var (
		calls    counter
		returned atomic.Int64 // callers that returned the stale value
		wg       sync.WaitGroup
		mu       sync.Mutex
		got      = map[string]int{}
	)
	create := func(context.Context) (User, error) {
		calls.add("k")
		// The regenerating caller is stuck here until every other caller
		// has returned: if any of them waited for it, this never happens
		// and the test fails at the deadline.
		deadline := time.Now().Add(30 * time.Second)
		for returned.Load() < n-1 {
			if time.Now().After(deadline) {
				return User{}, errors.New("other callers did not return the stale value without waiting")
			}
			time.Sleep(time.Millisecond)
		}
		return User{ID: 1, Name: "new"}, nil
	}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u, err := region.GetOrCreate(ctx, r, "k", create)
			if err != nil {
				t.Error(err)
				return
			}
			if u.Name == "old" {
				returned.Add(1)
			}
			mu.Lock()
			got[u.Name]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if c := calls.get("k"); c != 1 {
		t.Fatalf("creator ran %d times; want 1", c)
	}
	if got["old"] != n-1 || got["new"] != 1 {
		t.Fatalf("results = %v; want %d stale and 1 new", got, n-1)
	}
	if st := r.Stats(); st.StaleServed != n-1 {
		t.Fatalf("StaleServed = %d; want %d", st.StaleServed, n-1)
	}
	u, _ := region.GetOrCreate(ctx, r, "k", create)
	if u.Name != "new" {
		t.Fatalf("after regeneration got %q", u.Name)
	}
}

// keySets returns n overlapping windows of size w over keys k0..k(n+w).
func keySets(n, w int) [][]string {
	sets := make([][]string, n)
	for i := range sets {
		for j := range w {
			sets[i] = append(sets[i], fmt.Sprintf("k%d", (i+j)%(n/2+w)))
		}
		rand.Shuffle(len(sets[i]), func(a, b int) { sets[i][a], sets[i][b] = sets[i][b], sets[i][a] })
	}
	return sets
}

func (s *suite) testMultiOverlappingMissing(t *testing.T) {
	r, _, _ := s.region(t)
	var calls counter
	var creatorCalls atomic.Int64
	create := func(_ context.Context, missing []string) (map[string]User, error) {
		creatorCalls.Add(1)
		calls.add(missing...)
		out := make(map[string]User, len(missing))
		for _, k := range missing {
			out[k] = User{Name: k}
		}
		return out, nil
	}
	sets := keySets(100, 10)
	var wg sync.WaitGroup
	for _, set := range sets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vals, err := region.GetOrCreateMulti(ctx, r, set, create)
			if err != nil {
				t.Error(err)
				return
			}
			for _, k := range set {
				if vals[k].Name != k {
					t.Errorf("key %s got %+v", k, vals[k])
				}
			}
		}()
	}
	wg.Wait()
	all := map[string]bool{}
	for _, set := range sets {
		for _, k := range set {
			all[k] = true
		}
	}
	for k := range all {
		if c := calls.get(k); c != 1 {
			t.Errorf("key %s created %d times; want 1 (stats %+v)", k, c, r.Stats())
		}
	}
	if int(creatorCalls.Load()) > len(sets) {
		t.Errorf("creator called %d times for %d callers", creatorCalls.Load(), len(sets))
	}
}

func (s *suite) testMultiOverlappingExpired(t *testing.T) {
	r, _, clock := s.region(t, region.WithExpiration(time.Minute))
	sets := keySets(100, 10)
	all := map[string]bool{}
	for _, set := range sets {
		for _, k := range set {
			if !all[k] {
				all[k] = true
				if err := r.Set(ctx, k, User{Name: "old"}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	clock.Advance(2 * time.Minute)
	var calls counter
	create := func(_ context.Context, missing []string) (map[string]User, error) {
		calls.add(missing...)
		out := make(map[string]User, len(missing))
		for _, k := range missing {
			out[k] = User{Name: "new"}
		}
		return out, nil
	}
	var wg sync.WaitGroup
	for _, set := range sets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vals, err := region.GetOrCreateMulti(ctx, r, set, create)
			if err != nil {
				t.Error(err)
				return
			}
			for _, k := range set {
				if n := vals[k].Name; n != "old" && n != "new" {
					t.Errorf("key %s got %q", k, n)
				}
			}
		}()
	}
	wg.Wait()
	for k := range all {
		if c := calls.get(k); c != 1 {
			t.Errorf("expired key %s regenerated %d times; want 1", k, c)
		}
	}
	vals, err := region.GetOrCreateMulti(ctx, r, []string{"k0", "k1"}, create)
	if err != nil || vals["k0"].Name != "new" || vals["k1"].Name != "new" {
		t.Fatalf("after regeneration: %v, %v", vals, err)
	}
}

// countingBackend counts GetMulti calls of the backend it wraps.
type countingBackend struct {
	region.Backend
	gets atomic.Int64
}

func (c *countingBackend) GetMulti(ctx context.Context, keys []string) ([][]byte, error) {
	c.gets.Add(1)
	return c.Backend.GetMulti(ctx, keys)
}

func (s *suite) testMultiOneRoundTrip(t *testing.T) {
	cb := &countingBackend{Backend: s.newBackend(t)}
	r := region.New(cb, region.WithName("suite"))
	keys := []string{"a", "b", "c", "d"}
	for _, k := range keys[:2] {
		if err := r.Set(ctx, k, User{Name: k}); err != nil {
			t.Fatal(err)
		}
	}
	var creatorCalls counter
	create := func(_ context.Context, missing []string) (map[string]User, error) {
		creatorCalls.add(missing...)
		out := map[string]User{}
		for _, k := range missing {
			out[k] = User{Name: k}
		}
		return out, nil
	}
	cb.gets.Store(0)
	vals, err := region.GetOrCreateMulti(ctx, r, keys, create)
	if err != nil || len(vals) != 4 {
		t.Fatalf("got %v, %v", vals, err)
	}
	if creatorCalls.total() != 2 || creatorCalls.get("c") != 1 || creatorCalls.get("d") != 1 {
		t.Fatalf("creator made %v; want c and d once", creatorCalls.n)
	}
	cb.gets.Store(0)
	vals, err = region.GetOrCreateMulti(ctx, r, keys, create)
	if err != nil || len(vals) != 4 {
		t.Fatalf("got %v, %v", vals, err)
	}
	if g := cb.gets.Load(); g != 1 {
		t.Fatalf("all-hit GetOrCreateMulti made %d backend reads; want 1", g)
	}
}

func (s *suite) testCreatorError(t *testing.T) {
	r, _, _ := s.region(t)
	var calls counter
	boom := errors.New("database down")
	release := make(chan struct{})
	failing := func(context.Context) (User, error) {
		calls.add("k")
		<-release
		return User{}, boom
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = region.GetOrCreate(ctx, r, "k", failing)
		}()
	}
	eventually(t, "callers to wait", func() bool { return r.Stats().Misses >= n })
	close(release)
	wg.Wait()
	if c := calls.get("k"); c != 1 {
		t.Fatalf("failing creator ran %d times; want 1", c)
	}
	for i, err := range errs {
		if !errors.Is(err, boom) {
			t.Fatalf("caller %d got %v; want the creator's error", i, err)
		}
	}
	u, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "ok"}))
	if err != nil || u.Name != "ok" || calls.get("k") != 2 {
		t.Fatalf("after an error nothing must be cached: got %+v, %v, %d calls", u, err, calls.get("k"))
	}
}

func (s *suite) testCreatorPanic(t *testing.T) {
	r, _, _ := s.region(t)
	release := make(chan struct{})
	panicking := func(context.Context) (User, error) {
		<-release
		panic("creator bug")
	}
	leaderPanic := make(chan any, 1)
	go func() {
		defer func() { leaderPanic <- recover() }()
		_, _ = region.GetOrCreate(ctx, r, "k", panicking)
	}()
	eventually(t, "leader to start", func() bool { return r.Stats().Misses >= 1 })
	waiterErr := make(chan error, 1)
	go func() {
		_, err := region.GetOrCreate(ctx, r, "k", panicking)
		waiterErr <- err
	}()
	eventually(t, "waiter to wait", func() bool { return r.Stats().LockWaits >= 1 })
	close(release)
	p := <-leaderPanic
	if pe, ok := p.(*region.PanicError); !ok || pe.Value != "creator bug" {
		t.Fatalf("leader recovered %#v; want the creator's panic in a *region.PanicError", p)
	}
	if err := <-waiterErr; !errors.Is(err, region.ErrCreatorPanicked) {
		t.Fatalf("waiter got %v; want ErrCreatorPanicked", err)
	}
	var calls counter
	u, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "fine"}))
	if err != nil || u.Name != "fine" || calls.get("k") != 1 {
		t.Fatalf("key wedged after panic: %+v, %v", u, err)
	}
}

func (s *suite) testCancelledWaiter(t *testing.T) {
	r, _, _ := s.region(t)
	release := make(chan struct{})
	var calls counter
	create := func(context.Context) (User, error) {
		calls.add("k")
		<-release
		return User{Name: "v"}, nil
	}
	leader := make(chan User, 1)
	go func() {
		u, _ := region.GetOrCreate(ctx, r, "k", create)
		leader <- u
	}()
	eventually(t, "leader to start", func() bool { return r.Stats().Misses >= 1 })
	cctx, cancel := context.WithCancel(ctx)
	waiter := make(chan error, 1)
	go func() {
		_, err := region.GetOrCreate(cctx, r, "k", create)
		waiter <- err
	}()
	eventually(t, "waiter to wait", func() bool { return r.Stats().LockWaits >= 1 })
	cancel()
	// The creator is still blocked: the cancelled waiter must return now.
	if err := <-waiter; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter got %v", err)
	}
	close(release)
	if u := <-leader; u.Name != "v" {
		t.Fatalf("leader got %+v", u)
	}
	if calls.get("k") != 1 {
		t.Fatalf("creator ran %d times", calls.get("k"))
	}
}

func (s *suite) testCancelledLeader(t *testing.T) {
	r, _, _ := s.region(t)
	release := make(chan struct{})
	var creatorCtxErr atomic.Value
	create := func(c context.Context) (User, error) {
		<-release
		creatorCtxErr.Store(fmt.Sprint(c.Err()))
		return User{Name: "v"}, nil
	}
	lctx, cancel := context.WithCancel(context.WithValue(ctx, ctxKey{}, "first"))
	leader := make(chan error, 1)
	go func() {
		_, err := region.GetOrCreate(lctx, r, "k", func(c context.Context) (User, error) {
			if c.Value(ctxKey{}) != "first" {
				return User{}, errors.New("creator lost the first caller's context values")
			}
			return create(c)
		})
		leader <- err
	}()
	eventually(t, "leader to start", func() bool { return r.Stats().Misses >= 1 })
	waiter := make(chan User, 1)
	go func() {
		u, _ := region.GetOrCreate(ctx, r, "k", create)
		waiter <- u
	}()
	eventually(t, "waiter to wait", func() bool { return r.Stats().LockWaits >= 1 })
	cancel()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled leader got %v", err)
	}
	close(release)
	if u := <-waiter; u.Name != "v" {
		t.Fatalf("waiter got %+v after the leader left", u)
	}
	if got := creatorCtxErr.Load(); got != "<nil>" {
		t.Fatalf("creator's context was cancelled: %v", got)
	}
}

type ctxKey struct{}

func (s *suite) testHardInvalidation(t *testing.T) {
	r, _, clock := s.region(t, region.WithExpiration(time.Hour))
	if err := r.Set(ctx, "k", User{Name: "old"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := r.Invalidate(ctx, true); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	var u User
	if found, _ := r.Get(ctx, "k", &u); found {
		t.Fatal("Get served a hard-invalidated value")
	}
	// Every caller waits for the new value: none is served the old one.
	release := make(chan struct{})
	var calls counter
	create := func(context.Context) (User, error) { calls.add("k"); <-release; return User{Name: "new"}, nil }
	const n = 10
	var wg sync.WaitGroup
	var old atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u, _ := region.GetOrCreate(ctx, r, "k", create)
			if u.Name != "new" {
				old.Add(1)
			}
		}()
	}
	eventually(t, "callers to wait", func() bool { return r.Stats().LockWaits >= n-1 })
	close(release)
	wg.Wait()
	if old.Load() != 0 || calls.get("k") != 1 {
		t.Fatalf("%d callers got the invalidated value, creator ran %d times", old.Load(), calls.get("k"))
	}
	// A value set after the invalidation is valid.
	if found, _ := r.Get(ctx, "k", &u); !found || u.Name != "new" {
		t.Fatalf("value made after invalidation not served: %v %+v", found, u)
	}
}

func (s *suite) testSoftInvalidation(t *testing.T) {
	r, _, clock := s.region(t, region.WithExpiration(time.Hour))
	s.checkSoft(t, r, clock)
}

func (s *suite) testSoftWithoutExpiration(t *testing.T) {
	r, _, clock := s.region(t) // no expiration: dogpile raises here; we serve stale
	s.checkSoft(t, r, clock)
}

func (s *suite) checkSoft(t *testing.T, r *region.Region, clock *Clock) {
	t.Helper()
	if err := r.Set(ctx, "k", User{Name: "old"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := r.Invalidate(ctx, false); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	var u User
	if found, _ := r.Get(ctx, "k", &u); found {
		t.Fatal("Get served a soft-invalidated value")
	}
	if found, _ := r.Get(ctx, "k", &u, region.IgnoreExpiration()); !found || u.Name != "old" {
		t.Fatal("Get with IgnoreExpiration did not serve the soft-invalidated value")
	}
	release := make(chan struct{})
	var calls counter
	create := func(context.Context) (User, error) { calls.add("k"); <-release; return User{Name: "new"}, nil }
	leader := make(chan User, 1)
	go func() { u, _ := region.GetOrCreate(ctx, r, "k", create); leader <- u }()
	eventually(t, "regeneration to start", func() bool { return calls.get("k") == 1 })
	// While it runs, others get the stale value at once.
	for range 5 {
		u, err := region.GetOrCreate(ctx, r, "k", create)
		if err != nil || u.Name != "old" {
			t.Fatalf("during soft regeneration got %+v, %v; want the stale value", u, err)
		}
	}
	close(release)
	if u := <-leader; u.Name != "new" {
		t.Fatalf("regenerating caller got %+v", u)
	}
	if calls.get("k") != 1 {
		t.Fatalf("creator ran %d times", calls.get("k"))
	}
}

// Other is a type whose fields do not match User's.
type Other struct {
	Count  int
	Weight float64
}

func (s *suite) testUndecodable(t *testing.T) {
	r, _, _ := s.region(t)
	if err := r.Set(ctx, "k", Other{Count: 3, Weight: 1.5}); err != nil {
		t.Fatal(err)
	}
	var calls counter
	u, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "regenerated"}))
	if err != nil || u.Name != "regenerated" || calls.get("k") != 1 {
		t.Fatalf("undecodable payload: got %+v, %v, %d calls; want a regenerated value", u, err, calls.get("k"))
	}
	if st := r.Stats(); st.DecodeFailures < 1 {
		t.Fatalf("decode failure not counted: %+v", st)
	}
	// The regenerated value replaced it.
	u, err = region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "again"}))
	if err != nil || u.Name != "regenerated" || calls.get("k") != 1 {
		t.Fatalf("after regeneration: %+v, %v, %d calls", u, err, calls.get("k"))
	}
}

// entryKey finds the backend key the region uses for key by storing a marker
// and reading it back through the backend: the suite does not assume the
// key layout, only that Set writes one key.
func (s *suite) rawSet(t *testing.T, b region.Backend, r *region.Region, key string, raw []byte) {
	t.Helper()
	bk := "suite:k:" + key
	if err := r.Set(ctx, key, User{Name: "marker"}); err != nil {
		t.Fatal(err)
	}
	vals, err := b.GetMulti(ctx, []string{bk})
	if err != nil || vals[0] == nil {
		t.Fatalf("could not find the entry at %q: %v", bk, err)
	}
	if err := b.SetMulti(ctx, []region.Item{{Key: bk, Value: raw}}); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) testCorruptEntry(t *testing.T) {
	for _, raw := range [][]byte{{}, {1}, {1, 2, 3}, []byte("not an envelope at all, just text")} {
		r, b, _ := s.region(t)
		s.rawSet(t, b, r, "k", raw)
		var calls counter
		u, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "fresh"}))
		if err != nil || u.Name != "fresh" || calls.get("k") != 1 {
			t.Fatalf("corrupt entry %q: got %+v, %v", raw, u, err)
		}
		if found, err := r.Get(ctx, "k", &u); err != nil || !found {
			t.Fatalf("corrupt entry %q was not replaced", raw)
		}
	}
}

func (s *suite) testOldEnvelope(t *testing.T) {
	r, b, _ := s.region(t)
	// Version 0 of the envelope never existed: it stands for any format
	// other than the current one.
	old := append([]byte{0}, make([]byte, 30)...)
	s.rawSet(t, b, r, "k", old)
	var calls counter
	u, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "fresh"}))
	if err != nil || u.Name != "fresh" || calls.get("k") != 1 {
		t.Fatalf("old envelope: got %+v, %v", u, err)
	}
}

func (s *suite) testShouldCache(t *testing.T) {
	r, _, _ := s.region(t)
	var calls counter
	skipEmpty := region.ShouldCache(func(u User) bool { return u.Name != "" })
	for i := range 3 {
		u, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{}), skipEmpty)
		if err != nil || u.Name != "" || calls.get("k") != i+1 {
			t.Fatalf("call %d: %+v, %v, %d creator runs", i, u, err, calls.get("k"))
		}
	}
	if st := r.Stats(); st.NotStored != 3 {
		t.Fatalf("NotStored = %d; want 3", st.NotStored)
	}
	var u User
	if found, _ := r.Get(ctx, "k", &u); found {
		t.Fatal("a value should-cache rejected was stored")
	}
	if _, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "x"}), skipEmpty); err != nil {
		t.Fatal(err)
	}
	if found, _ := r.Get(ctx, "k", &u); !found {
		t.Fatal("a value should-cache accepted was not stored")
	}
}

func (s *suite) testExpirationOverrides(t *testing.T) {
	r, _, clock := s.region(t, region.WithExpiration(time.Minute))
	var calls counter
	if _, err := region.GetOrCreate(ctx, r, "never", userCreator(&calls, "never", User{Name: "v"}), region.ExpireAfter(region.NeverExpire)); err != nil {
		t.Fatal(err)
	}
	if _, err := region.GetOrCreate(ctx, r, "short", userCreator(&calls, "short", User{Name: "v"}), region.ExpireAfter(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := region.GetOrCreate(ctx, r, "default", userCreator(&calls, "default", User{Name: "v"})); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second)
	var u User
	if found, _ := r.Get(ctx, "short", &u); found {
		t.Fatal("a value stored for one second is fresh after ten")
	}
	if found, _ := r.Get(ctx, "default", &u); !found {
		t.Fatal("a value stored for a minute is stale after ten seconds")
	}
	clock.Advance(time.Hour)
	if found, _ := r.Get(ctx, "never", &u); !found {
		t.Fatal("a value stored never to expire expired")
	}
	if found, _ := r.Get(ctx, "default", &u); found {
		t.Fatal("a value stored for a minute is fresh after an hour")
	}
	// The per-call override on read wins over what was stored.
	if found, _ := r.Get(ctx, "default", &u, region.ExpireAfter(2*time.Hour)); !found {
		t.Fatal("ExpireAfter on read was not honoured")
	}
}

func (s *suite) testIgnoreExpiration(t *testing.T) {
	r, _, clock := s.region(t, region.WithExpiration(time.Minute))
	var calls counter
	if _, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "v"})); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	u, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "w"}), region.IgnoreExpiration())
	if err != nil || u.Name != "v" || calls.get("k") != 1 {
		t.Fatalf("IgnoreExpiration regenerated: %+v, %v, %d", u, err, calls.get("k"))
	}
}

func (s *suite) testAsyncRegeneration(t *testing.T) {
	r, _, clock := s.region(t, region.WithExpiration(time.Minute), region.WithAsyncRegeneration(2))
	if err := r.Set(ctx, "k", User{Name: "old"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	release := make(chan struct{})
	var calls counter
	create := func(context.Context) (User, error) { calls.add("k"); <-release; return User{Name: "new"}, nil }
	// Every caller, the one that starts the regeneration included, gets the
	// stale value at once: the creator is still blocked.
	for i := range 20 {
		u, err := region.GetOrCreate(ctx, r, "k", create)
		if err != nil || u.Name != "old" {
			t.Fatalf("call %d: %+v, %v; want the stale value at once", i, u, err)
		}
	}
	close(release)
	eventually(t, "background regeneration", func() bool {
		var u User
		found, _ := r.Get(ctx, "k", &u)
		return found && u.Name == "new"
	})
	if calls.get("k") != 1 {
		t.Fatalf("background regeneration ran %d times; want 1", calls.get("k"))
	}
}

func (s *suite) testTagInvalidation(t *testing.T) {
	r, _, _ := s.region(t)
	var calls counter
	get := func(key string, tags ...string) User {
		u, err := region.GetOrCreate(ctx, r, key, func(context.Context) (User, error) {
			calls.add(key)
			return User{Name: fmt.Sprint(key, calls.get(key))}, nil
		}, region.WithTags(tags...))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	get("users-only", "users")
	get("orders-only", "orders")
	get("both", "users", "orders")
	get("users-only", "users")
	if calls.total() != 3 {
		t.Fatalf("hits ran the creator: %v", calls.n)
	}
	if err := r.InvalidateTags(ctx, "users"); err != nil {
		t.Fatal(err)
	}
	get("users-only", "users")
	get("orders-only", "orders")
	get("both", "users", "orders")
	if calls.get("users-only") != 2 || calls.get("both") != 2 || calls.get("orders-only") != 1 {
		t.Fatalf("after invalidating users: %v", calls.n)
	}
	var u User
	if found, _ := r.Get(ctx, "both", &u, region.WithTags("users", "orders")); !found {
		t.Fatal("Get with tags missed a valid value")
	}
	if err := r.InvalidateTags(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if found, _ := r.Get(ctx, "both", &u, region.WithTags("users", "orders")); found {
		t.Fatal("Get with tags served an invalidated value")
	}
}

func (s *suite) testKeyTags(t *testing.T) {
	cb := &countingBackend{Backend: s.newBackend(t)}
	r := region.New(cb, region.WithName("suite"))
	keys := []string{"p1", "p2", "p3"}
	own := region.WithKeyTags(map[string][]string{"p1": {"row:1"}, "p2": {"row:2"}, "p3": {"row:3"}})
	var calls counter
	create := func(_ context.Context, missing []string) (map[string]User, error) {
		calls.add(missing...)
		out := map[string]User{}
		for _, k := range missing {
			out[k] = User{Name: fmt.Sprint(k, calls.get(k))}
		}
		return out, nil
	}
	get := func() map[string]User {
		vals, err := region.GetOrCreateMulti(ctx, r, keys, create, region.WithTags("posts"), own)
		if err != nil {
			t.Fatal(err)
		}
		return vals
	}
	get()
	cb.gets.Store(0)
	get()
	if calls.total() != 3 || cb.gets.Load() != 1 {
		t.Fatalf("all hits: creator %v, %d backend reads; want 3 creations before and 1 read", calls.n, cb.gets.Load())
	}
	if err := r.InvalidateTags(ctx, "row:2"); err != nil {
		t.Fatal(err)
	}
	vals := get()
	if calls.get("p2") != 2 || calls.get("p1") != 1 || calls.get("p3") != 1 || vals["p2"].Name != "p22" {
		t.Fatalf("a key tag invalidated more than its key: %v", calls.n)
	}
	if err := r.InvalidateTags(ctx, "posts"); err != nil {
		t.Fatal(err)
	}
	get()
	if calls.total() != 7 {
		t.Fatalf("a shared tag did not invalidate every key: %v", calls.n)
	}
}

func (s *suite) testFillRacingInvalidation(t *testing.T) {
	r, _, _ := s.region(t)
	var calls counter
	// The tag changes while the creator reads its source: the caller gets
	// the answer, but it is not stored.
	u, err := region.GetOrCreate(ctx, r, "k", func(c context.Context) (User, error) {
		calls.add("k")
		if err := r.InvalidateTags(c, "users"); err != nil {
			return User{}, err
		}
		return User{Name: "read before the write"}, nil
	}, region.WithTags("users"))
	if err != nil || u.Name != "read before the write" {
		t.Fatalf("got %+v, %v", u, err)
	}
	if st := r.Stats(); st.NotStored != 1 {
		t.Fatalf("NotStored = %d; want 1", st.NotStored)
	}
	u, err = region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "after"}), region.WithTags("users"))
	if err != nil || u.Name != "after" || calls.get("k") != 2 {
		t.Fatalf("a fill that raced an invalidation was served: %+v, %d calls", u, calls.get("k"))
	}
}

func (s *suite) testPreInvalidationLease(t *testing.T) {
	r, _, clock := s.region(t, region.WithExpiration(time.Hour), region.WithInvalidationLease(5*time.Second))
	var calls counter
	get := func() User {
		u, err := region.GetOrCreate(ctx, r, "k", func(context.Context) (User, error) {
			calls.add("k")
			return User{Name: fmt.Sprint(calls.get("k"))}, nil
		}, region.WithTags("users"))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	get()
	// A writer announces its commit, then dies before InvalidateTags.
	if err := r.PreInvalidateTags(ctx, "users"); err != nil {
		t.Fatal(err)
	}
	if u := get(); u.Name != "2" {
		t.Fatalf("pre-invalidation did not invalidate: %+v", u)
	}
	clock.Advance(4 * time.Second)
	if u := get(); u.Name != "2" {
		t.Fatalf("value filled during the lease not served within it: %+v", u)
	}
	clock.Advance(2 * time.Second)
	// Past the lease the value is a miss, not stale, although the region's
	// expiration is an hour.
	if u := get(); u.Name != "3" {
		t.Fatalf("value filled during the lease outlived it: %+v", u)
	}
}

func (s *suite) testWaitTimeoutFallback(t *testing.T) {
	r, _, _ := s.region(t, region.WithWaitTimeout(20*time.Millisecond))
	release := make(chan struct{})
	var calls counter
	go func() {
		_, _ = region.GetOrCreate(ctx, r, "k", func(context.Context) (User, error) {
			calls.add("k")
			<-release
			return User{Name: "slow"}, nil
		})
	}()
	eventually(t, "slow creator to start", func() bool { return calls.get("k") == 1 })
	u, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "own"}))
	close(release)
	if err != nil || u.Name != "own" || calls.get("k") != 2 {
		t.Fatalf("waiter past its budget: %+v, %v, %d calls; want its own value", u, err, calls.get("k"))
	}
}

func (s *suite) testWaitTimeoutError(t *testing.T) {
	r, _, _ := s.region(t, region.WithWaitTimeout(20*time.Millisecond), region.WithoutWaitFallback())
	release := make(chan struct{})
	defer close(release)
	var calls counter
	go func() {
		_, _ = region.GetOrCreate(ctx, r, "k", func(context.Context) (User, error) {
			calls.add("k")
			<-release
			return User{}, nil
		})
	}()
	eventually(t, "slow creator to start", func() bool { return calls.get("k") == 1 })
	_, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{}))
	if !errors.Is(err, region.ErrWaitTimeout) || calls.get("k") != 1 {
		t.Fatalf("got %v with %d calls; want ErrWaitTimeout and no second creator", err, calls.get("k"))
	}
}

func (s *suite) testKeyMangler(t *testing.T) {
	r, _, _ := s.region(t, region.WithKeyMangler(region.HashMangler))
	long := fmt.Sprintf("%0500d", 7)
	var calls counter
	for range 2 {
		u, err := region.GetOrCreate(ctx, r, long, userCreator(&calls, "long", User{Name: "v"}))
		if err != nil || u.Name != "v" {
			t.Fatal(u, err)
		}
	}
	if calls.get("long") != 1 {
		t.Fatalf("mangled key missed: %d calls", calls.get("long"))
	}
	var u User
	if found, _ := r.Get(ctx, long, &u); !found {
		t.Fatal("Get with mangler missed")
	}
}

func (s *suite) testJSONCodec(t *testing.T) {
	r, _, _ := s.region(t, region.WithCodec(region.JSONCodec{}))
	var calls counter
	for range 2 {
		u, err := region.GetOrCreate(ctx, r, "k", userCreator(&calls, "k", User{Name: "json", Tags: []string{"x"}}))
		if err != nil || u.Name != "json" || len(u.Tags) != 1 {
			t.Fatal(u, err)
		}
	}
	if calls.get("k") != 1 {
		t.Fatalf("JSON hit missed: %d calls", calls.get("k"))
	}
}

// testParallelMixed runs readers, invalidators and deleters together; under
// -race it checks the region's own synchronisation. Every value read must be
// one some creator made for that key.
func (s *suite) testParallelMixed(t *testing.T) {
	r, _, clock := s.region(t, region.WithExpiration(time.Second), region.WithAsyncRegeneration(4))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 300 {
				key := fmt.Sprintf("k%d", rng.IntN(10))
				switch rng.IntN(10) {
				case 0:
					_ = r.InvalidateTags(ctx, "t")
				case 1:
					_ = r.Delete(ctx, key)
				case 2:
					clock.Advance(100 * time.Millisecond)
				case 3:
					vals, err := region.GetOrCreateMulti(ctx, r, []string{key, "k0"}, func(_ context.Context, missing []string) (map[string]User, error) {
						out := map[string]User{}
						for _, k := range missing {
							out[k] = User{Name: k}
						}
						return out, nil
					}, region.WithTags("t"))
					if err != nil || vals[key].Name != key {
						t.Errorf("multi %s: %v %v", key, vals, err)
						return
					}
				default:
					u, err := region.GetOrCreate(ctx, r, key, func(context.Context) (User, error) {
						return User{Name: key, ID: int64(i)}, nil
					}, region.WithTags("t"))
					if err != nil || u.Name != key {
						t.Errorf("%s: %+v %v", key, u, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}
