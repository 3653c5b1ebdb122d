package region_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/backends/memory"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// logSink is a slog.Handler keeping every record it is given, at every
// level.
type logSink struct {
	mu      sync.Mutex
	records []slog.Record
}

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, r.Clone())
	return nil
}
func (s *logSink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s *logSink) WithGroup(string) slog.Handler      { return s }

// lines renders the records as "LEVEL message k=v ...", in the order
// they were logged; an error attribute is rendered as error=ERR (the
// tests compare the errors themselves apart).
func (s *logSink) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.records {
		out = append(out, recordLine(r))
	}
	return out
}

func recordLine(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			b.WriteString(" error=ERR")
			return true
		}
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value.Any())
		return true
	})
	return b.String()
}

// errorsOf returns the error attributes of the records whose message is
// msg.
func (s *logSink) errorsOf(msg string) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, r := range s.records {
		if r.Message != msg {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				err, _ := a.Value.Any().(error)
				errs = append(errs, err)
			}
			return true
		})
	}
	return errs
}

// fakeClock is a log limiter's clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newLogged returns a log observer writing to a new sink, on a clock that
// moves only when the test says.
func newLogged(opts ...region.LogOption) (region.Observer, *logSink, *fakeClock) {
	sink := &logSink{}
	o := region.NewLogObserver(slog.New(sink), opts...)
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	region.SetLogClock(o, clock.Now)
	return o, sink, clock
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: records\n\t%s\nwant\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// TestLogWorkload: hits, misses and a stampede log nothing; an answer not
// stored, one that cannot be encoded and a stored value that cannot be
// read back log one record each, with their level, message and
// attributes.
func TestLogWorkload(t *testing.T) {
	ctx := context.Background()
	o, sink, _ := newLogged()
	r := region.New(memory.New(), region.WithName("users"), region.WithExpiration(time.Minute), region.WithObserver(o))
	t.Cleanup(func() { _ = r.Close() })
	tags := region.WithTags("users", "teams")

	const hits, misses = 20, 4
	for i := range misses {
		v, err := region.GetOrCreate(ctx, r, fmt.Sprintf("k%d", i), func(context.Context) (string, error) { return "v", nil }, tags)
		if err != nil || v != "v" {
			t.Fatalf("miss %d = %q, %v", i, v, err)
		}
	}
	for i := range hits {
		if _, err := region.GetOrCreate(ctx, r, "k0", func(context.Context) (string, error) { return "", errors.New("ran") }, tags); err != nil {
			t.Fatalf("hit %d: %v", i, err)
		}
	}
	// A stampede: one creator, the other callers wait for it.
	const callers = 5
	release := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	runs := 0
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := region.GetOrCreate(ctx, r, "hot", func(context.Context) (string, error) {
				mu.Lock()
				runs++
				mu.Unlock()
				<-release
				return "hot", nil
			}, tags)
			if err != nil {
				t.Error(err)
			}
		}()
	}
	waitFor(t, "the waiters", func() bool { return r.Stats().LockWaits == callers-1 })
	close(release)
	wg.Wait()
	if st := r.Stats(); st.Hits != hits || st.Misses != misses+callers || st.Regenerations != misses+1 || runs != 1 {
		t.Fatalf("stats %+v, %d creator runs", st, runs)
	}
	sameLines(t, "hits, misses and a stampede", sink.lines(), nil)

	// Not stored: refused by ShouldCache (DEBUG), unencodable (WARN).
	if _, err := region.GetOrCreate(ctx, r, "empty", func(context.Context) (string, error) { return "", nil },
		tags, region.ShouldCache(func(s string) bool { return s != "" })); err != nil {
		t.Fatal(err)
	}
	if _, err := region.GetOrCreate(ctx, r, "chan", func(context.Context) (chan int, error) { return make(chan int), nil }, tags); err != nil {
		t.Fatal(err)
	}
	// A value stored as a string read back as an int: unreadable (WARN),
	// then made again.
	if v, err := region.GetOrCreate(ctx, r, "k1", func(context.Context) (int, error) { return 7, nil }, tags); err != nil || v != 7 {
		t.Fatalf("k1 as an int = %v, %v", v, err)
	}
	sameLines(t, "the workload", sink.lines(), []string{
		"DEBUG dogpile: answer not stored region=users key=empty reason=should_cache tags=[users teams]",
		"WARN dogpile: answer not stored region=users key=chan reason=unencodable tags=[users teams]",
		"WARN dogpile: stored value unreadable region=users key=k1 error=ERR",
	})
	if errs := sink.errorsOf(region.LogMsgDecodeFailed); len(errs) != 1 || errs[0] == nil {
		t.Fatalf("decode failure errors %v", errs)
	}
}

