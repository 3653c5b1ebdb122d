package region_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// User is the value the examples cache.
type User struct {
	ID   int64
	Name string
}

// manualClock is a clock moved by hand (region.WithClock), so that examples
// that depend on the order of events print the same output on every machine.
type manualClock struct{ nanos atomic.Int64 }

func newManualClock() *manualClock {
	c := &manualClock{}
	c.nanos.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *manualClock) Now() time.Time          { return time.Unix(0, c.nanos.Load()) }
func (c *manualClock) Advance(d time.Duration) { c.nanos.Add(int64(d)) }

func ExampleNew() {
	r := region.New(
		memory.New(memory.WithMaxBytes(64<<20)),
		region.WithName("default"),
		region.WithExpiration(10*time.Minute),
	)
	fmt.Println(r.Name(), r.Expiration())

	ctx := context.Background()
	if err := r.Set(ctx, "user:1", User{ID: 1, Name: "alice"}); err != nil {
		panic(err)
	}
	var u User
	found, err := r.Get(ctx, "user:1", &u)
	fmt.Println(found, err, u.Name)
	// Output:
	// default 10m0s
	// true <nil> alice
}

func ExampleGetOrCreate() {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(10*time.Minute))

	calls := 0
	loadUser := func(ctx context.Context) (User, error) {
		calls++ // stands for a database query
		return User{ID: 1, Name: "alice"}, nil
	}

	// The first call finds nothing and runs the creator...
	u, err := region.GetOrCreate(ctx, r, "user:1", loadUser)
	fmt.Println(u.Name, err, "creator calls:", calls)

	// ...the second is a hit: the creator does not run again.
	u, err = region.GetOrCreate(ctx, r, "user:1", loadUser)
	fmt.Println(u.Name, err, "creator calls:", calls)

	st := r.Stats()
	fmt.Println("hits:", st.Hits, "misses:", st.Misses)
	// Output:
	// alice <nil> creator calls: 1
	// alice <nil> creator calls: 1
	// hits: 1 misses: 1
}

func ExampleGetOrCreateMulti() {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(10*time.Minute))

	names := map[string]string{"user:1": "alice", "user:2": "bob", "user:3": "carol"}
	loadUsers := func(ctx context.Context, missing []string) (map[string]string, error) {
		// One query for every key without a usable value.
		fmt.Println("creator called for", missing)
		out := make(map[string]string, len(missing))
		for _, k := range missing {
			out[k] = names[k]
		}
		return out, nil
	}

	m, err := region.GetOrCreateMulti(ctx, r, []string{"user:1", "user:2"}, loadUsers)
	fmt.Println(m, err)

	// user:1 and user:2 are hits; only user:3 is made.
	m, err = region.GetOrCreateMulti(ctx, r, []string{"user:1", "user:2", "user:3"}, loadUsers)
	fmt.Println(m, err)
	// Output:
	// creator called for [user:1 user:2]
	// map[user:1:alice user:2:bob] <nil>
	// creator called for [user:3]
	// map[user:1:alice user:2:bob user:3:carol] <nil>
}

// Hard invalidation turns every value created before it into a miss: the
// caller has to wait for a new value, and gets the creator's error if it
// fails. Soft invalidation only makes them stale: the caller that
// regenerates one still holds the old value, and keeps it when the creator
// fails.
func ExampleRegion_Invalidate() {
	ctx := context.Background()
	clock := newManualClock()
	r := region.New(memory.New(), region.WithExpiration(10*time.Minute), region.WithClock(clock.Now))

	good := func(context.Context) (string, error) { return "v1", nil }
	failing := func(context.Context) (string, error) { return "", errors.New("database down") }

	v, err := region.GetOrCreate(ctx, r, "k", good)
	fmt.Println("stored:", v, err)

	clock.Advance(time.Second)
	if err := r.Invalidate(ctx, false); err != nil { // soft
		panic(err)
	}
	clock.Advance(time.Second)
	v, err = region.GetOrCreate(ctx, r, "k", failing)
	fmt.Printf("after soft invalidation, creator failing: %q %v\n", v, err)

	if err := r.Invalidate(ctx, true); err != nil { // hard
		panic(err)
	}
	clock.Advance(time.Second)
	v, err = region.GetOrCreate(ctx, r, "k", failing)
	fmt.Printf("after hard invalidation, creator failing: %q %v\n", v, err)

	v, err = region.GetOrCreate(ctx, r, "k", func(context.Context) (string, error) { return "v2", nil })
	fmt.Println("regenerated:", v, err)
	// Output:
	// stored: v1 <nil>
	// after soft invalidation, creator failing: "v1" <nil>
	// after hard invalidation, creator failing: "" database down
	// regenerated: v2 <nil>
}

