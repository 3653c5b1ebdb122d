package dogpile_test

// Stampede tests, counted at the database with the counting pool: a cold or
// invalidated hot query reaches the database once however many goroutines
// ask; an expired one is regenerated once while every other caller gets the
// stale answer at once; a caller that gives up never cancels the query the
// others wait on.
//
// To make "at the same time" exact rather than likely, the region's backend
// holds the store of the new entry (invGate) until every goroutine has been
// counted as waiting (Stats.LockWaits) or has returned: no goroutine can
// arrive after the value landed and be served from the cache instead.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
	"github.com/dogpile-go/dogpile/region/regiontest"
)

// invWaitFor polls cond until it holds (a condition wait with a deadlock
// guard, not a timing assertion).
func invWaitFor(t *testing.T, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(invDeadlockGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (%s)", what, state())
		}
		time.Sleep(time.Millisecond)
	}
}

// invStampede runs n goroutines of q through the cache, released together,
// while the backend holds the store of the answer until all but the leader
// wait on it. It returns the answers.
func invStampede(t *testing.T, db *dbtest.DB, r *region.Region, g *invGate, n int, q invQuery) []string {
	t.Helper()
	base := r.Stats().LockWaits
	g.armed.Store(true)
	g.release = make(chan struct{})
	start := make(chan struct{})
	out := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = q(t, invCached(db))
		}()
	}
	close(start)
	state := func() string {
		return fmt.Sprintf("queries %d, stats %+v", db.Pool.Queries(), r.Stats())
	}
	invWait(t, g.entered, "the leader's store")
	invWaitFor(t, fmt.Sprintf("%d waiters", n-1), func() bool { return r.Stats().LockWaits-base >= int64(n-1) }, state)
	g.armed.Store(false)
	close(g.release)
	wg.Wait()
	return out
}

func invSame(t *testing.T, out []string, want string) {
	t.Helper()
	for i, s := range out {
		if s != want {
			t.Fatalf("goroutine %d got %q; want %q", i, s, want)
		}
	}
}

func TestStampedeCold(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		g := newInvGate()
		r := invOpenBackend(t, db, g)
		invSeed(t, db, "cold")
		want := invUsersQ(t, db.DB)
		db.Pool.Reset()
		out := invStampede(t, db, r, g, 200, invUsersQ)
		if n := db.Pool.Queries(); n != 1 {
			t.Errorf("200 goroutines on a cold query: %d queries; want 1", n)
		}
		invSame(t, out, want)
		invHit(t, db, invUsersQ, want)
	})
}

func TestStampedeHotInvalidated(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		g := newInvGate()
		r := invOpenBackend(t, db, g)
		a, _ := invSeed(t, db, "hot")
		before := invUsersQ(t, invCached(db))
		invHit(t, db, invUsersQ, before)
		dbtest.Must(t, db.Model(&a).Update("name", "hot-new").Error)
		want := invUsersQ(t, db.DB)
		db.Pool.Reset()
		out := invStampede(t, db, r, g, 200, invUsersQ)
		if n := db.Pool.Queries(); n != 1 {
			t.Errorf("200 goroutines on an invalidated hot query: %d queries; want 1", n)
		}
		invSame(t, out, want)
	})
}

// TestStampedeExpiredServesStale: the leader's regeneration is held before it
// stores; the 99 others must all return (with the stale answer) while it is
// held, which proves they did not wait for it.
func TestStampedeExpiredServesStale(t *testing.T) {
	const n = 100
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		clock := regiontest.NewClock()
		g := newInvGate()
		// The lease is longer than the clock moves: the pending markers the
		// seed's writes left (they outlive the writes, see
		// TestInvLeaseOnlyCoversCommitWindow) must not kill the entry first.
		r := invOpenBackend(t, db, g, region.WithExpiration(time.Minute), region.WithClock(clock.Now),
			region.WithInvalidationLease(time.Hour))
		invSeed(t, db, "expired")
		old := invUsersQ(t, invCached(db))
		invHit(t, db, invUsersQ, old)
		// Change the data behind the plugin's back, so a stale answer is
		// told apart from a fresh one; then let the entry expire.
		_, err := db.Pool.DB.Exec("UPDATE inv_users SET age = age + 1")
		dbtest.Must(t, err)
		fresh := invUsersQ(t, db.DB)
		clock.Advance(2 * time.Minute)

		base := r.Stats()
		db.Pool.Reset()
		g.armed.Store(true)
		start := make(chan struct{})
		results := make(chan string, n)
		for range n {
			go func() {
				<-start
				results <- invUsersQ(t, invCached(db))
			}()
		}
		close(start)
		invWait(t, g.entered, "the regeneration's store")
		stale := 0
		for i := range n - 1 {
			var got string
			select {
			case got = <-results:
			case <-time.After(invDeadlockGuard):
				g.armed.Store(false)
				close(g.release)
				t.Fatalf("timed out waiting for answer %d of %d while the regeneration is held (did callers wait on it?): queries %d, stats %+v",
					i+1, n-1, db.Pool.Queries(), r.Stats())
			}
			if got == old {
				stale++
			} else {
				t.Errorf("a caller got %q during the regeneration; want the stale %q", got, old)
			}
		}
		g.armed.Store(false)
		close(g.release)
		if got := invWait(t, results, "the regenerating caller"); got != fresh {
			t.Errorf("the regenerating caller got %q; want %q", got, fresh)
		}
		st := r.Stats()
		if q := db.Pool.Queries(); q != 1 {
			t.Errorf("expired entry with %d goroutines: %d queries; want 1", n, q)
		}
		if d := st.StaleServed - base.StaleServed; d != n-1 {
			t.Errorf("StaleServed = %d; want %d", d, n-1)
		}
		if stale != n-1 {
			t.Errorf("%d callers got the stale answer; want %d", stale, n-1)
		}
		invHit(t, db, invUsersQ, fresh)
	})
}

