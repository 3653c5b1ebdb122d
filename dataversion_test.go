package dogpile

// Tests of WithDataVersionCheck (dataversion.go) inside one process: the
// plugin's read-only connection sees commits of other connections, a check
// that finds a change makes the entries misses before the read that ran it
// is answered, checks run at most once per interval under concurrent
// readers, a failed check counts as a change, and the options db.Use
// refuses. The commits come from a plain *sql.DB over the same file (no
// plugin), which to SQLite is any other connection, as another process's
// is; internal/crossproc/dataversion_test.go writes from another process
// and measures freshness.
//
// These tests cannot use internal/dbtest (it imports this package). Where
// a test needs the interval elapsed, it ages the watch's last check
// (dvDue) rather than sleeping, so that counts are exact.

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/countpool"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

type DvUser struct {
	ID    uint
	Name  string
	Value int64
	Posts []DvPost
}

type DvPost struct {
	ID       uint
	DvUserID uint
	Title    string
}

// dvDB is a SQLite file with the plugin (check on) and a plain handle to
// the same file for writes the plugin does not see.
type dvDB struct {
	*gorm.DB
	pool  *countpool.Pool
	p     *Plugin
	w     *dataVersionWatch
	other *sql.DB // plain database/sql, no plugin
	path  string
}

// dvOpen opens a new SQLite file with DSN params, the plugin over a memory
// region with WithDataVersionCheck(every), and one user (ID 1, Value 1)
// with two posts.
func dvOpen(t testing.TB, params string, every time.Duration, opts ...PluginOption) *dvDB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dv.db")
	sqlDB, err := sql.Open("sqlite3", "file:"+path+"?"+params)
	pinMust(t, err)
	t.Cleanup(func() { _ = sqlDB.Close() })
	pool := &countpool.Pool{DB: sqlDB}
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: pool}), &gorm.Config{Logger: logger.Discard})
	pinMust(t, err)
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	t.Cleanup(func() { _ = r.Close() })
	p := New(map[string]*region.Region{"default": r}, append([]PluginOption{WithDataVersionCheck(every)}, opts...)...)
	pinMust(t, db.Use(p))
	if p.dv == nil {
		t.Fatal("WithDataVersionCheck on a SQLite file: no watch")
	}
	pinMust(t, db.AutoMigrate(&DvUser{}, &DvPost{}))
	pinMust(t, db.Create(&DvUser{ID: 1, Name: "one", Value: 1, Posts: []DvPost{{Title: "a"}, {Title: "b"}}}).Error)
	other, err := sql.Open("sqlite3", "file:"+path+"?"+params)
	pinMust(t, err)
	t.Cleanup(func() { _ = other.Close() })
	return &dvDB{DB: db, pool: pool, p: p, w: p.dv, other: other, path: path}
}

// dvDue makes the interval look elapsed since the last check, so that the
// next read runs one. No check may be running.
func dvDue(w *dataVersionWatch) {
	w.claimed.Add(-w.every)
	w.done.Add(-w.every)
}

// cachedValue reads user 1's Value through FromCache.
func (d *dvDB) cachedValue(t testing.TB) int64 {
	t.Helper()
	var u DvUser
	pinMust(t, d.Scopes(FromCache("default")).First(&u, 1).Error)
	return u.Value
}

// queries returns how many queries reached the database during fn.
func (d *dvDB) queries(fn func()) int64 {
	before := d.pool.Queries()
	fn()
	return d.pool.Queries() - before
}

// settle runs one check and read so that the plugin's own setup writes are
// behind it, and returns the counters after it.
func (d *dvDB) settle(t testing.TB) dataVersionCounts {
	t.Helper()
	dvDue(d.w)
	d.cachedValue(t)
	return d.w.snapshot()
}

func dvWant(t testing.TB, got, base dataVersionCounts, checks, changes, wipes, errs int64) {
	t.Helper()
	if got.Checks-base.Checks != checks || got.Changes-base.Changes != changes || got.Wipes-base.Wipes != wipes || got.Errors-base.Errors != errs {
		t.Errorf("checks/changes/wipes/errors: %d/%d/%d/%d; want %d/%d/%d/%d (counters %+v)",
			got.Checks-base.Checks, got.Changes-base.Changes, got.Wipes-base.Wipes, got.Errors-base.Errors,
			checks, changes, wipes, errs, got)
	}
}

