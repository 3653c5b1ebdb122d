package crossproc

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// deathLease is the invalidation lease of every region in these tests.
const deathLease = 2 * time.Second

func init() { childRoles["dier"] = childDier }

// trapBackend stops a commit at chosen points of the invalidation protocol.
// Once armed, the pre-invalidation writes one pending marker per tag (":p:"
// keys, by SetMulti or SetIf) and then makes one Incr per tag. After the
// last pre Incr it reports "pre-done" and waits for "commit" on stdin; the
// first Incr after that (the post-commit invalidation) reports "post-incr"
// and never returns: the process is killed there.
type trapBackend struct {
	region.Backend
	t     *testing.T
	armed atomic.Bool
	mu    sync.Mutex
	marks map[string]bool // guarded by mu; pending markers written before the first Incr
	pre   atomic.Int64    // Incr calls of the pre-invalidation; 0 until it starts
	incrs atomic.Int64
}

func (b *trapBackend) mark(key string) {
	if !b.armed.Load() || b.pre.Load() != 0 || !strings.Contains(key, ":p:") {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.marks == nil {
		b.marks = make(map[string]bool)
	}
	b.marks[key] = true
}

func (b *trapBackend) SetMulti(ctx context.Context, items []region.Item) error {
	for _, it := range items {
		b.mark(it.Key)
	}
	return b.Backend.SetMulti(ctx, items)
}

func (b *trapBackend) SetIf(ctx context.Context, item region.Item, guards []region.Guard) (bool, error) {
	b.mark(item.Key)
	return b.Backend.SetIf(ctx, item, guards)
}

func (b *trapBackend) Incr(ctx context.Context, key string) (int64, error) {
	if !b.armed.Load() {
		return b.Backend.Incr(ctx, key)
	}
	b.mu.Lock()
	if b.pre.Load() == 0 {
		b.pre.Store(int64(len(b.marks)))
	}
	b.mu.Unlock()
	pre := b.pre.Load()
	if pre == 0 {
		say("error the commit made no pending marker before its first Incr")
		return b.Backend.Incr(ctx, key)
	}
	n := b.incrs.Add(1)
	switch {
	case n < pre:
		return b.Backend.Incr(ctx, key)
	case n == pre:
		v, err := b.Backend.Incr(ctx, key)
		say("pre-done")
		awaitLine(b.t, "commit")
		return v, err
	default:
		say("post-incr")
		time.Sleep(eventually) // "forever": the parent kills us first
		return 0, errors.New("trapBackend: not killed")
	}
}

// childDier commits item 1 = 2 through the plugin, with its Redis backend
// wrapped in a trapBackend: it is SIGKILLed between the commit and the
// post-commit invalidation.
func childDier(t *testing.T) {
	db, _ := childDB(t)
	be := &trapBackend{Backend: newBackend(t, childRedis(t), os.Getenv(envPrefix)), t: t}
	usePlugin(t, db, sharedRegion(t, be, region.WithInvalidationLease(deathLease)))
	say("ready")
	awaitLine(t, "go")
	be.armed.Store(true)
	err := db.Transaction(func(tx *gorm.DB) error {
		return tx.Model(&Item{}).Where("id = ?", 1).Update("value", 2).Error
	})
	say("error transaction returned (%v): the post-commit invalidation was not trapped", err)
}

// slowSQL reads item 1 and, while the row it sees still holds the old
// value 1, takes slowQuery to do it: PostgreSQL takes the statement's
// snapshot when it starts, so a commit made meanwhile is not seen.
const slowSQL = `SELECT items.id, items.name, items.value FROM items, LATERAL pg_sleep(CASE WHEN items.value = 1 THEN 3 ELSE 0 END) AS s WHERE items.id = 1`

// slowQuery is how long slowSQL sleeps on the old value: longer than the
// lease.
const slowQuery = 3 * time.Second

type timedRead struct {
	start time.Time
	value int64
}

// TestProcessDeathBetweenCommitAndInvalidation: a process commits a write
// and is SIGKILLed before its post-commit invalidation. An entry filled from
// the pre-commit data while the commit was in flight may be served for at
// most the invalidation lease: no read that starts later than the commit
// plus the lease returns the old value.
func TestProcessDeathBetweenCommitAndInvalidation(t *testing.T) {
	// SQLite: the filling read runs and stores while the commit is held
	// between its pre-invalidation and the commit itself.
	t.Run("FilledBeforeCommit", func(t *testing.T) { testDeath(t, false) })
	// PostgreSQL: the filling read takes its tag stamps and starts its
	// query before the commit, the commit lands while the query runs (its
	// snapshot predates the commit), and the old answer is stored after.
	t.Run("SlowQueryAcrossCommit", func(t *testing.T) {
		testDeath(t, true)
	})
}

func testDeath(t *testing.T, slow bool) {
	srv := testharness.SharedRedis(t)
	prefix := uniquePrefix(t)
	env := []string{envRedis + "=" + srv.Addr, envPrefix + "=" + prefix}
	var db *gorm.DB
	read := cachedValue
	if slow {
		dsn := newPostgresDB(t, 1)
		db, _ = openPostgres(t, dsn)
		env = append(env, envPG+"="+dsn)
		read = func(db *gorm.DB) (int64, error) {
			var it Item
			err := db.Scopes(dogpile.FromCache("default", dogpile.WithTables("items"))).Raw(slowSQL).Find(&it).Error
			return it.Value, err
		}
	} else {
		path := newSQLiteFile(t, 1)
		db, _ = openSQLite(t, path)
		env = append(env, envSQLite+"="+path)
	}
	r := sharedRegion(t, newBackend(t, newRedisClient(t, srv.Addr), prefix), region.WithInvalidationLease(deathLease))
	usePlugin(t, db, r)
	if v, err := read(db); err != nil || v != 1 {
		t.Fatalf("first read: %d, %v; want 1", v, err)
	}

	dier := startChild(t, "dier", "dier", env...)
	dier.expect("ready")
	dier.send("go")
	dier.expect("pre-done")

	// The commit is in flight: its tables are pending and bumped, the
	// transaction not yet committed. A read now misses, queries the old
	// data and fills the entry with it.
	regens := r.Stats().Regenerations
	type result struct {
		v   int64
		err error
	}
	filled := make(chan result, 1)
	go func() {
		v, err := read(db)
		filled <- result{v, err}
	}()
	waitFill := func() {
		t.Helper()
		select {
		case res := <-filled:
			if res.err != nil || res.v != 1 {
				t.Fatalf("read begun before the commit: %d, %v; want 1", res.v, res.err)
			}
		case <-time.After(eventually):
			t.Fatal("read begun before the commit did not return")
		}
		if n := r.Stats().Regenerations - regens; n != 1 {
			t.Fatalf("the read begun before the commit ran the creator %d times; want 1", n)
		}
	}
	if slow {
		waitSleeping(t, db)
	} else {
		waitFill()
	}

	dier.send("commit")
	dier.expect("post-incr") // Commit returned: the post-commit invalidation started
	if v := directValue(t, db); v != 2 {
		t.Fatalf("after the commit the database holds %d; want 2", v)
	}
	committed := time.Now() // no earlier than the commit
	dier.kill()
	if slow {
		waitFill()
	}

	leaseEnd := committed.Add(deathLease)
	until := leaseEnd.Add(time.Second)
	if slow {
		until = until.Add(slowQuery)
	}
	var reads []timedRead
	for time.Now().Before(until) {
		start := time.Now()
		v, err := read(db)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		reads = append(reads, timedRead{start, v})
		time.Sleep(20 * time.Millisecond)
	}
	stale, staleLate := 0, 0
	for _, rd := range reads {
		if rd.value == 2 {
			continue
		}
		if rd.value != 1 {
			t.Fatalf("read %d; want 1 or 2", rd.value)
		}
		stale++
		if rd.start.After(leaseEnd) {
			staleLate++
		}
	}
	t.Logf("%d reads after the commit: %d returned the old value, %d of them begun after commit + lease; stats %+v", len(reads), stale, staleLate, r.Stats())
	if staleLate > 0 {
		t.Errorf("%d reads begun more than the invalidation lease (%v) after the commit returned the old value", staleLate, deathLease)
	}
	if last := reads[len(reads)-1]; last.value != 2 {
		t.Errorf("last read (lease long over) returned %d; want 2", last.value)
	}
}

// waitSleeping waits until slowSQL is sleeping in another session: its
// snapshot is taken.
func waitSleeping(t *testing.T, db *gorm.DB) {
	t.Helper()
	sqlDB, err := db.DB()
	must(t, err)
	deadline := time.Now().Add(eventually)
	for {
		var n int
		// Sleeping in pg_sleep, not only active: a statement is reported
		// active from its Parse message, before Bind takes its snapshot, so
		// a commit made then would be seen by the read said to precede it.
		must(t, sqlDB.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND wait_event = 'PgSleep' AND pid <> pg_backend_pid() AND query LIKE '%LATERAL pg_sleep%'`).Scan(&n))
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow read never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
