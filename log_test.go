package dogpile_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"

	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// syncBuffer is a bytes.Buffer safe for the logger's writes from a
// background regeneration.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// take returns what was written since the last take.
func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

// TestGORMLogLine: with db.Debug(), the line GORM's own logger prints for
// a query served from the cache says so before its SQL, "hit" or "stale
// hit"; a miss and a query without the cache are printed as GORM prints
// them; the line names the caller's file, not the plugin's.
func TestGORMLogLine(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		buf := &syncBuffer{}
		db.Logger = logger.New(log.New(buf, "", 0), logger.Config{LogLevel: logger.Warn, Colorful: false})
		r := region.New(memory.New(), region.WithName("default"), region.WithAsyncRegeneration(1))
		t.Cleanup(func() { _ = r.Close() })
		dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
		dbtest.Must(t, db.AutoMigrate(&OutcomeItem{}))
		dbtest.Must(t, db.Create(&[]OutcomeItem{{Name: "a"}, {Name: "b"}}).Error)
		buf.take()

		find := func(what string, want dogpile.Outcome) string {
			t.Helper()
			var its []OutcomeItem
			tx := db.Debug().Scopes(dogpile.FromCache("default")).Where("name <> ?", "z").Order("id").Find(&its)
			wantOutcome(t, what, tx, want)
			if len(its) != 2 {
				t.Fatalf("%s: %+v", what, its)
			}
			return buf.take()
		}
		line := func(what, out string) string {
			t.Helper()
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 || !strings.Contains(lines[0], "log_test.go:") {
				t.Fatalf("%s: printed %q; want one line, at the caller", what, out)
			}
			return lines[1]
		}
		sqlOf := func(l string) string {
			m := gormLine.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("not a line of GORM's: %q", l)
			}
			return m[1]
		}

		miss := line("miss", find("miss", dogpile.Miss))
		if strings.Contains(miss, "dogpile") || !strings.HasPrefix(sqlOf(miss), "SELECT") {
			t.Fatalf("the miss printed %q", miss)
		}
		hit := line("hit", find("hit", dogpile.Hit))
		if got, want := sqlOf(hit), "/* dogpile: hit */ "+sqlOf(miss); got != want {
			t.Fatalf("the hit printed %q; want %q", got, want)
		}
		dbtest.Must(t, r.Invalidate(context.Background(), false))
		out := find("stale hit", dogpile.StaleHit)
		// The background regeneration may print its own line (a miss's).
		if n := strings.Count(out, "] /* dogpile: stale hit */ "+sqlOf(miss)+"\n"); n != 1 || strings.Count(out, "dogpile:") != 1 {
			t.Fatalf("the stale hit printed %q; want one line of %q", out, "/* dogpile: stale hit */ "+sqlOf(miss))
		}
		// Without Debug, at Warn: nothing printed, nothing marked (once
		// the background regeneration has stored the answer).
		var its []OutcomeItem
		invWaitFor(t, "the regenerated answer", func() bool {
			return dogpile.OutcomeOf(db.Scopes(dogpile.FromCache("default")).Where("name <> ?", "z").Order("id").Find(&its)) == dogpile.Hit
		}, func() string { return "" })
		buf.take() // the background regeneration's own line, if it printed one
		wantOutcome(t, "hit at Warn", db.Scopes(dogpile.FromCache("default")).Where("name <> ?", "z").Order("id").Find(&its), dogpile.Hit)
		if out := buf.take(); out != "" {
			t.Fatalf("at Warn the hit printed %q", out)
		}
		// Not cached: as GORM prints it.
		if out := line("not cached", func() string { db.Debug().Where("name <> ?", "z").Order("id").Find(&its); return buf.take() }()); strings.Contains(out, "dogpile") {
			t.Fatalf("a query without the cache printed %q", out)
		}
	})
}

// TestPluginLogger: WithLogger logs the regions' records with the tables
// and the key of the query in place of its tags: the answers the plugin
// did not store, each with its reason. Hits and misses log nothing.
func TestPluginLogger(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		sink := &rootLogSink{}
		r := region.New(memory.New(), region.WithName("logged-"+db.Dialect))
		t.Cleanup(func() { _ = r.Close() })
		dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r}, dogpile.WithLogger(slog.New(sink)))))
		dbtest.Must(t, db.AutoMigrate(&OutcomeItem{}))
		dbtest.Must(t, db.Create(&[]OutcomeItem{{Name: "a"}, {Name: "b"}}).Error)
		dbtest.Must(t, db.Exec("CREATE TABLE not_stored_items (id integer PRIMARY KEY, label text)").Error)
		dbtest.Must(t, db.Exec("INSERT INTO not_stored_items (id, label) VALUES (1, 'a')").Error)
		sink.take() // the setup's invalidations, at DEBUG
		for range 3 {
			var its []OutcomeItem
			dbtest.Must(t, db.Scopes(dogpile.FromCache("default")).Order("id").Find(&its).Error)
		}
		if got := sink.lines(); len(got) != 0 {
			t.Fatalf("a miss and two hits logged %q", got)
		}
		var rows []map[string]any
		dbtest.Must(t, db.Scopes(dogpile.FromCache("default", dogpile.WithKey("labels"))).Model(&notStoredItem{}).Order("id").Find(&rows).Error)
		var out []struct{ Age int }
		if err := db.Scopes(dogpile.FromCache("default")).Raw("SELECT 'abc' AS age FROM outcome_items WHERE id = 1").Find(&out).Error; err == nil {
			t.Fatal("the scan did not fail")
		}
		got := sink.lines()
		want := []string{
			fmt.Sprintf("WARN dogpile: answer not stored region=%s key=KEY reason=unencodable tables=[not_stored_items] key_names=[labels]", r.Name()),
			fmt.Sprintf("INFO dogpile: answer not stored region=%s key=KEY reason=partial tables=[outcome_items]", r.Name()),
		}
		for i := range got { // the entry's key is a hash of the query (and of WithKey's name)
			got[i] = keyAttr.ReplaceAllString(got[i], " key=KEY ")
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("records\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
		}
	})
}

// rootLogSink keeps the records a slog.Logger is given, rendered as
// "LEVEL message k=v ...".
type rootLogSink struct {
	mu   sync.Mutex
	kept []string
}

func (s *rootLogSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *rootLogSink) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value.Any())
		return true
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kept = append(s.kept, b.String())
	return nil
}
func (s *rootLogSink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s *rootLogSink) WithGroup(string) slog.Handler      { return s }

func (s *rootLogSink) take() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kept = nil
}

// matching returns the records that contain msg.
func (s *rootLogSink) matching(msg string) []string {
	var out []string
	for _, line := range s.lines() {
		if strings.Contains(line, msg) {
			out = append(out, line)
		}
	}
	return out
}

func (s *rootLogSink) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.kept...)
}

// gormLine is the second line GORM's logger prints for a statement:
// "[0.123ms] [rows:2] SQL".
var gormLine = regexp.MustCompile(`^\[[0-9.]+ms\] \[rows:[-0-9]+\] (.*)$`)

// keyAttr is a record's key attribute.
var keyAttr = regexp.MustCompile(` key=q:[-_0-9A-Za-z]{43} `)