// The plugin's connection is read-only (mode=ro) and its data_version
// follows the commits of other connections, under a WAL and under a
// rollback journal.
func TestDataVersionReadOnlyHandle(t *testing.T) {
	for _, mode := range []string{"WAL", "DELETE"} {
		t.Run(mode, func(t *testing.T) {
			d := dvOpen(t, "_journal_mode="+mode+"&_busy_timeout=10000", time.Hour)
			ctx := context.Background()
			w := d.w
			w.mu.Lock()
			defer w.mu.Unlock()
			if _, err := w.read(ctx); err != nil { // after the setup's commits
				t.Fatal(err)
			}
			if changed, err := w.read(ctx); err != nil || changed {
				t.Fatalf("no commit in between: changed %v, err %v; want false, nil", changed, err)
			}
			_, err := d.other.Exec("UPDATE dv_users SET value = 2 WHERE id = 1")
			pinMust(t, err)
			if changed, err := w.read(ctx); err != nil || !changed {
				t.Fatalf("after another connection's commit: changed %v, err %v; want true, nil", changed, err)
			}
			if changed, err := w.read(ctx); err != nil || changed {
				t.Fatalf("read again: changed %v, err %v; want false, nil", changed, err)
			}
			if _, err := w.conn.ExecContext(ctx, "CREATE TABLE dv_nope (id INTEGER)"); err == nil || !strings.Contains(err.Error(), "readonly") {
				t.Errorf("write on the plugin's connection: %v; want a readonly error", err)
			}
		})
	}
}

// The read that finds the interval elapsed checks, and when another
// connection committed, the entries are misses before its own answer: it
// reaches the database and reads the new value. Within the interval no
// check runs, and the stale entry is served (what the check bounds).
func TestDataVersionWipesBeforeServing(t *testing.T) {
	d := dvOpen(t, "_journal_mode=WAL&_busy_timeout=10000", time.Hour)
	base := d.settle(t)
	if q := d.queries(func() { d.cachedValue(t) }); q != 0 {
		t.Fatalf("hit: %d queries; want 0", q)
	}
	_, err := d.other.Exec("UPDATE dv_users SET value = 2 WHERE id = 1")
	pinMust(t, err)

	if v := d.cachedValue(t); v != 1 {
		t.Fatalf("within the interval: %d; want the cached 1 (no check yet)", v)
	}
	dvWant(t, d.w.snapshot(), base, 0, 0, 0, 0)

	dvDue(d.w)
	var v int64
	if q := d.queries(func() { v = d.cachedValue(t) }); q != 1 || v != 2 {
		t.Fatalf("the read that checks: value %d with %d queries; want 2 with 1", v, q)
	}
	dvWant(t, d.w.snapshot(), base, 1, 1, 1, 0)

	// Nothing committed since: the next check changes nothing.
	dvDue(d.w)
	if q := d.queries(func() { v = d.cachedValue(t) }); q != 0 || v != 2 {
		t.Fatalf("after a check that saw no change: value %d with %d queries; want 2 with 0", v, q)
	}
	dvWant(t, d.w.snapshot(), base, 2, 1, 1, 0)
}

// RelationshipCache entries are wiped too: preloads go through the same
// read path.
func TestDataVersionRelationshipCache(t *testing.T) {
	d := dvOpen(t, "_journal_mode=WAL&_busy_timeout=10000", time.Hour)
	d.settle(t)
	titles := func() string {
		var users []DvUser
		pinMust(t, d.Scopes(RelationshipCache("Posts", "default")).Preload("Posts").Order("id").Find(&users).Error)
		var s []string
		for _, p := range users[0].Posts {
			s = append(s, p.Title)
		}
		return strings.Join(s, ",")
	}
	titles() // fills the entry
	_, err := d.other.Exec("UPDATE dv_posts SET title = 'A' WHERE title = 'a'")
	pinMust(t, err)
	var got string
	// The users query has no FromCache: 1 query; the posts come from the entry.
	if q := d.queries(func() { got = titles() }); got != "a,b" || q != 1 {
		t.Fatalf("within the interval: %q with %d queries; want the cached a,b with 1", got, q)
	}
	dvDue(d.w)
	if q := d.queries(func() { got = titles() }); got != "A,b" || q != 2 {
		t.Fatalf("the read that checks: %q with %d queries; want A,b with 2", got, q)
	}
}

