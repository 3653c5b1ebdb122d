package crossproc

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

const (
	invWrites = 150 // commits made by the writer
	// One reading goroutine: this test is about processes; readers
	// joining an in-process flight are TestJoinedFlightAfterCommit's.
	invReaders = 1
)

func init() {
	childRoles["inv-writer"] = childInvWriter
	childRoles["inv-reader"] = childInvReader
}

func sharedRegion(_ testing.TB, be region.Backend, opts ...region.Option) *region.Region {
	return region.New(be, append([]region.Option{region.WithName("default"), region.WithExpiration(10 * time.Minute)}, opts...)...)
}

// childInvWriter commits invWrites transactions setting item 1 to 1, 2, …
// and records each value in Redis (prefix:committed) as soon as Commit
// returned.
func childInvWriter(t *testing.T) {
	prefix := os.Getenv(envPrefix)
	db, _ := openSQLite(t, os.Getenv(envSQLite))
	rc := childRedis(t)
	usePlugin(t, db, sharedRegion(t, newBackend(t, rc, prefix)))
	say("ready")
	awaitLine(t, "go")
	ctx := context.Background()
	for i := int64(1); i <= invWrites; i++ {
		err := db.Transaction(func(tx *gorm.DB) error {
			return tx.Model(&Item{}).Where("id = ?", 1).Update("value", i).Error
		})
		childMust(t, err)
		childMust(t, rc.Set(ctx, prefix+":committed", i, 0).Err())
	}
	say("written %d", invWrites)
}

// childInvReader reads item 1 through FromCache in a loop from invReaders
// goroutines until prefix:stop exists. Before each read it reads the last
// value the writer reported committed; the read must not return less.
func childInvReader(t *testing.T) {
	prefix := os.Getenv(envPrefix)
	db, pool := openSQLite(t, os.Getenv(envSQLite))
	rc := childRedis(t)
	r := sharedRegion(t, newBackend(t, rc, prefix))
	usePlugin(t, db, r)
	say("ready")
	awaitLine(t, "go")
	ctx := context.Background()
	var reads, violations atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range invReaders {
		wg.Go(func() {
			deadline := time.Now().Add(eventually)
			for !stop.Load() && time.Now().Before(deadline) {
				c, err := rc.Get(ctx, prefix+":committed").Int64()
				if errors.Is(err, goredis.Nil) {
					c, err = 0, nil
				}
				if err != nil {
					say("error get committed: %v", err)
					return
				}
				v, err := cachedValue(db)
				if err != nil {
					say("error read: %v", err)
					return
				}
				reads.Add(1)
				if v < c {
					violations.Add(1)
					say("violation read %d after commit of %d had returned", v, c)
				}
			}
		})
	}
	wg.Go(func() {
		_ = waitKey(ctx, rc, prefix+":stop")
		stop.Store(true)
	})
	wg.Wait()
	st := r.Stats()
	say("reads %d violations %d hits %d queries %d", reads.Load(), violations.Load(), st.Hits, pool.Queries())
}

// TestCrossProcessInvalidation: process A commits increasing values while
// process B reads through the cache; B never reads a value older than the
// last commit A had returned from before B's read began.
func TestCrossProcessInvalidation(t *testing.T) {
	srv := testharness.SharedRedis(t)
	rc := newRedisClient(t, srv.Addr)
	prefix := uniquePrefix(t)
	path := newSQLiteFile(t, 0)
	env := []string{envRedis + "=" + srv.Addr, envSQLite + "=" + path, envPrefix + "=" + prefix}
	writer := startChild(t, "writer", "inv-writer", env...)
	reader := startChild(t, "reader", "inv-reader", env...)
	writer.expect("ready")
	reader.expect("ready")
	reader.send("go")
	writer.send("go")
	writer.expect("written")
	writer.wait()
	must(t, rc.Set(context.Background(), prefix+":stop", "1", 0).Err())
	var violations []string
	var summary string
	for summary == "" {
		m := reader.next()
		switch {
		case strings.HasPrefix(m, "violation "):
			violations = append(violations, m)
		case strings.HasPrefix(m, "reads "):
			summary = m
		default:
			t.Fatalf("reader: unexpected message %q", m)
		}
	}
	reader.wait()
	t.Logf("reader: %s", summary)
	if len(violations) > 0 {
		t.Errorf("%d stale reads across processes, e.g. %q", len(violations), violations[0])
	}
	f := strings.Fields(summary) // reads N violations V hits H queries Q
	reads, _ := strconv.Atoi(f[1])
	hits, _ := strconv.Atoi(f[5])
	if reads == 0 || hits == 0 {
		t.Errorf("reader made %d reads with %d cache hits: the test did not exercise the cache", reads, hits)
	}
}
