package crossproc

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/internal/testharness"
)

// TestRedisKilledMidWorkload: 16 goroutines mix cached reads and committed
// writes on PostgreSQL while Redis is killed and later restarted. No caller
// gets an error, no read returns less than the last value committed before
// it began, and once Redis is back caching resumes by itself.
func TestRedisKilledMidWorkload(t *testing.T) {
	srv := testharness.Redis(t)
	dsn := newPostgresDB(t, 0)
	db, pool := openPostgres(t, dsn)
	be := newBackend(t, newRedisClient(t, srv.Addr), uniquePrefix(t),
		redisbackend.WithTimeout(200*time.Millisecond), redisbackend.WithBreaker(3, 300*time.Millisecond))
	r := sharedRegion(t, be)
	usePlugin(t, db, r)

	const writers, readers = 4, 12
	var (
		committed atomic.Int64 // highest value whose commit returned
		phase     atomic.Int32 // 0 up, 1 killed, 2 restarted
		stop      atomic.Bool
		mu        sync.Mutex
		problems  []string
		reads     [3]atomic.Int64
		stale     [3]atomic.Int64 // reads that returned less than a value committed before they began
		writes    [3]atomic.Int64
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf("phase %d: ", phase.Load())+fmt.Sprintf(format, args...))
		}
	}
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for !stop.Load() {
				var v int64
				err := db.Transaction(func(tx *gorm.DB) error {
					if err := tx.Model(&Item{}).Where("id = ?", 1).Update("value", gorm.Expr("value + 1")).Error; err != nil {
						return err
					}
					var it Item
					if err := tx.First(&it, 1).Error; err != nil {
						return err
					}
					v = it.Value
					return nil
				})
				if err != nil {
					report("write: %v", err)
					continue
				}
				for {
					c := committed.Load()
					if v <= c || committed.CompareAndSwap(c, v) {
						break
					}
				}
				writes[phase.Load()].Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	for range readers {
		wg.Go(func() {
			for !stop.Load() {
				c := committed.Load()
				v, err := cachedValue(db)
				switch {
				case err != nil:
					report("read: %v", err)
				case v < c:
					if stale[phase.Load()].Add(1) == 1 {
						t.Logf("phase %d: read %d after the commit of %d had returned", phase.Load(), v, c)
					}
				}
				reads[phase.Load()].Add(1)
			}
		})
	}

	time.Sleep(1500 * time.Millisecond)
	srv.Kill()
	phase.Store(1)
	time.Sleep(1500 * time.Millisecond)
	srv.Restart(t)
	phase.Store(2)
	time.Sleep(3 * time.Second)
	stop.Store(true)
	waitGroup(t, &wg)
	mu.Lock()
	for _, p := range problems {
		t.Error(p)
	}
	mu.Unlock()
	for i := range reads {
		t.Logf("phase %d: %d reads (%d stale), %d commits", i, reads[i].Load(), stale[i].Load(), writes[i].Load())
		if reads[i].Load() == 0 || writes[i].Load() == 0 {
			t.Errorf("phase %d had %d reads and %d commits: the workload stalled", i, reads[i].Load(), writes[i].Load())
		}
	}
	t.Logf("stats after the workload: %+v", r.Stats())
	t.Run("NoStaleRead", func(t *testing.T) {
		for i := range stale {
			if n := stale[i].Load(); n > 0 {
				t.Errorf("phase %d (0 up, 1 Redis killed, 2 restarted): %d reads returned less than a value whose commit had returned before they began", i, n)
			}
		}
	})

	// Caching resumes by itself: repeated identical reads become hits
	// and stop reaching the database, and they return the committed value.
	want := directValue(t, db)
	deadline := time.Now().Add(eventually)
	for {
		hits, queries := r.Stats().Hits, pool.Queries()
		const n = 20
		for range n {
			v, err := cachedValue(db)
			must(t, err)
			if v != want {
				t.Fatalf("after the restart a read returned %d; the database holds %d", v, want)
			}
		}
		if r.Stats().Hits-hits == n && pool.Queries() == queries {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("caching did not resume within %v after the restart: stats %+v", eventually, r.Stats())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("caching resumed: stats %+v", r.Stats())
}

// waitGroup waits for wg, failing the test after eventually.
func waitGroup(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(eventually):
		t.Fatalf("workload goroutines did not stop within %v", eventually)
	}
}