// data_version cannot tell the plugin's own commits from another
// process's: a write through the plugin makes the next check wipe
// everything, also the entries of tables the write did not touch (the cost
// WithDataVersionCheck's godoc states).
func TestDataVersionOwnCommitsWipe(t *testing.T) {
	d := dvOpen(t, "_journal_mode=WAL&_busy_timeout=10000", time.Hour)
	base := d.settle(t)
	var post DvPost
	pinMust(t, d.Scopes(FromCache("default")).First(&post, 1).Error)
	pinMust(t, d.Model(&DvUser{ID: 1}).Update("name", "uno").Error) // through the plugin
	dvDue(d.w)
	if q := d.queries(func() { pinMust(t, d.Scopes(FromCache("default")).First(&post, 1).Error) }); q != 1 {
		t.Errorf("an entry of another table after the plugin's own write and a check: %d queries; want 1 (wiped)", q)
	}
	dvWant(t, d.w.snapshot(), base, 1, 1, 1, 0)
}

// Under many concurrent readers of hits, checks run at most once per
// interval (a real interval, no clock of the test's own), and reads that
// find no commit are all hits.
func TestDataVersionOncePerInterval(t *testing.T) {
	const every = 5 * time.Millisecond
	d := dvOpen(t, "_journal_mode=WAL&_busy_timeout=10000", every)
	d.settle(t)
	base := d.w.snapshot()
	d.pool.Reset()
	const readers = 8
	run := 300 * time.Millisecond
	start := time.Now()
	var wg sync.WaitGroup
	var reads [readers]int
	for i := range readers {
		wg.Go(func() {
			for time.Since(start) < run {
				var u DvUser
				if err := d.Scopes(FromCache("default")).First(&u, 1).Error; err != nil || u.Value != 1 {
					t.Errorf("read: %v, value %d", err, u.Value)
					return
				}
				reads[i]++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	got := d.w.snapshot()
	checks := got.Checks - base.Checks
	limit := int64(elapsed/every) + 1
	total := 0
	for _, n := range reads {
		total += n
	}
	t.Logf("%d reads by %d goroutines in %v: %d checks (at most %d allowed), %d waits", total, readers, elapsed, checks, limit, got.Waits-base.Waits)
	if checks > limit || checks < 1 {
		t.Errorf("%d checks in %v at one per %v; want 1..%d", checks, elapsed, every, limit)
	}
	dvWant(t, got, base, checks, 0, 0, 0)
	if q := d.pool.Queries(); q != 0 {
		t.Errorf("%d queries reached the database; want 0 (no commit, every read a hit)", q)
	}
}

// Readers do not wait for a check another reader runs, unless the last
// completed check is older than 2×every: then they wait for it, and it is
// their answer's check. The check in flight is simulated by holding mu
// with the times a running check leaves.
func TestDataVersionReadersWaitOnlyPastBound(t *testing.T) {
	d := dvOpen(t, "_journal_mode=WAL&_busy_timeout=10000", time.Hour)
	d.settle(t)
	w := d.w
	for _, c := range []struct {
		name                string
		claimedAgo, doneAgo int64 // in tenths of the interval
		wait                bool
	}{
		{"checking, last completed within the interval", 0, 10, false},
		{"checking, last completed within twice the interval", 0, 19, false},
		{"checking, last completed longer ago", 0, 21, true},
		{"due, someone else checking, last recent", 10, 19, false},
		{"due, someone else checking, last old", 10, 21, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := w.snapshot()
			w.mu.Lock()
			now := w.now()
			w.claimed.Store(now - c.claimedAgo*w.every/10)
			w.done.Store(now - c.doneAgo*w.every/10)
			served := make(chan int64)
			go func() {
				var u DvUser
				_ = d.Scopes(FromCache("default")).First(&u, 1).Error
				served <- u.Value
			}()
			// How the check in flight ends: both times its start.
			end := func() {
				w.claimed.Store(now)
				w.done.Store(now)
				w.mu.Unlock()
			}
			if !c.wait {
				select {
				case <-served:
				case <-time.After(time.Minute):
					end()
					t.Fatal("the reader waited for the check in flight")
				}
				end()
			} else {
				deadline := time.Now().Add(time.Minute)
				for w.stats.waits.Load() == base.Waits {
					if time.Now().After(deadline) {
						end()
						t.Fatal("the reader did not wait")
					}
					time.Sleep(time.Millisecond)
				}
				select {
				case <-served:
					t.Error("served while the check it waits for runs")
				default:
				}
				end()
				<-served
			}
			if got := w.snapshot(); got.Checks != base.Checks {
				t.Errorf("%d checks ran; want none (one was in flight)", got.Checks-base.Checks)
			}
		})
	}
}

// A check that cannot read data_version counts as a change: a real
// SQLITE_BUSY (another connection holds a rollback journal's exclusive
// lock, and the plugin's connection does not wait), then a handle that is
// gone. Every read that checks is then a miss.
func TestDataVersionFailedCheckIsChange(t *testing.T) {
	t.Run("busy", func(t *testing.T) {
		d := dvOpen(t, "_journal_mode=DELETE&_busy_timeout=10000", time.Hour)
		base := d.settle(t)
		ctx := context.Background()
		c, err := d.other.Conn(ctx)
		pinMust(t, err)
		defer c.Close()
		_, err = c.ExecContext(ctx, "BEGIN EXCLUSIVE")
		pinMust(t, err)
		_, err = c.ExecContext(ctx, "UPDATE dv_users SET value = 2 WHERE id = 1")
		pinMust(t, err)
		dvDue(d.w)
		got := make(chan int64)
		go func() {
			var u DvUser
			err := d.Scopes(FromCache("default")).First(&u, 1).Error
			if err != nil {
				t.Errorf("read: %v", err)
			}
			got <- u.Value
		}()
		// The check fails at once; the read, now a miss, waits at the
		// database for the lock.
		deadline := time.Now().Add(time.Minute)
		for d.w.stats.errors.Load() == base.Errors && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		_, err = c.ExecContext(ctx, "COMMIT")
		pinMust(t, err)
		if v := <-got; v != 2 {
			t.Errorf("the read whose check failed: %d; want 2 from the database", v)
		}
		s := d.w.snapshot()
		dvWant(t, s, base, 1, 1, 1, 1)
		if s.LastErr == nil || !strings.Contains(s.LastErr.Error(), "locked") {
			t.Errorf("last error %v; want SQLite's database is locked", s.LastErr)
		}
		// The connection stays: its next value is compared with the last
		// one read, and the commit made after the failure is seen.
		dvDue(d.w)
		d.cachedValue(t)
		dvWant(t, d.w.snapshot(), base, 2, 2, 2, 1)
	})
	t.Run("handle closed", func(t *testing.T) {
		d := dvOpen(t, "_journal_mode=WAL&_busy_timeout=10000", time.Hour)
		base := d.settle(t)
		d.w.close()
		for i := range 3 {
			dvDue(d.w)
			if q := d.queries(func() { d.cachedValue(t) }); q != 1 {
				t.Errorf("read %d, its check failing: %d queries; want 1 (a miss)", i, q)
			}
		}
		s := d.w.snapshot()
		dvWant(t, s, base, 3, 3, 3, 3)
		if s.LastErr == nil || !strings.Contains(s.LastErr.Error(), "closed") {
			t.Errorf("last error %v; want the closed database's", s.LastErr)
		}
	})
}

// db.Use refuses WithDataVersionCheck on PostgreSQL and with a negative
// interval; an in-memory SQLite has nothing to check; 0 is off.
func TestDataVersionConfig(t *testing.T) {
	use := func(t *testing.T, d gorm.Dialector, every time.Duration) (*Plugin, error) {
		db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard})
		pinMust(t, err)
		p := New(map[string]*region.Region{"default": region.New(memory.New())}, WithDataVersionCheck(every))
		return p, db.Use(p)
	}
	sqliteAt := func(t *testing.T, dsn string) gorm.Dialector {
		sqlDB, err := sql.Open("sqlite3", dsn)
		pinMust(t, err)
		t.Cleanup(func() { _ = sqlDB.Close() })
		return sqlite.New(sqlite.Config{Conn: sqlDB})
	}
	file := func(t *testing.T) gorm.Dialector {
		return sqliteAt(t, "file:"+filepath.Join(t.TempDir(), "c.db"))
	}

	t.Run("postgres", func(t *testing.T) {
		sqlDB, err := sql.Open("pgx", testharness.SharedPostgres(t).NewDatabase(t))
		pinMust(t, err)
		t.Cleanup(func() { _ = sqlDB.Close() })
		_, err = use(t, postgres.New(postgres.Config{Conn: sqlDB}), 5*time.Millisecond)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "postgres") {
			t.Errorf("db.Use: %v; want ErrInvalidConfig naming the database", err)
		}
		if _, err := use(t, postgres.New(postgres.Config{Conn: sqlDB}), 0); err != nil {
			t.Errorf("off, on PostgreSQL: %v", err)
		}
	})
	t.Run("negative", func(t *testing.T) {
		if _, err := use(t, file(t), -time.Millisecond); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("db.Use: %v; want ErrInvalidConfig", err)
		}
	})
	t.Run("off", func(t *testing.T) {
		p, err := use(t, file(t), 0)
		if err != nil || p.dv != nil {
			t.Errorf("WithDataVersionCheck(0): err %v, watch %v; want nil, none", err, p.dv)
		}
	})
	for _, dsn := range []string{":memory:", "file:dvmem?mode=memory&cache=shared", ""} {
		t.Run("in memory "+dsn, func(t *testing.T) {
			p, err := use(t, sqliteAt(t, dsn), 5*time.Millisecond)
			if err != nil || p.dv != nil {
				t.Errorf("err %v, watch %v; want nil, none", err, p.dv)
			}
		})
	}
	t.Run("file with odd characters", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a dir%20#x")
		sqlDB, err := sql.Open("sqlite3", "file:"+strings.NewReplacer("%", "%25", "#", "%23").Replace(dir)+"?mode=rwc")
		pinMust(t, err)
		t.Cleanup(func() { _ = sqlDB.Close() })
		p, err := use(t, sqlite.New(sqlite.Config{Conn: sqlDB}), 5*time.Millisecond)
		if err != nil || p.dv == nil {
			t.Fatalf("err %v, watch %v; want nil, a watch", err, p.dv)
		}
		if p.dv.file != dir {
			t.Errorf("watching %q; want %q", p.dv.file, dir)
		}
	})
}

