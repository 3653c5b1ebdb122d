package crossproc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	filebackend "github.com/dogpile-go/dogpile/backends/file"
	"github.com/dogpile-go/dogpile/region"
)

// envFileDir is the directory of the file backend the processes share.
const envFileDir = "CROSSPROC_FILEDIR"

func init() { childRoles["stampede-file"] = childStampedeFile }

// fileGatedBackend holds back the store of entries (SetIf of a ":k:" key)
// until the file gate exists, as gatedBackend does with a Redis key.
type fileGatedBackend struct {
	region.Backend
	gate string
}

func (g *fileGatedBackend) SetIf(ctx context.Context, item region.Item, guards []region.Guard) (bool, error) {
	if strings.Contains(item.Key, ":k:") {
		if err := waitFile(ctx, g.gate); err != nil {
			return false, err
		}
	}
	return g.Backend.SetIf(ctx, item, guards)
}

// waitFile polls until the file at path exists, or eventually passes.
func waitFile(ctx context.Context, path string) error {
	deadline := time.Now().Add(eventually)
	for {
		_, err := os.Stat(path)
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) || time.Now().After(deadline) {
			return fmt.Errorf("file %s did not appear within %v (last error %v)", path, eventually, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// gatePath is the gate file of the backend directory dir.
func gatePath(dir string) string { return filepath.Join(filepath.Dir(dir), "gate") }

// childStampedeFile is childStampede over the file backend in the
// directory the parent named: stampedeGoroutines FromCache reads of item 1
// released together, each answer reported, then the queries made. Phase
// "stale" gates the store of the regenerated entry.
func childStampedeFile(t *testing.T) {
	db, pool := openSQLite(t, os.Getenv(envSQLite))
	dir := os.Getenv(envFileDir)
	fb, err := filebackend.New(dir)
	childMust(t, err)
	t.Cleanup(func() { _ = fb.Close() })
	var be region.Backend = fb
	if os.Getenv(envPhase) == "stale" {
		be = &fileGatedBackend{Backend: fb, gate: gatePath(dir)}
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
	t.Logf("stats %+v, backend %+v", st, fb.Stats())
}

// fileStampedeRound is stampedeRound over the file backend in dir: it
// starts the children, releases them together and returns the answers
// they served and the queries they made in all. gate, if set, runs once
// wantBeforeGate answers arrived.
func fileStampedeRound(t *testing.T, dir, path, phase string, wantBeforeGate int, gate func()) (answers map[int64]int, queries int64) {
	t.Helper()
	kids := make([]*child, stampedeChildren)
	for i := range kids {
		kids[i] = startChild(t, phase+"-"+strconv.Itoa(i), "stampede-file",
			envFileDir+"="+dir, envSQLite+"="+path, envPhase+"="+phase)
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

// TestCrossProcessStampedeFile is TestCrossProcessStampede over the file
// backend: 4 processes × 50 goroutines ask for the same query at once,
// sharing one cache directory. Cold, the database sees exactly one query
// (the dogpile lock is a flock per key, across the processes). Expired,
// exactly one caller regenerates (and gets the new answer) while the 199
// others are served the old one at once.
func TestCrossProcessStampedeFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	path := newSQLiteFile(t, 100)
	parentDB, _ := openSQLite(t, path)

	answers, queries := fileStampedeRound(t, dir, path, "cold", 0, nil)
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
	answers, queries = fileStampedeRound(t, dir, path, "stale", total-1, func() {
		must(t, os.WriteFile(gatePath(dir), []byte("1"), 0o600))
	})
	t.Logf("expired stampede: answers %v, %d queries", answers, queries)
	if queries != 1 {
		t.Errorf("expired stampede: %d regeneration queries in all; want exactly 1", queries)
	}
	if answers[100] != total-1 || answers[200] != 1 {
		t.Errorf("expired stampede answers %v; want %d × 100 (stale) and 1 × 200 (the regenerator)", answers, total-1)
	}
}