// TestLogRateLimit: past its burst a class is dropped and counted; the
// first record of it once the interval has passed says how many were
// dropped. Classes are limited apart.
func TestLogRateLimit(t *testing.T) {
	ctx := context.Background()
	o, sink, clock := newLogged(region.WithLogRate(2, 10*time.Second))
	r := region.New(memory.New(), region.WithName("r"), region.WithObserver(o))
	t.Cleanup(func() { _ = r.Close() })
	refuse := region.ShouldCache(func(int) bool { return false })
	notStored := func(key string) {
		t.Helper()
		if _, err := region.GetOrCreate(ctx, r, key, func(context.Context) (int, error) { return 1, nil }, refuse); err != nil {
			t.Fatal(err)
		}
	}
	unencodable := func(key string) {
		t.Helper()
		if _, err := region.GetOrCreate(ctx, r, key, func(context.Context) (func(), error) { return func() {}, nil }); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 7 {
		notStored(fmt.Sprintf("a%d", i))
	}
	unencodable("u0") // another class: its own burst
	clock.Advance(9 * time.Second)
	notStored("b0") // still within the interval: dropped
	clock.Advance(time.Second)
	notStored("c0") // the next interval: says 6 were dropped
	notStored("c1")
	notStored("c2") // over the burst again
	clock.Advance(10 * time.Second)
	notStored("d0")
	notStored("d1") // nothing dropped since d0
	sameLines(t, "rate limited", sink.lines(), []string{
		"DEBUG dogpile: answer not stored region=r key=a0 reason=should_cache tags=[]",
		"DEBUG dogpile: answer not stored region=r key=a1 reason=should_cache tags=[]",
		"WARN dogpile: answer not stored region=r key=u0 reason=unencodable tags=[]",
		"DEBUG dogpile: answer not stored region=r key=c0 reason=should_cache tags=[] suppressed=6",
		"DEBUG dogpile: answer not stored region=r key=c1 reason=should_cache tags=[]",
		"DEBUG dogpile: answer not stored region=r key=d0 reason=should_cache tags=[] suppressed=1",
		"DEBUG dogpile: answer not stored region=r key=d1 reason=should_cache tags=[]",
	})
	if st := r.Stats(); st.NotStoredBy.ShouldCache != 13 || st.NotStoredBy.Unencodable != 1 {
		t.Fatalf("stats %+v", st.NotStoredBy)
	}
}

// TestLogLevelOff: a record the logger would not write is neither logged
// nor counted against its class.
func TestLogLevelOff(t *testing.T) {
	ctx := context.Background()
	sink := &logSink{}
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelInfo)
	o := region.NewLogObserver(slog.New(levelFilter{sink, lv}), region.WithLogRate(1, time.Hour))
	region.SetLogClock(o, (&fakeClock{}).Now)
	r := region.New(memory.New(), region.WithName("r"), region.WithObserver(o))
	t.Cleanup(func() { _ = r.Close() })
	refuse := region.ShouldCache(func(int) bool { return false })
	for _, k := range []string{"a", "b", "c"} {
		if _, err := region.GetOrCreate(ctx, r, k, func(context.Context) (int, error) { return 1, nil }, refuse); err != nil {
			t.Fatal(err)
		}
	}
	lv.Set(slog.LevelDebug)
	if _, err := region.GetOrCreate(ctx, r, "d", func(context.Context) (int, error) { return 1, nil }, refuse); err != nil {
		t.Fatal(err)
	}
	sameLines(t, "after DEBUG was turned on", sink.lines(), []string{
		"DEBUG dogpile: answer not stored region=r key=d reason=should_cache tags=[]",
	})
}

type levelFilter struct {
	slog.Handler
	min *slog.LevelVar
}