// The plugin's connection is closed once the plugin is garbage.
func TestDataVersionClosedWithPlugin(t *testing.T) {
	w := func() *dataVersionWatch {
		d := dvOpen(t, "_journal_mode=WAL&_busy_timeout=10000", time.Hour)
		if n := d.w.db.Stats().OpenConnections; n != 1 {
			t.Fatalf("the plugin's handle has %d connections open; want 1", n)
		}
		return d.w
	}()
	deadline := time.Now().Add(time.Minute)
	for w.db.Stats().OpenConnections != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the plugin's connection is still open a minute after the plugin was dropped")
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkDataVersionCheck: what checkDataVersion costs a read by itself.
// "not-due" is the read path within the interval (a clock read, two atomic
// loads); "check" runs one check each time (PRAGMA data_version on the
// plugin's connection, no change found): one check's duration, which the
// freshness adds to the interval; "every-1ms" is the read path with a real
// 1 ms interval, the checks shared by the reads of each interval.
func BenchmarkDataVersionCheck(b *testing.B) {
	ctx := context.Background()
	b.Run("not-due", func(b *testing.B) {
		d := dvOpen(b, "_journal_mode=WAL&_busy_timeout=10000", time.Hour)
		d.settle(b)
		b.ReportAllocs()
		for b.Loop() {
			d.p.checkDataVersion(ctx)
		}
		if c := d.w.snapshot(); c.Changes != 1 {
			b.Fatalf("counters %+v; want the setup's change only", c)
		}
	})
	b.Run("check", func(b *testing.B) {
		d := dvOpen(b, "_journal_mode=WAL&_busy_timeout=10000", time.Hour)
		base := d.settle(b)
		b.ReportAllocs()
		for b.Loop() {
			dvDue(d.w)
			d.p.checkDataVersion(ctx)
		}
		if c := d.w.snapshot(); c.Changes != base.Changes || c.Errors != 0 || c.Checks-base.Checks != int64(b.N) {
			b.Fatalf("counters %+v after %d checks; want no change, no error, one check each", c, b.N)
		}
	})
	b.Run("every-1ms", func(b *testing.B) {
		d := dvOpen(b, "_journal_mode=WAL&_busy_timeout=10000", time.Millisecond)
		d.settle(b)
		b.ReportAllocs()
		for b.Loop() {
			d.p.checkDataVersion(ctx)
		}
	})
}