// TestStampedeCancelledLeader: the caller whose query runs gives up (its
// context is cancelled) while the query is in progress; a caller waiting on
// the same query still gets the answer, and the database was queried once.
// On PostgreSQL the query is held at the server by a table lock taken on
// another connection; on SQLite (whose readers never block) the answer's
// store is held instead.
func TestStampedeCancelledLeader(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		g := newInvGate()
		r := invOpenBackend(t, db, g)
		invSeed(t, db, "cancel")
		q := func(t *testing.T, tx *gorm.DB) (string, error) {
			var us []invUser
			err := tx.Scopes(dogpile.FromCache("default", dogpile.WithTables("inv_users"))).
				Raw("SELECT id, name, age FROM inv_users WHERE deleted_at IS NULL ORDER BY id").Find(&us).Error
			return invUsersString(us), err
		}
		want := invUsersQ(t, db.DB)
		state := func() string { return fmt.Sprintf("queries %d, stats %+v", db.Pool.Queries(), r.Stats()) }

		var release func()
		ctx := context.Background()
		if db.Dialect == "postgres" {
			conn, err := db.Pool.DB.Conn(ctx)
			dbtest.Must(t, err)
			defer conn.Close()
			lockTx, err := conn.BeginTx(ctx, nil)
			dbtest.Must(t, err)
			_, err = lockTx.Exec("LOCK TABLE inv_users IN ACCESS EXCLUSIVE MODE")
			dbtest.Must(t, err)
			release = func() { _ = lockTx.Rollback() }
		} else {
			g.armed.Store(true)
			release = func() { g.armed.Store(false); close(g.release) }
		}
		defer func() {
			if release != nil {
				release()
			}
		}()

		db.Pool.Reset()
		leaderCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		leaderErr := make(chan error, 1)
		go func() {
			_, err := q(t, db.WithContext(leaderCtx))
			leaderErr <- err
		}()
		if db.Dialect == "postgres" {
			invWaitFor(t, "the leader's query to block on the table lock", func() bool {
				var waiting int
				_ = db.Pool.DB.QueryRow(`SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FROM inv_users%'`).Scan(&waiting)
				return waiting > 0
			}, state)
		} else {
			invWait(t, g.entered, "the leader's store")
		}
		waiterOut := make(chan string, 1)
		waiterErr := make(chan error, 1)
		go func() {
			s, err := q(t, db.WithContext(ctx))
			waiterOut <- s
			waiterErr <- err
		}()
		invWaitFor(t, "the second caller to wait", func() bool { return r.Stats().LockWaits >= 1 }, state)
		cancel()
		if err := invWait(t, leaderErr, "the cancelled leader"); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled leader returned %v; want context.Canceled", err)
		}
		release()
		release = nil
		got := invWait(t, waiterOut, "the waiter")
		if err := <-waiterErr; err != nil {
			t.Fatalf("waiter failed after the leader was cancelled: %v", err)
		}
		if got != want {
			t.Errorf("waiter got %q; want %q", got, want)
		}
		if n := db.Pool.Queries(); n != 1 {
			t.Errorf("%d queries; want 1 (the leader's, shared)", n)
		}
	})
}

// invDeadlockGuard bounds every wait of these tests: far beyond what any of
// them needs, it only turns a deadlock into a failure.
var invDeadlockGuard = 10 * time.Second
