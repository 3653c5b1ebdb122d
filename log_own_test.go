package dogpile_test

import (
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// The invalidation feed's connection is terminated by the server: the
// plugin's logger gets exactly one record of it, at WARN, with the error,
// and the listener reconnects.
func TestFeedErrorLogged(t *testing.T) {
	dsn := feedNewDatabase(t)
	db := feedOpen(t, dsn, false)
	sink := &rootLogSink{}
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": feedMemoryRegion(t)}, dogpile.WithLogger(slog.New(sink)))))
	l := feedListen(t, db.DB)
	feedTerminate(t, db.DB, l)
	waitFor(t, "reconnect", func() bool { return l.Stats().Reconnects == 1 })
	feed := sink.matching(dogpile.LogMsgFeedError)
	if len(feed) != 1 || !strings.HasPrefix(feed[0], "WARN "+dogpile.LogMsgFeedError+" error=feed connection: ") {
		t.Fatalf("feed records %q; want one WARN %q with the connection's error", feed, dogpile.LogMsgFeedError)
	}
}

// GraphItem and GraphOther are the tables of TestGraphFailureLogged.
type GraphItem struct {
	ID int64
	V  int64
}

type GraphOther struct {
	ID int64
	V  int64
}

var graphRoleSeq atomic.Int64

// The plugin's role may not read the catalog (pg_trigger is revoked from
// PUBLIC in its database): registering it logs exactly one WARN record with
// PostgreSQL's error, and the plugin works with the unknown graph, so that
// a write to any table invalidates every entry (more, never less).
func TestGraphFailureLogged(t *testing.T) {
	dsn := testharness.SharedPostgres(t).NewDatabase(t)
	admin := feedOpen(t, dsn, false)
	role := fmt.Sprintf("dogpile_nocatalog_%d_%d", os.Getpid(), graphRoleSeq.Add(1))
	for _, q := range []string{
		"CREATE ROLE " + role + " LOGIN",
		"CREATE TABLE graph_items (id bigint PRIMARY KEY, v bigint NOT NULL)",
		"CREATE TABLE graph_others (id bigint PRIMARY KEY, v bigint NOT NULL)",
		"INSERT INTO graph_items VALUES (1, 10)",
		"INSERT INTO graph_others VALUES (1, 20)",
		"GRANT ALL ON graph_items, graph_others TO " + role,
		"REVOKE SELECT ON pg_catalog.pg_trigger FROM PUBLIC",
	} {
		dbtest.Must(t, admin.Exec(q).Error)
	}
	t.Cleanup(func() {
		_ = admin.Exec("DROP OWNED BY " + role).Error
		_ = admin.Exec("DROP ROLE " + role).Error
	})

	sqlDB, err := sql.Open("pgx", regexp.MustCompile(`user=\S+`).ReplaceAllString(dsn, "user="+role))
	dbtest.Must(t, err)
	t.Cleanup(func() { _ = sqlDB.Close() })
	db, err := gorm.Open(postgres.New(postgres.Config{Conn: sqlDB}), &gorm.Config{Logger: logger.Discard})
	dbtest.Must(t, err)
	sink := &rootLogSink{}
	r := feedMemoryRegion(t)
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r}, dogpile.WithLogger(slog.New(sink)))))

	graph := sink.matching(dogpile.LogMsgGraphFailed)
	want := "WARN " + dogpile.LogMsgGraphFailed + " error=dogpile: schema graph: "
	if len(graph) != 1 || !strings.HasPrefix(graph[0], want) || !strings.Contains(graph[0], "permission denied for table pg_trigger") {
		t.Fatalf("graph records %q; want one %q… with PostgreSQL's permission error", graph, want)
	}

	// Counted at the region: the pool also sees the plugin try the
	// catalog again (once a second, while it cannot be read).
	read := func() region.Stats {
		t.Helper()
		before := r.Stats()
		var it GraphItem
		dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).First(&it, 1).Error)
		if it.V != 10 {
			t.Fatalf("read %+v; want v 10", it)
		}
		after := r.Stats()
		return region.Stats{Hits: after.Hits - before.Hits, Misses: after.Misses - before.Misses}
	}
	if d := read(); d.Misses != 1 || d.Hits != 0 {
		t.Fatalf("first read: %+v; want a miss", d)
	}
	if d := read(); d.Misses != 0 || d.Hits != 1 {
		t.Fatalf("second read: %+v; want a hit", d)
	}
	dbtest.Must(t, db.Model(&GraphOther{ID: 1}).Update("v", 21).Error)
	if d := read(); d.Misses != 1 || d.Hits != 0 {
		t.Fatalf("read after a write to another table: %+v; want a miss (the unknown graph invalidates every entry)", d)
	}
}
