package dogpile_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/countpool"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// What WithDataVersionCheck costs a hit: the inline First hit of
// BenchmarkInlineFirst (memory region, InlineUser with its has-many field
// and time column), on a SQLite file (an in-memory database is never
// checked), with the check off and on at two intervals. Nothing commits
// while they run, so the checks find no change: the cost measured is the
// read path's (a clock read and two atomic loads) plus one PRAGMA
// data_version per interval, shared by the hits of that interval.

// dvBenchDB opens a new SQLite file with the plugin over a memory region,
// WithDataVersionCheck(every) (0: off), seeded with 100 users of 5 posts.
func dvBenchDB(b *testing.B, every time.Duration) *dbtest.DB {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.db")
	sqlDB, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=10000")
	dbtest.Must(b, err)
	b.Cleanup(func() { _ = sqlDB.Close() })
	pool := &countpool.Pool{DB: sqlDB}
	gdb, err := gorm.Open(sqlite.New(sqlite.Config{Conn: pool}), &gorm.Config{Logger: logger.Discard})
	dbtest.Must(b, err)
	db := &dbtest.DB{DB: gdb, Pool: pool, Dialect: "sqlite"}
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	b.Cleanup(func() { _ = r.Close() })
	dbtest.Must(b, db.Use(dogpile.New(map[string]*region.Region{"default": r}, dogpile.WithDataVersionCheck(every))))
	dbtest.Must(b, db.AutoMigrate(&InlineUser{}, &InlinePost{}))
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	users := make([]InlineUser, 100)
	for i := range users {
		users[i] = InlineUser{Name: fmt.Sprintf("user-%d", i), Email: fmt.Sprintf("u%d@example.com", i),
			Age: 20 + i%inlineAges, CreatedAt: base.Add(time.Duration(i) * time.Minute)}
		for j := range inlinePostsPerUser {
			users[i].Posts = append(users[i].Posts, InlinePost{Title: fmt.Sprintf("post %d/%d", i, j),
				Body: "a body of a few words, as posts have", CreatedAt: base})
		}
	}
	dbtest.Must(b, db.CreateInBatches(users, 50).Error)
	// The seeding's commits changed data_version: let the first check
	// after them find it before the timing starts.
	time.Sleep(2 * every)
	return db
}

// BenchmarkDataVersionHit: the hit with the check off, on every 5 ms and
// on every 1 ms, and off again on a second database (a control: the
// difference between two databases alike), each alone (ns/op, allocs/op),
// then the four alternately in rounds ("interleaved", the order rotating),
// which reports each one's ns per hit and the ratios to off.
func BenchmarkDataVersionHit(b *testing.B) {
	const id = 42
	dbs := []struct {
		name string
		db   *dbtest.DB
	}{
		{"off", dvBenchDB(b, 0)},
		{"on-5ms", dvBenchDB(b, 5*time.Millisecond)},
		{"on-1ms", dvBenchDB(b, time.Millisecond)},
		{"off-again", dvBenchDB(b, 0)}, // the noise floor of the ratios
	}
	hit := func(b *testing.B, db *dbtest.DB) {
		var u InlineUser
		if err := db.Scopes(dogpile.FromCache("default")).First(&u, id).Error; err != nil {
			b.Fatal(err)
		}
	}
	for _, d := range dbs {
		hit(b, d.db)
		hit(b, d.db)
	}
	for _, d := range dbs {
		b.Run(d.name, func(b *testing.B) {
			d.db.Pool.Reset()
			b.ReportAllocs()
			for b.Loop() {
				hit(b, d.db)
			}
			noQueries(b, d.db)
		})
	}
	b.Run("interleaved", func(b *testing.B) {
		loads := make([]load, len(dbs))
		for i, d := range dbs {
			d.db.Pool.Reset()
			loads[i] = load{d.name, func() { hit(b, d.db) }}
		}
		per := interleave(b, 100, loads...)
		reportRatios(b, per, "on-5ms/off", "on-1ms/off", "off-again/off")
		for _, d := range dbs {
			noQueries(b, d.db)
		}
	})
}
