package dbtest

import (
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
)

// The forced-cache mode. With DOGPILE_FORCE_CACHE=1 in the environment,
// every database this package opens puts FromCache on every query that
// does not already have it, and RelationshipCache on every path it
// preloads, in the first region (by name) of the plugin registered on it:
// the whole test suite then runs as a parity check of the cache against
// GORM. Databases without the plugin are left alone.
//
// Tests that by nature count or inspect the statements that reach the
// database opt out by name in forceOptOut, each with its reason.

// ForceEnv is the environment variable that turns the forced-cache mode on.
const ForceEnv = "DOGPILE_FORCE_CACHE"

// Forced reports whether the forced-cache mode is on.
func Forced() bool { return os.Getenv(ForceEnv) == "1" }

// forceOptOut lists the top-level tests that run as they are in the
// forced-cache mode, with the reason.
var forceOptOut = map[string]string{
	// It runs every case with and without FromCache on the same database
	// and counts the statements each run sends: a forced scope on its
	// "plain" run is the very thing it compares against.
	"TestParityMatrix": "compares runs with and without FromCache and counts their statements",
	// It counts the statements of each of its rounds.
	"TestParityKeySeparation": "counts the statements of each round",
	// These hold the one query they expect at a gate on the connection
	// pool and wait for it there; a forced scope on their setup reads
	// answers those from the cache, so the counts and the gate are off.
	"TestStampedeCold":                            "waits at a gate for exactly one query",
	"TestStampedeHotInvalidated":                  "waits at a gate for exactly one query",
	"TestInvWaiterJoinsFlightStartedBeforeCommit": "waits at a gate for exactly one query",
	"TestInvCacheBeforeCommitRace":                "counts the queries of a concurrent fill",
	// These change rows behind the plugin's back (a raw connection) and
	// read what the database now holds through the plugin's *gorm.DB
	// without FromCache: a forced scope would answer that read from the
	// cache they are testing.
	"TestStampedeExpiredServesStale": "reads the database's own state after a write behind the plugin's back",
	"TestInvLease":                   "reads the database's own state after a write behind the plugin's back",
	// These count the statements of queries cached by default, preloads and
	// unlisted tables among them, which a forced scope would cache.
	"TestDefaultModel":       "counts the statements of queries cached by default and of those that are not",
	"TestDefaultTables":      "counts the statements of queries cached by default and of those that are not",
	"TestShouldCacheDefault": "counts the statements of queries cached by default",
	// These check what is reported of a query without FromCache.
	"TestOutcomeOf":   "checks the outcome of queries without FromCache",
	"TestGORMLogLine": "checks the log line of queries without FromCache",
}

// The top-level tests of this test binary whose databases were opened in
// the forced-cache mode, and those that opted out.
var (
	forcedQueries, forcedPreloads atomic.Int64 // scopes the mode added

	forceMu     sync.Mutex
	forcedTests = map[string]bool{} // guarded by forceMu
	optedOut    = map[string]bool{} // guarded by forceMu
)

// forcedKey marks a statement whose scopes the forced mode added: preload
// statements copy their parent's settings, and learn from it that they are
// preloads, to which FromCache does not apply.
type forcedKey struct{}

// force registers the forced-cache callbacks on db for the test t, unless
// the mode is off or t opted out.
func force(t testing.TB, db *gorm.DB) {
	if !Forced() {
		return
	}
	top, _, _ := strings.Cut(t.Name(), "/")
	if _, out := forceOptOut[top]; out {
		noteForced(top, false)
		return
	}
	noteForced(top, true)
	cb := db.Callback().Query()
	Must(t, cb.Before("gorm:query").Register("dogpile_test:force", forceScopes))
	Must(t, cb.After("gorm:after_query").Register("dogpile_test:force_end", func(db *gorm.DB) {
		db.Statement.Settings.Delete(forcedKey{})
	}))
}

// forceScopes adds FromCache and RelationshipCache to a top-level query.
func forceScopes(db *gorm.DB) {
	if db.Error != nil {
		return
	}
	p, ok := db.Config.Plugins[dogpile.PluginName].(*dogpile.Plugin)
	if !ok {
		return
	}
	if _, preload := db.Statement.Settings.Load(forcedKey{}); preload {
		return
	}
	names := p.RegionNames()
	if len(names) == 0 {
		return
	}
	name := names[0]
	db.Statement.Settings.Store(forcedKey{}, true)
	_, optedOut := db.Statement.Clauses["dogpile:nocache"]
	if _, has := db.Statement.Clauses["dogpile:fromcache"]; !has && !optedOut && !cachedByModel(db) {
		dogpile.FromCache(name)(db)
		forcedQueries.Add(1)
	}
	if hasRelationshipCache(db) {
		return // the test chose its own
	}
	for path := range db.Statement.Preloads {
		parts := strings.Split(path, ".")
		for i := range parts {
			dogpile.RelationshipCache(strings.Join(parts[:i+1], "."), name)(db)
			forcedPreloads.Add(1)
		}
	}
}

func noteForced(test string, forced bool) {
	forceMu.Lock()
	defer forceMu.Unlock()
	if forced {
		forcedTests[test] = true
	} else {
		optedOut[test] = true
	}
}

// hasRelationshipCache reports a statement with a RelationshipCache scope
// of its own (whose setting's key type is unexported: found by name).
func hasRelationshipCache(db *gorm.DB) bool {
	found := false
	db.Statement.Settings.Range(func(k, _ any) bool {
		found = fmt.Sprintf("%T", k) == "dogpile.relCacheKey"
		return !found
	})
	return found
}

// ForceReport says how the forced-cache mode ran in this test binary, or ""
// when it is off.
func ForceReport() string {
	if !Forced() {
		return ""
	}
	forceMu.Lock()
	defer forceMu.Unlock()
	var out []string
	for name := range optedOut {
		out = append(out, name)
	}
	sort.Strings(out)
	return fmt.Sprintf("forced-cache mode: %d top-level tests opened databases with FromCache and RelationshipCache forced (%d FromCache and %d RelationshipCache scopes added); %d opted out: %s",
		len(forcedTests), forcedQueries.Load(), forcedPreloads.Load(), len(out), strings.Join(out, ", "))
}

// cachedByModel reports a statement whose model asks for a cache region
// itself (dogpile.CacheRegioner): the plugin caches it by default, as the
// test that made it wants.
func cachedByModel(db *gorm.DB) bool {
	m := db.Statement.Model
	if m == nil {
		m = db.Statement.Dest
	}
	if m == nil {
		return false
	}
	t := reflect.TypeOf(m)
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		t = t.Elem()
	}
	cr := reflect.TypeFor[dogpile.CacheRegioner]()
	return t.Implements(cr) || reflect.PointerTo(t).Implements(cr)
}
