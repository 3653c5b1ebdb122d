package crossproc

import (
	"context"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// The PostgreSQL invalidation feed across processes: a writer process
// commits and then fails to invalidate (SIGKILLed between its commit and
// its post-commit invalidation, or its Redis connection black-holed); a
// reader process that shares the Redis region and runs a listener
// (dogpile.ListenPostgres) serves the new value shortly after the commit.
// Without the listener the same scenario serves the old value for the
// invalidation lease (the killed writer) or until the entry expires (the
// cut writer): each test's "no feed" run shows it.

// feedLease is the invalidation lease of every region here: long, so that
// without the feed the stale value outlives the run that checks for it.
const feedLease = 30 * time.Second

// feedTrials is the number of trials with the feed; feedBound the longest a
// read may stay stale after the commit; feedStaleWindow how long the "no
// feed" run checks that the value stays stale.
const (
	feedTrials      = 20
	feedBound       = 5 * time.Second
	feedStaleWindow = time.Second
)

func init() {
	childRoles["feeddier"] = childFeedDier
	childRoles["feedcutwriter"] = childFeedCutWriter
}

// feedRegion returns the "default" region over Redis at addr, with prefix,
// the feed tests' lease and backend options.
func feedRegion(t testing.TB, addr, prefix string, opts ...redisbackend.Option) *region.Region {
	r := sharedRegion(t, newBackend(t, newRedisClient(t, addr), prefix, opts...), region.WithInvalidationLease(feedLease))
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// childFeedDier commits item 1 = $CROSSPROC_PHASE through the plugin with
// its Redis backend wrapped in a trapBackend (death_test.go): it reports
// "pre-done" once the pre-invalidation ran, commits on "commit", and is
// SIGKILLed in its post-commit invalidation ("post-incr").
func childFeedDier(t *testing.T) {
	value, err := strconv.ParseInt(os.Getenv(envPhase), 10, 64)
	childMust(t, err)
	db, _ := childDB(t)
	be := &trapBackend{Backend: newBackend(t, childRedis(t), os.Getenv(envPrefix)), t: t}
	r := sharedRegion(t, be, region.WithInvalidationLease(feedLease))
	usePlugin(t, db, r)
	say("ready")
	awaitLine(t, "go")
	be.armed.Store(true)
	err = db.Transaction(func(tx *gorm.DB) error {
		return tx.Model(&Item{}).Where("id = ?", 1).Update("value", value).Error
	})
	say("error transaction returned (%v): the post-commit invalidation was not trapped", err)
}

// childFeedCutWriter commits item 1 = $CROSSPROC_PHASE through the plugin,
// on "write", with a Redis backend that reaches Redis through the parent's
// cut proxy (CROSSPROC_REDIS is the proxy) and gives up after 200 ms: both
// invalidation phases fail, the commit proceeds. It says "committed" and
// waits to be killed.
func childFeedCutWriter(t *testing.T) {
	value, err := strconv.ParseInt(os.Getenv(envPhase), 10, 64)
	childMust(t, err)
	db, _ := childDB(t)
	r := feedRegion(t, os.Getenv(envRedis), os.Getenv(envPrefix), redisbackend.WithTimeout(200*time.Millisecond))
	usePlugin(t, db, r)
	say("ready")
	awaitLine(t, "write")
	childMust(t, db.Transaction(func(tx *gorm.DB) error {
		return tx.Model(&Item{}).Where("id = ?", 1).Update("value", value).Error
	}))
	say("committed %d", r.Stats().Errors)
	awaitLine(t, "exit")
}

// feedReader is the reading process of a feed test (the test process):
// its database, its region over Redis, its listener (nil: no feed).
type feedReader struct {
	t   *testing.T
	db  *gorm.DB
	r   *region.Region
	l   *dogpile.Listener
	env []string // what a writer child needs, besides its phase
}

// newFeedReader makes the database (item 1 = 0, with the feed's triggers),
// the reader's plugin over Redis and, with feed, its listener.
func newFeedReader(t *testing.T, feed bool) *feedReader {
	srv := testharness.SharedRedis(t)
	prefix := uniquePrefix(t)
	dsn := newPostgresDB(t, 0)
	db, _ := openPostgres(t, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	must(t, dogpile.InstallPostgresTriggers(ctx, db))
	fr := &feedReader{t: t, db: db, r: feedRegion(t, srv.Addr, prefix),
		env: []string{envPG + "=" + dsn, envRedis + "=" + srv.Addr, envPrefix + "=" + prefix}}
	usePlugin(t, db, fr.r)
	if feed {
		l, err := dogpile.ListenPostgres(ctx, db)
		must(t, err)
		t.Cleanup(func() { _ = l.Close() })
		fr.l = l
	}
	return fr
}

// read reads item 1 through the cache.
func (fr *feedReader) read() int64 {
	fr.t.Helper()
	v, err := cachedValue(fr.db)
	must(fr.t, err)
	return v
}

// prime fills the reader's entry: two reads, the second a hit.
func (fr *feedReader) prime(want int64) {
	fr.t.Helper()
	regens := fr.r.Stats().Regenerations
	if v := fr.read(); v != want {
		fr.t.Fatalf("cached value %d before the write; want %d", v, want)
	}
	if v := fr.read(); v != want {
		fr.t.Fatalf("cached value %d on the second read; want %d", v, want)
	}
	if n := fr.r.Stats().Regenerations - regens; n > 1 {
		fr.t.Fatalf("priming ran the creator %d times; want at most 1", n)
	}
}

// afterCommit checks the reads once the write of want committed (at
// committed, or earlier): with the feed, polls until fresh and returns the
// latency (failing after feedBound); without it, checks that every read for
// feedStaleWindow returns old, and returns 0.
func (fr *feedReader) afterCommit(committed time.Time, old, want int64) time.Duration {
	fr.t.Helper()
	if fr.l == nil {
		n := 0
		for time.Since(committed) < feedStaleWindow {
			if v := fr.read(); v != old {
				fr.t.Fatalf("without the feed, read %d %v after the commit; want the stale %d (the scenario did not leave the entry stale)", v, time.Since(committed), old)
			}
			n++
			time.Sleep(5 * time.Millisecond)
		}
		fr.t.Logf("without the feed: %d reads over %v after the commit, every one returned the stale %d (lease %v)", n, feedStaleWindow, old, feedLease)
		return 0
	}
	for {
		v := fr.read()
		if v == want {
			return time.Since(committed)
		}
		if v != old {
			fr.t.Fatalf("read %d; want %d or %d", v, old, want)
		}
		if time.Since(committed) > feedBound {
			fr.t.Fatalf("still stale (%d) %v after the commit of %d; listener %+v", v, feedBound, want, fr.l.Stats())
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// report logs the latencies of the trials and the listener's stats.
func (fr *feedReader) report(what string, lat []time.Duration) {
	fr.t.Helper()
	if len(lat) == 0 {
		return
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	fr.t.Logf("%s: %d trials, fresh read after the commit: p50 %v, p98 %v, max %v; listener %+v", what, len(s), at(0.5), at(0.98), s[len(s)-1], fr.l.Stats())
	if st := fr.l.Stats(); st.Disconnects != 0 || st.Malformed != 0 {
		fr.t.Errorf("listener counted failures: %+v", st)
	}
}

// TestFeedWriterKilledAfterCommit: a writer process pre-invalidates, the
// reader fills its entry from the old row meanwhile (it may live for the
// lease), the writer commits and is SIGKILLed before its post-commit
// invalidation. With a listener the reader serves the new value within
// milliseconds of the commit (bounded by feedBound); without one, the old
// value for the lease.
func TestFeedWriterKilledAfterCommit(t *testing.T) {
	for _, feed := range []bool{true, false} {
		name, trials := "feed", feedTrials
		if !feed {
			name, trials = "no feed", 1
		}
		t.Run(name, func(t *testing.T) {
			fr := newFeedReader(t, feed)
			var lat []time.Duration
			for i := int64(1); i <= int64(trials); i++ {
				fr.prime(i - 1)
				dier := startChild(t, "dier", "feeddier", append(fr.env, envPhase+"="+strconv.FormatInt(i, 10))...)
				dier.expect("ready")
				dier.send("go")
				dier.expect("pre-done")
				// The commit is in flight: the read misses and fills the
				// entry from the old row, under the writer's pending mark.
				if v := fr.read(); v != i-1 {
					t.Fatalf("read during the commit window: %d; want %d", v, i-1)
				}
				dier.send("commit")
				dier.expect("post-incr") // Commit returned
				committed := time.Now()
				// The writer is stuck in its post-commit invalidation, which
				// never completes; it is killed once the reads are checked
				// (killing it first only adds the kill's own time to the
				// figures: it invalidates nothing either way).
				lat = append(lat, fr.afterCommit(committed, i-1, i))
				dier.kill()
				if !feed {
					return
				}
			}
			fr.report("writer killed between its commit and its post-invalidation", lat)
		})
	}
}

// TestFeedWriterRedisCut: a writer process's Redis connection is
// black-holed (cut proxy) before it commits: its invalidations time out,
// the commit proceeds, and its region retries them in the writer only. With
// a listener the reader (its own Redis connection) serves the new value
// within milliseconds of the commit; without one, the old value until the
// entry expires.
func TestFeedWriterRedisCut(t *testing.T) {
	for _, feed := range []bool{true, false} {
		name, trials := "feed", feedTrials
		if !feed {
			name, trials = "no feed", 1
		}
		t.Run(name, func(t *testing.T) {
			fr := newFeedReader(t, feed)
			proxy := startCutProxy(t, testharness.SharedRedis(t).Addr)
			env := append(slices.Clone(fr.env), envRedis+"="+proxy.Addr()) // the last one wins
			var lat []time.Duration
			for i := int64(1); i <= int64(trials); i++ {
				fr.prime(i - 1)
				w := startChild(t, "writer", "feedcutwriter", append(env, envPhase+"="+strconv.FormatInt(i, 10))...)
				w.expect("ready")
				proxy.Cut()
				w.send("write")
				// The commit lands between the two timed-out phases: find
				// it in the database.
				deadline := time.Now().Add(eventually)
				for directValue(t, fr.db) != i {
					if time.Now().After(deadline) {
						t.Fatal("the writer's commit never landed")
					}
					time.Sleep(200 * time.Microsecond)
				}
				committed := time.Now()
				lat = append(lat, fr.afterCommit(committed, i-1, i))
				if errs := w.expect("committed"); errs == "0" {
					t.Fatalf("the writer's region counted no backend error: the cut did not reach it")
				}
				w.kill()
				proxy.Restore()
				if !feed {
					return
				}
			}
			fr.report("writer's Redis connection cut", lat)
		})
	}
}

// TestFeedListenerRedisCut: the listening process loses Redis (cut proxy)
// when a notification arrives: its claim and its invalidation fail, and it
// counts both (Stats). Its region keeps the invalidation, bypasses the
// table meanwhile (its own reads are fresh) and retries it: once Redis is
// reachable again, the invalidation lands, and a process that never had a
// listener (its own Redis connection, same region) reads the new value.
func TestFeedListenerRedisCut(t *testing.T) {
	srv := testharness.SharedRedis(t)
	prefix := uniquePrefix(t)
	dsn := newPostgresDB(t, 0)
	proxy := startCutProxy(t, srv.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()

	ldb, _ := openPostgres(t, dsn)
	must(t, dogpile.InstallPostgresTriggers(ctx, ldb))
	usePlugin(t, ldb, feedRegion(t, proxy.Addr(), prefix, redisbackend.WithTimeout(200*time.Millisecond)))
	l, err := dogpile.ListenPostgres(ctx, ldb)
	must(t, err)
	t.Cleanup(func() { _ = l.Close() })

	odb, _ := openPostgres(t, dsn)
	usePlugin(t, odb, feedRegion(t, srv.Addr, prefix))
	for range 2 {
		if v, err := cachedValue(odb); err != nil || v != 0 {
			t.Fatalf("priming: %d, %v; want 0", v, err)
		}
	}

	proxy.Cut()
	if _, err := testharness.SharedPostgres(t).Psql(ctx, dsn, "UPDATE items SET value = 1 WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(feedBound)
	for s := l.Stats(); s.ApplyErrors == 0 || s.ClaimErrors == 0; s = l.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("the listener counted no claim and apply errors while Redis was cut: %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
	s := l.Stats()
	t.Logf("while cut: %+v", s)
	if v, err := cachedValue(ldb); err != nil || v != 1 {
		t.Fatalf("the listening process read %d, %v while cut; want 1 (its region bypasses the table)", v, err)
	}
	if v, err := cachedValue(odb); err != nil || v != 0 {
		t.Fatalf("the other process read %d, %v while cut; want the stale 0 (nothing reached Redis)", v, err)
	}
	proxy.Restore()
	restored := time.Now()
	for {
		v, err := cachedValue(odb)
		must(t, err)
		if v == 1 {
			break
		}
		if time.Since(restored) > feedBound {
			t.Fatalf("the other process still reads %d %v after Redis came back: the retried invalidation never landed", v, feedBound)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("the retried invalidation landed %v after Redis came back; listener %+v", time.Since(restored), l.Stats())
}

// TestFeedListenerConnectionBlackholed: the listener's connection dies
// silently (a TCP proxy in front of PostgreSQL black-holes it: the server's
// side is closed, the listener's stays open and is never answered). The
// keep-alive ping notices it within feedKeepAlive + feedPingTimeout (15 s:
// this test takes that long); the listener connects again once the path is
// back, and the write committed meanwhile, whose notification was lost, is
// not served stale afterwards.
func TestFeedListenerConnectionBlackholed(t *testing.T) {
	dsn := newPostgresDB(t, 0)
	pg := testharness.SharedPostgres(t)
	proxy := startCutProxy(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(pg.Port)))
	_, port, err := net.SplitHostPort(proxy.Addr())
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	direct, _ := openPostgres(t, dsn)
	must(t, dogpile.InstallPostgresTriggers(ctx, direct))

	// The application reaches PostgreSQL through the proxy, and so does
	// its listener (the dialector's DSN); keyword DSNs keep the last port.
	db, err := gorm.Open(postgres.Open(dsn+" port="+port), &gorm.Config{Logger: logger.Discard})
	must(t, err)
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	r := region.New(memory.New(), region.WithName("default"), region.WithExpiration(10*time.Minute))
	t.Cleanup(func() { _ = r.Close() })
	usePlugin(t, db, r)
	l, err := dogpile.ListenPostgres(ctx, db)
	must(t, err)
	t.Cleanup(func() { _ = l.Close() })
	for range 2 {
		if v, err := cachedValue(db); err != nil || v != 0 {
			t.Fatalf("priming: %d, %v; want 0", v, err)
		}
	}

	proxy.Cut()
	cut := time.Now()
	if _, err := pg.Psql(ctx, dsn, "UPDATE items SET value = 1 WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	for l.Stats().Disconnects == 0 {
		if time.Since(cut) > 30*time.Second {
			t.Fatalf("the silent drop was not noticed within 30 s: %+v", l.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	noticed := time.Since(cut)
	proxy.Restore()
	for l.Stats().Reconnects == 0 {
		if time.Since(cut) > eventually {
			t.Fatalf("no reconnect: %+v", l.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("silent drop noticed after %v, listening again after %v: %+v", noticed, time.Since(cut), l.Stats())
	if v, err := cachedValue(db); err != nil || v != 1 {
		t.Fatalf("after the reconnect: %d, %v; want 1 (the write made while the connection was black-holed)", v, err)
	}
}