func (f levelFilter) Enabled(_ context.Context, l slog.Level) bool { return l >= f.min.Level() }

// eventLog keeps the events of the given kinds a region reports.
type eventLog struct {
	mu     sync.Mutex
	events []region.Event
}

func (l *eventLog) Observe(_ context.Context, e region.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Tags = slices.Clone(e.Tags)
	l.events = append(l.events, e)
}

func (l *eventLog) errorsOf(kind region.EventKind, op string) []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, e := range l.events {
		if e.Kind == kind && e.Op == op {
			errs = append(errs, e.Err)
		}
	}
	return errs
}

// TestLogRedisOutage: a real redis-server killed and restarted. With the
// limiter's clock standing still and a burst of 1, each class of record
// is logged once however many times the retrier and the callers failed:
// the backend errors of each operation, the invalidation that failed, the
// breaker opening; then, once the server is back, the breaker closing and
// the retried invalidation landing.
func TestLogRedisOutage(t *testing.T) {
	ctx := context.Background()
	srv := testharness.Redis(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	const failures = 3
	b := redisbackend.New(client, redisbackend.WithPrefix("outage"), redisbackend.WithTimeout(500*time.Millisecond),
		redisbackend.WithBreaker(failures, 200*time.Millisecond))
	o, sink, _ := newLogged(region.WithLogRate(1, time.Minute))
	events := &eventLog{}
	r := region.New(b, region.WithName("orders"), region.WithExpiration(time.Minute), region.WithObserver(o), region.WithObserver(events))
	t.Cleanup(func() { _ = r.Close() })
	tags := region.WithTags("orders")
	get := func(key string) {
		t.Helper()
		if v, err := region.GetOrCreate(ctx, r, key, func(context.Context) (string, error) { return "v", nil }, tags); err != nil || v != "v" {
			t.Fatalf("get %s = %q, %v", key, v, err)
		}
	}
	get("a")
	get("a")
	sameLines(t, "with the server up", sink.lines(), nil)

	srv.Kill()
	if err := r.InvalidateTags(ctx, "orders"); err == nil {
		t.Fatal("InvalidateTags with the server down: no error")
	}
	// Reads fail until the breaker is open.
	waitFor(t, "the breaker to open", func() bool {
		get("b")
		open, known := r.BreakerOpen()
		return open && known
	})
	get("c") // the breaker fails it fast
	srv.Restart(t)
	waitFor(t, "the retried invalidation", func() bool { return r.Stats().InvalidationsRetried == 1 })
	waitFor(t, "the breaker to close", func() bool { open, _ := r.BreakerOpen(); return !open })
	waitFor(t, "the breaker's closing record", func() bool {
		return slices.Contains(sink.lines(), "INFO dogpile: backend breaker closed region=orders")
	})

	got := sink.lines()
	slices.Sort(got) // the retrier logs from its own goroutine
	sameLines(t, "the outage", got, []string{
		"ERROR dogpile: backend breaker opened region=orders",
		"INFO dogpile: answer not stored region=orders key=b reason=bypassed tags=[orders]",
		"INFO dogpile: backend breaker closed region=orders",
		"INFO dogpile: retried invalidation landed region=orders tags=[orders]",
		"WARN dogpile: backend error region=orders op=invalidate error=ERR",
		"WARN dogpile: backend error region=orders op=read key=b error=ERR",
		"WARN dogpile: invalidation failed, retrying region=orders tags=[orders] error=ERR",
	})
	// The errors logged are the backend's, the first of each class.
	for _, c := range []struct {
		msg  string
		kind region.EventKind
		op   string
	}{
		{region.LogMsgInvalidationFailed, region.EventInvalidationFailed, ""},
		{region.LogMsgBackendError, region.EventBackendError, region.OpInvalidate},
	} {
		logged := sink.errorsOf(c.msg)
		seen := events.errorsOf(c.kind, c.op)
		if len(seen) == 0 || logged[0] != seen[0] {
			t.Fatalf("%s: logged %v, events %v", c.msg, logged, seen)
		}
	}
	if st := r.Stats(); st.InvalidationFailures == 0 || st.Errors < failures {
		t.Fatalf("stats %+v", st)
	}
}
