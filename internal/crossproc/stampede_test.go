package crossproc

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

const (
	stampedeChildren   = 4
	stampedeGoroutines = 50
	stampedeExpiration = time.Second
)

func init() { childRoles["stampede"] = childStampede }

// gatedBackend holds back the store of entries (SetIf of a ":k:" key) until
// the Redis key gate exists, so that the parent can collect every answer
// served while the one regeneration is in flight before it lands.
type gatedBackend struct {
	region.Backend
	client *goredis.Client
	gate   string
}

func (g *gatedBackend) SetIf(ctx context.Context, item region.Item, guards []region.Guard) (bool, error) {
	if strings.Contains(item.Key, ":k:") {
		if err := waitKey(ctx, g.client, g.gate); err != nil {
			return false, err
		}
	}
	return g.Backend.SetIf(ctx, item, guards)
}

// childStampede runs stampedeGoroutines FromCache reads of item 1 released
// together by a "go" line on stdin, reports each answer ("result V") as it
// comes, then the number of queries that reached the database.
// Phase "stale" gates the store of the regenerated entry (gatedBackend).
func childStampede(t *testing.T) {
	prefix := os.Getenv(envPrefix)
	db, pool := openSQLite(t, os.Getenv(envSQLite))
	rc := childRedis(t)
	var be region.Backend = newBackend(t, rc, prefix)
	if os.Getenv(envPhase) == "stale" {
		be = &gatedBackend{Backend: be, client: rc, gate: prefix + ":gate"}
	}
	r := region.New(be, region.WithName("default"),
		region.WithExpiration(stampedeExpiration), region.WithStaleTTL(10*time.Minute))
	usePlugin(t, db, r)
	pool.Reset()
	say("ready")
	awaitLine(t, "go")
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range stampedeGoroutines {
		wg.Go(func() {
			<-start
			v, err := cachedValue(db)
			if err != nil {
				say("error read: %v", err)
				return
			}
			say("result %d", v)
		})
	}
	close(start)
	wg.Wait()
	st := r.Stats()
	say("queries %d", pool.Queries())
	t.Logf("stats %+v", st)
}

// stampedeRound starts the children, releases them together and returns the
// answers they served and the queries they made in all. afterResults, if
// set, runs once want answers arrived and before the children's final
// reports are read.
func stampedeRound(t *testing.T, redisAddr, path, prefix, phase string, wantBeforeGate int, gate func()) (answers map[int64]int, queries int64) {
	t.Helper()
	kids := make([]*child, stampedeChildren)
	for i := range kids {
		kids[i] = startChild(t, phase+"-"+strconv.Itoa(i), "stampede",
			envRedis+"="+redisAddr, envSQLite+"="+path, envPrefix+"="+prefix, envPhase+"="+phase)
	}
	for _, k := range kids {
		k.expect("ready")
	}
	for _, k := range kids {
		k.send("go")
	}
	answers = make(map[int64]int)
	// Collect from all children concurrently.
	type msg struct {
		kid int
		m   string
	}
	merged := make(chan msg)
	done := make(chan struct{})
	defer close(done)
	for i, k := range kids {
		go func() {
			for m := range k.msgs {
				select {
				case merged <- msg{i, m}:
				case <-done:
					return
				}
			}
		}()
	}
	results, reported := 0, 0
	gated := gate == nil
	deadline := time.After(eventually)
	for reported < len(kids) {
		if !gated && results >= wantBeforeGate {
			gate()
			gated = true
		}
		select {
		case m := <-merged:
			switch {
			case strings.HasPrefix(m.m, "result "):
				v, err := strconv.ParseInt(strings.TrimPrefix(m.m, "result "), 10, 64)
				must(t, err)
				answers[v]++
				results++
			case strings.HasPrefix(m.m, "queries "):
				n, err := strconv.ParseInt(strings.TrimPrefix(m.m, "queries "), 10, 64)
				must(t, err)
				queries += n
				reported++
			default:
				t.Fatalf("child %s: %s", kids[m.kid].name, m.m)
			}
		case <-deadline:
			if !gated {
				gate()
				t.Fatalf("only %d answers of %d arrived before the regeneration was let through (answers %v): callers were not served the stale value at once", results, wantBeforeGate, answers)
			}
			t.Fatalf("children did not report within %v: %d answers, %d reports", eventually, results, reported)
		}
	}
	for _, k := range kids {
		k.wait()
	}
	if results != stampedeChildren*stampedeGoroutines {
		t.Fatalf("%d answers; want %d", results, stampedeChildren*stampedeGoroutines)
	}
	return answers, queries
}

// TestCrossProcessStampede: 4 processes × 50 goroutines ask for the same
// query at once. Cold, the database sees exactly one query. Expired, exactly
// one caller regenerates (and gets the new answer) while the 199 others are
// served the old one at once.
func TestCrossProcessStampede(t *testing.T) {
	srv := testharness.SharedRedis(t)
	rc := newRedisClient(t, srv.Addr)
	prefix := uniquePrefix(t)
	path := newSQLiteFile(t, 100)
	parentDB, _ := openSQLite(t, path)

	answers, queries := stampedeRound(t, srv.Addr, path, prefix, "cold", 0, nil)
	coldDone := time.Now()
	if queries != 1 {
		t.Errorf("cold stampede: %d queries reached the database in all; want exactly 1", queries)
	}
	if answers[100] != stampedeChildren*stampedeGoroutines {
		t.Errorf("cold stampede answers %v; want all 100", answers)
	}

	// Change the row behind the cache's back (no invalidation), so the
	// regenerated answer differs from the stale one, and let the entry
	// expire.
	sqlDB, err := parentDB.DB()
	must(t, err)
	_, err = sqlDB.Exec("UPDATE items SET value = 200 WHERE id = 1")
	must(t, err)
	time.Sleep(time.Until(coldDone.Add(stampedeExpiration + 500*time.Millisecond)))

	total := stampedeChildren * stampedeGoroutines
	answers, queries = stampedeRound(t, srv.Addr, path, prefix, "stale", total-1, func() {
		must(t, rc.Set(context.Background(), prefix+":gate", "1", 0).Err())
	})
	t.Logf("expired stampede: answers %v, %d queries", answers, queries)
	if queries != 1 {
		t.Errorf("expired stampede: %d regeneration queries in all; want exactly 1", queries)
	}
	if answers[100] != total-1 || answers[200] != 1 {
		t.Errorf("expired stampede answers %v; want %d × 100 (stale) and 1 × 200 (the regenerator)", answers, total-1)
	}
}
