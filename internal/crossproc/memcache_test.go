package crossproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	memcachebackend "github.com/dogpile-go/dogpile/backends/memcache"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// envMemcache is the memcached address of a child process.
const envMemcache = "CROSSPROC_MEMCACHE"

func init() { childRoles["stampede-memcache"] = childStampedeMemcache }

// newMemcacheBackend returns a memcached backend with prefix, closed when t
// ends.
func newMemcacheBackend(t testing.TB, addr, prefix string) *memcachebackend.Backend {
	b, err := memcachebackend.Open([]string{addr}, memcachebackend.WithPrefix(prefix), memcachebackend.WithTimeout(2*time.Second))
	must(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// memcacheGatedBackend holds back the store of entries (SetIf of a ":k:"
// key) until the memcached key gate exists, as gatedBackend does over
// Redis.
type memcacheGatedBackend struct {
	region.Backend
	client *memcache.Client
	gate   string
}

func (g *memcacheGatedBackend) SetIf(ctx context.Context, item region.Item, guards []region.Guard) (bool, error) {
	if strings.Contains(item.Key, ":k:") {
		if err := waitMemcacheKey(ctx, g.client, g.gate); err != nil {
			return false, err
		}
	}
	return g.Backend.SetIf(ctx, item, guards)
}

// waitMemcacheKey polls until the memcached key exists, or eventually
// passes.
func waitMemcacheKey(ctx context.Context, c *memcache.Client, key string) error {
	deadline := time.Now().Add(eventually)
	for {
		_, err := c.Get(key)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("key %q did not appear within %v (last error %v)", key, eventually, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// childStampedeMemcache is childStampede over the memcached backend.
func childStampedeMemcache(t *testing.T) {
	prefix := os.Getenv(envPrefix)
	addr := os.Getenv(envMemcache)
	db, pool := openSQLite(t, os.Getenv(envSQLite))
	var be region.Backend = newMemcacheBackend(t, addr, prefix)
	if os.Getenv(envPhase) == "stale" {
		raw := memcache.New(addr)
		t.Cleanup(func() { _ = raw.Close() })
		be = &memcacheGatedBackend{Backend: be, client: raw, gate: prefix + ":gate"}
	}
	r := region.New(be, region.WithName("default"),
		region.WithExpiration(stampedeExpiration), region.WithStaleTTL(10*time.Minute))
	t.Cleanup(func() { _ = r.Close() })
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

// memcacheStampedeRound is stampedeRound with children over memcached.
func memcacheStampedeRound(t *testing.T, addr, path, prefix, phase string, wantBeforeGate int, gate func()) (answers map[int64]int, queries int64) {
	t.Helper()
	kids := make([]*child, stampedeChildren)
	for i := range kids {
		kids[i] = startChild(t, phase+"-"+strconv.Itoa(i), "stampede-memcache",
			envMemcache+"="+addr, envSQLite+"="+path, envPrefix+"="+prefix, envPhase+"="+phase)
	}
	for _, k := range kids {
		k.expect("ready")
	}
	for _, k := range kids {
		k.send("go")
	}
	answers = make(map[int64]int)
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

// TestCrossProcessStampedeMemcache is TestCrossProcessStampede over
// memcached: 4 processes × 50 goroutines ask for the same query at once.
// Cold, the database sees exactly one query (the lock is memcached's add).
// Expired, exactly one caller regenerates (and gets the new answer) while
// the 199 others are served the old one at once.
func TestCrossProcessStampedeMemcache(t *testing.T) {
	srv := testharness.Memcached(t)
	raw := memcache.New(srv.Addr)
	t.Cleanup(func() { _ = raw.Close() })
	prefix := uniquePrefix(t)
	path := newSQLiteFile(t, 100)
	parentDB, _ := openSQLite(t, path)

	answers, queries := memcacheStampedeRound(t, srv.Addr, path, prefix, "cold", 0, nil)
	coldDone := time.Now()
	t.Logf("cold stampede: answers %v, %d queries", answers, queries)
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
	answers, queries = memcacheStampedeRound(t, srv.Addr, path, prefix, "stale", total-1, func() {
		err := raw.Set(&memcache.Item{Key: prefix + ":gate", Value: []byte("1")})
		if err != nil && !errors.Is(err, memcache.ErrNotStored) {
			t.Fatal(err)
		}
	})
	t.Logf("expired stampede: answers %v, %d queries", answers, queries)
	if queries != 1 {
		t.Errorf("expired stampede: %d regeneration queries in all; want exactly 1", queries)
	}
	if answers[100] != total-1 || answers[200] != 1 {
		t.Errorf("expired stampede answers %v; want %d × 100 (stale) and 1 × 200 (the regenerator)", answers, total-1)
	}
}