// Tags tie values to what they were made from: invalidating a tag turns
// every value stored with it into a miss, wherever the backend is shared.
func ExampleRegion_InvalidateTags() {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(10*time.Minute))

	calls := 0
	countUsers := func(context.Context) (int, error) {
		calls++
		return 41 + calls, nil
	}

	n, _ := region.GetOrCreate(ctx, r, "users:count", countUsers, region.WithTags("users"))
	fmt.Println(n, "creator calls:", calls)
	n, _ = region.GetOrCreate(ctx, r, "users:count", countUsers, region.WithTags("users"))
	fmt.Println(n, "creator calls:", calls)

	// A write to the users table invalidates everything tagged "users".
	if err := r.InvalidateTags(ctx, "users"); err != nil {
		panic(err)
	}
	n, _ = region.GetOrCreate(ctx, r, "users:count", countUsers, region.WithTags("users"))
	fmt.Println(n, "creator calls:", calls)
	// Output:
	// 42 creator calls: 1
	// 42 creator calls: 1
	// 43 creator calls: 2
}

// With asynchronous regeneration even the caller that finds an expired value
// is served it at once; the new value is made in the background.
func ExampleWithAsyncRegeneration() {
	ctx := context.Background()
	clock := newManualClock()
	r := region.New(memory.New(),
		region.WithExpiration(time.Minute),
		region.WithAsyncRegeneration(4),
		region.WithClock(clock.Now))

	if err := r.Set(ctx, "k", "old"); err != nil {
		panic(err)
	}
	clock.Advance(2 * time.Minute) // "old" is now stale

	var calls atomic.Int32
	release := make(chan struct{})
	create := func(context.Context) (string, error) {
		calls.Add(1)
		<-release // a slow query
		return "new", nil
	}
	for range 3 {
		v, err := region.GetOrCreate(ctx, r, "k", create)
		fmt.Println("served:", v, err)
	}
	close(release)

	// Wait for the background regeneration to store its value.
	deadline := time.Now().Add(10 * time.Second)
	var v string
	for found, _ := r.Get(ctx, "k", &v); !found || v != "new"; found, _ = r.Get(ctx, "k", &v) {
		if time.Now().After(deadline) {
			panic("background regeneration did not finish")
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Println("stored:", v, "creator calls:", calls.Load())
	// Output:
	// served: old <nil>
	// served: old <nil>
	// served: old <nil>
	// stored: new creator calls: 1
}

// A creator's panic keeps its stack. The caller whose creator panicked
// panics again with a *PanicError, in its own goroutine; every caller that
// waited on that creator gets an error holding the same *PanicError.
func ExamplePanicError() {
	ctx := context.Background()
	r := region.New(memory.New())

	release := make(chan struct{})
	buggyCreator := func(context.Context) (User, error) {
		<-release
		panic("no row scanned") // a bug in the creator
	}

	recovered := make(chan any, 1)
	go func() {
		defer func() { recovered <- recover() }()
		_, _ = region.GetOrCreate(ctx, r, "user:1", buggyCreator)
	}()
	for r.Stats().Misses < 1 { // the first caller leads...
		time.Sleep(time.Millisecond)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := region.GetOrCreate(ctx, r, "user:1", buggyCreator)
		waited <- err
	}()
	for r.Stats().LockWaits < 1 { // ...and the second waits for its value
		time.Sleep(time.Millisecond)
	}
	close(release)

	pe := (<-recovered).(*region.PanicError)
	fmt.Println("the leader recovered:", pe.Value)
	fmt.Println("its stack names the creator:", strings.Contains(string(pe.Stack), "ExamplePanicError.func1"))

	err := <-waited
	var wpe *region.PanicError
	fmt.Println("the waiter's error is ErrCreatorPanicked:", errors.Is(err, region.ErrCreatorPanicked))
	fmt.Println("it holds the same PanicError:", errors.As(err, &wpe) && wpe == pe)
	// Output:
	// the leader recovered: no row scanned
	// its stack names the creator: true
	// the waiter's error is ErrCreatorPanicked: true
	// it holds the same PanicError: true
}
