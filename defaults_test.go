package dogpile_test

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/countpool"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// Cache by default: models that name their region (CacheRegioner), tables
// the plugin is told to cache (WithCachedTables), NoCache, and which wins.

// DefaultBook is cached by default in the region "books".
type DefaultBook struct {
	ID      uint
	Title   string
	Authors []DefaultAuthor `gorm:"foreignKey:BookID"`
}

func (DefaultBook) CacheRegion() string { return "books" }

// DefaultAuthor is cached by default too: its preload queries are not.
type DefaultAuthor struct {
	ID     uint
	BookID uint
	Name   string
}

func (*DefaultAuthor) CacheRegion() string { return "books" } // a pointer receiver counts as well

// DefaultShelf has no CacheRegion: the table option caches it.
type DefaultShelf struct {
	ID   uint
	Name string
}

// DefaultLost names a region the plugin was not given.
type DefaultLost struct{ ID uint }

func (DefaultLost) CacheRegion() string { return "nowhere" }

// DefaultOff names no region: not cached by default.
type DefaultOff struct{ ID uint }

func (DefaultOff) CacheRegion() string { return "" }

// defaultsSetup registers a plugin with the regions books, shelves and
// other, the table option caching default_shelves in shelves (and
// default_books in shelves, which the model's own region wins over), and
// seeds 3 books with 2 authors each and 2 shelves.
func defaultsSetup(t *testing.T, db *dbtest.DB) map[string]*region.Region {
	t.Helper()
	regions := map[string]*region.Region{}
	for _, n := range []string{"books", "shelves", "other"} {
		regions[n] = region.New(memory.New(), region.WithName(n))
	}
	dbtest.Must(t, db.Use(dogpile.New(regions, dogpile.WithCachedTables("shelves", "Default_Shelves", `"default_books"`))))
	dbtest.Must(t, db.AutoMigrate(&DefaultBook{}, &DefaultAuthor{}, &DefaultShelf{}, &DefaultLost{}, &DefaultOff{}))
	for i := 1; i <= 3; i++ {
		b := DefaultBook{Title: fmt.Sprintf("book%d", i), Authors: []DefaultAuthor{{Name: fmt.Sprintf("a%d", i)}, {Name: fmt.Sprintf("b%d", i)}}}
		dbtest.Must(t, db.Create(&b).Error)
	}
	dbtest.Must(t, db.Create(&[]DefaultShelf{{Name: "left"}, {Name: "right"}}).Error)
	dbtest.Must(t, db.Create(&DefaultOff{}).Error)
	return regions
}

// queried runs q and returns the statements it sent and its outcome.
func queried(t *testing.T, db *dbtest.DB, q func() *gorm.DB) (int64, dogpile.Outcome) {
	t.Helper()
	db.Pool.Reset()
	tx := q()
	dbtest.Must(t, tx.Error)
	return db.Pool.Queries(), dogpile.OutcomeOf(tx)
}

// expectRuns runs q once per expected (statements, outcome) pair.
func expectRuns(t *testing.T, db *dbtest.DB, what string, q func() *gorm.DB, want ...any) {
	t.Helper()
	for i := 0; i < len(want); i += 2 {
		n, o := queried(t, db, q)
		if n != int64(want[i].(int)) || o != want[i+1].(dogpile.Outcome) {
			t.Errorf("%s, run %d: %d statements, outcome %v; want %d, %v", what, i/2+1, n, o, want[i], want[i+1])
		}
	}
}

// A model with CacheRegion is cached without a scope: a second identical
// query sends nothing, NoCache always sends one, a write invalidates, and
// the query gets the same answer as with FromCache.
func TestDefaultModel(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		regions := defaultsSetup(t, db)
		books := regions["books"]

		var b DefaultBook
		first := func() *gorm.DB { b = DefaultBook{}; return db.First(&b, 2) }
		expectRuns(t, db, "First", first, 1, dogpile.Miss, 0, dogpile.Hit, 0, dogpile.Hit)
		if b.Title != "book2" {
			t.Errorf("cached First: %+v", b)
		}
		if s := books.Stats(); s.Misses != 1 || s.Hits != 2 {
			t.Errorf("books stats %+v; want 1 miss, 2 hits", s)
		}
		expectRuns(t, db, "NoCache", func() *gorm.DB { b = DefaultBook{}; return db.Scopes(dogpile.NoCache()).First(&b, 2) },
			1, dogpile.NotCached, 1, dogpile.NotCached, 1, dogpile.NotCached)

		// A write invalidates what the default cached.
		dbtest.Must(t, db.Model(&DefaultBook{ID: 2}).Update("title", "renamed").Error)
		expectRuns(t, db, "First after a write", first, 1, dogpile.Miss, 0, dogpile.Hit)
		if b.Title != "renamed" {
			t.Errorf("First after the write: %+v; want the new title", b)
		}

		// Count and Pluck on the model; a map destination through Model.
		var n int64
		expectRuns(t, db, "Count", func() *gorm.DB { n = 0; return db.Model(&DefaultBook{}).Count(&n) }, 1, dogpile.Miss, 0, dogpile.Hit)
		var titles []string
		expectRuns(t, db, "Pluck", func() *gorm.DB { titles = nil; return db.Model(&DefaultBook{}).Order("id").Pluck("title", &titles) }, 1, dogpile.Miss, 0, dogpile.Hit)
		if n != 3 || fmt.Sprint(titles) != "[book1 renamed book3]" {
			t.Errorf("Count %d, Pluck %v", n, titles)
		}
		var m map[string]any
		expectRuns(t, db, "map via Model", func() *gorm.DB { m = nil; return db.Model(&DefaultBook{}).Where("id = ?", 1).Take(&m) }, 1, dogpile.Miss, 0, dogpile.Hit)

		// Raw SQL is not cached by default, whatever its destination.
		var raw []DefaultBook
		expectRuns(t, db, "Raw", func() *gorm.DB { return db.Raw("SELECT * FROM default_books ORDER BY id").Find(&raw) },
			1, dogpile.NotCached, 1, dogpile.NotCached)

		// Preloads: the top-level query is cached, its preload (of a model
		// that opts in as well) is not.
		authorsBefore := books.Stats()
		var bs []DefaultBook
		expectRuns(t, db, "Preload", func() *gorm.DB { bs = nil; return db.Preload("Authors").Order("id").Find(&bs) },
			2, dogpile.Miss, 1, dogpile.Hit, 1, dogpile.Hit)
		if len(bs) != 3 || len(bs[1].Authors) != 2 || bs[1].Authors[0].Name != "a2" {
			t.Errorf("Preload: %+v", bs)
		}
		if s := books.Stats(); s.Misses-authorsBefore.Misses != 1 || s.Hits-authorsBefore.Hits != 2 {
			t.Errorf("books stats %+v → %+v; want the top-level query only: 1 miss, 2 hits", authorsBefore, s)
		}
		// The preload's model alone is cached by default.
		var as []DefaultAuthor
		expectRuns(t, db, "authors", func() *gorm.DB { return db.Where("book_id = ?", 1).Find(&as) }, 1, dogpile.Miss, 0, dogpile.Hit)

		// The bypasses of FromCache hold: a transaction that wrote.
		dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
			dbtest.Must(t, tx.Create(&DefaultShelf{Name: "tx"}).Error)
			db.Pool.Reset()
			var in DefaultBook
			r := tx.First(&in, 1)
			if o := dogpile.OutcomeOf(r); r.Error != nil || o != dogpile.Bypassed || db.Pool.Queries() != 1 {
				t.Errorf("in a transaction that wrote: %v, outcome %v, %d statements; want bypassed, 1", r.Error, o, db.Pool.Queries())
			}
			return nil
		}))
		if db.Dialect == "postgres" {
			expectRuns(t, db, "FOR UPDATE", func() *gorm.DB {
				var l DefaultBook
				return db.Clauses(clause.Locking{Strength: "UPDATE"}).First(&l, 1)
			}, 1, dogpile.Bypassed, 1, dogpile.Bypassed)
		}

		// An empty CacheRegion is no default.
		var off DefaultOff
		expectRuns(t, db, "empty region name", func() *gorm.DB { off = DefaultOff{}; return db.First(&off) }, 1, dogpile.NotCached, 1, dogpile.NotCached)

		// A region the plugin was not given is the query's error.
		var lost DefaultLost
		if err := db.First(&lost).Error; !errors.Is(err, dogpile.ErrUnknownRegion) {
			t.Errorf("model of an unknown region: %v; want ErrUnknownRegion", err)
		}
	})
}

// WithCachedTables caches the queries of its tables, on models and on
// Table, and a model's CacheRegion wins over it.
func TestDefaultTables(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		regions := defaultsSetup(t, db)
		shelves, books := regions["shelves"], regions["books"]

		var ss []DefaultShelf
		expectRuns(t, db, "model of a listed table", func() *gorm.DB { ss = nil; return db.Order("id").Find(&ss) },
			1, dogpile.Miss, 0, dogpile.Hit)
		var ms []map[string]any
		expectRuns(t, db, "Table", func() *gorm.DB { ms = nil; return db.Table("default_shelves").Order("id").Find(&ms) },
			1, dogpile.Miss, 0, dogpile.Hit)
		expectRuns(t, db, "Table with an alias", func() *gorm.DB { ms = nil; return db.Table("default_shelves s").Order("s.id").Find(&ms) },
			1, dogpile.Miss, 0, dogpile.Hit)
		if len(ss) != 2 || len(ms) != 2 {
			t.Errorf("shelves %+v, maps %+v", ss, ms)
		}
		if s := shelves.Stats(); s.Misses != 3 || s.Hits != 3 {
			t.Errorf("shelves stats %+v; want 3 misses, 3 hits", s)
		}
		expectRuns(t, db, "NoCache", func() *gorm.DB { ms = nil; return db.Scopes(dogpile.NoCache()).Table("default_shelves").Find(&ms) },
			1, dogpile.NotCached, 1, dogpile.NotCached)
		// A table not listed is not cached.
		expectRuns(t, db, "unlisted table", func() *gorm.DB { ms = nil; return db.Table("default_authors").Find(&ms) },
			1, dogpile.NotCached, 1, dogpile.NotCached)
		// The model on a table not listed: not cached; the model of a
		// listed table queried on it through Table: cached.
		var onOther []DefaultShelf
		expectRuns(t, db, "model on an unlisted table", func() *gorm.DB {
			onOther = nil
			return db.Table("default_offs").Select("id").Find(&onOther)
		}, 1, dogpile.NotCached, 1, dogpile.NotCached)

		// default_books is listed for shelves, but DefaultBook says books.
		b0, s0 := books.Stats(), shelves.Stats()
		var b DefaultBook
		expectRuns(t, db, "model over table option", func() *gorm.DB { b = DefaultBook{}; return db.First(&b, 1) }, 1, dogpile.Miss, 0, dogpile.Hit)
		if b1, s1 := books.Stats(), shelves.Stats(); b1.Misses-b0.Misses != 1 || b1.Hits-b0.Hits != 1 || s1 != s0 {
			t.Errorf("books %+v → %+v, shelves %+v → %+v; want the model's region used", b0, b1, s0, s1)
		}
		// …but a query of that table without the model is the table's.
		expectRuns(t, db, "listed table without its model", func() *gorm.DB { ms = nil; return db.Table("default_books").Find(&ms) },
			1, dogpile.Miss, 0, dogpile.Hit)
		if s := shelves.Stats(); s.Misses-s0.Misses != 1 {
			t.Errorf("shelves %+v → %+v; want the table's region used", s0, s)
		}

		// A write to the table invalidates.
		dbtest.Must(t, db.Create(&DefaultShelf{Name: "new"}).Error)
		expectRuns(t, db, "after a write", func() *gorm.DB { ss = nil; return db.Order("id").Find(&ss) }, 1, dogpile.Miss, 0, dogpile.Hit)
		if len(ss) != 3 {
			t.Errorf("after the write: %+v; want 3 shelves", ss)
		}
	})
}

// Precedence: the query's FromCache, then NoCache, then the model, then
// the table.
func TestDefaultPrecedence(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, db *dbtest.DB) {
		regions := defaultsSetup(t, db)
		other, books := regions["other"], regions["books"]

		var b DefaultBook
		for _, c := range []struct {
			name   string
			scopes []func(*gorm.DB) *gorm.DB
		}{
			{"FromCache", []func(*gorm.DB) *gorm.DB{dogpile.FromCache("other")}},
			{"FromCache after NoCache", []func(*gorm.DB) *gorm.DB{dogpile.NoCache(), dogpile.FromCache("other")}},
			{"NoCache after FromCache", []func(*gorm.DB) *gorm.DB{dogpile.FromCache("other"), dogpile.NoCache()}},
		} {
			o0, b0 := other.Stats(), books.Stats()
			id := 3
			expectRuns(t, db, c.name, func() *gorm.DB {
				b = DefaultBook{}
				return db.Scopes(c.scopes...).Where("title <> ?", c.name).First(&b, id)
			},
				1, dogpile.Miss, 0, dogpile.Hit)
			if o1, b1 := other.Stats(), books.Stats(); o1.Misses-o0.Misses != 1 || o1.Hits-o0.Hits != 1 || b1 != b0 {
				t.Errorf("%s: other %+v → %+v, books %+v → %+v; want the query's own region", c.name, o0, o1, b0, b1)
			}
		}
		// NoCache over the model and over the table option.
		b0 := books.Stats()
		expectRuns(t, db, "NoCache over model", func() *gorm.DB { b = DefaultBook{}; return db.Scopes(dogpile.NoCache()).First(&b, 3) },
			1, dogpile.NotCached, 1, dogpile.NotCached)
		if b1 := books.Stats(); b1 != b0 {
			t.Errorf("NoCache used the region: %+v → %+v", b0, b1)
		}
		// NoCache stays on a chained statement, as FromCache does.
		base := db.Scopes(dogpile.NoCache()).Model(&DefaultBook{})
		var n int64
		expectRuns(t, db, "NoCache chained", func() *gorm.DB { n = 0; return base.Where("id > ?", 0).Count(&n) },
			1, dogpile.NotCached, 1, dogpile.NotCached)
	})
}

// db.Use refuses a WithCachedTables naming a region the plugin was not
// given, an empty table, or a table of two regions.
func TestDefaultTablesConfig(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []dogpile.PluginOption
		want string
	}{
		{"unknown region", []dogpile.PluginOption{dogpile.WithCachedTables("nope", "users")}, `unknown region "nope"`},
		{"empty table", []dogpile.PluginOption{dogpile.WithCachedTables("default", "users", " ")}, "empty table name"},
		{"two regions", []dogpile.PluginOption{dogpile.WithCachedTables("default", "users"), dogpile.WithCachedTables("second", `"Users"`)},
			`table "users" listed for regions "default" and "second"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := dbtest.SQLite(t)
			regions := map[string]*region.Region{
				"default": region.New(memory.New(), region.WithName("default")),
				"second":  region.New(memory.New(), region.WithName("second")),
			}
			err := db.Use(dogpile.New(regions, c.opts...))
			if !errors.Is(err, dogpile.ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("db.Use: %v; want ErrInvalidConfig saying %s", err, c.want)
			}
		})
	}
	// The same table twice for one region is fine.
	db := dbtest.SQLite(t)
	r := region.New(memory.New())
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r}, dogpile.WithCachedTables("default", "users", "USERS"), dogpile.WithCachedTables("default", "users"))))
}

// BenchDefaultUser is the model of the cache-by-default hit benchmark.
type BenchDefaultUser struct {
	ID        uint
	Name      string
	Email     string
	Age       int
	CreatedAt time.Time
}

func (BenchDefaultUser) CacheRegion() string { return "default" }

// BenchInlineDefaultUser is the same model without a default, for the
// inline FromCache it is compared with.
type BenchInlineDefaultUser struct {
	ID        uint
	Name      string
	Email     string
	Age       int
	CreatedAt time.Time
}

// BenchmarkHitDefault compares a hit by primary key cached by default (the
// model's CacheRegion, and WithCachedTables) with the same hit through an
// inline FromCache, on SQLite in memory over a memory region.
func BenchmarkHitDefault(b *testing.B) {
	sqlDB, err := sql.Open("sqlite3", ":memory:")
	dbtest.Must(b, err)
	sqlDB.SetMaxOpenConns(1)
	b.Cleanup(func() { _ = sqlDB.Close() })
	pool := &countpool.Pool{DB: sqlDB}
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: pool}), &gorm.Config{Logger: logger.Discard})
	dbtest.Must(b, err)
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	b.Cleanup(func() { _ = r.Close() })
	dbtest.Must(b, db.Use(dogpile.New(map[string]*region.Region{"default": r}, dogpile.WithCachedTables("default", "bench_default_tables"))))
	dbtest.Must(b, db.AutoMigrate(&BenchDefaultUser{}, &BenchInlineDefaultUser{}))
	dbtest.Must(b, db.Exec("CREATE TABLE bench_default_tables (id integer PRIMARY KEY, name text, email text, age integer, created_at datetime)").Error)
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	dbtest.Must(b, db.Create(&BenchDefaultUser{ID: 42, Name: "n", Email: "e@x", Age: 30, CreatedAt: at}).Error)
	dbtest.Must(b, db.Create(&BenchInlineDefaultUser{ID: 42, Name: "n", Email: "e@x", Age: 30, CreatedAt: at}).Error)
	dbtest.Must(b, db.Exec("INSERT INTO bench_default_tables VALUES (42, 'n', 'e@x', 30, ?)", at).Error)
	run := func(b *testing.B, q func() error) {
		dbtest.Must(b, q())
		pool.Reset()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if err := q(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if pool.Queries() != 0 {
			b.Fatalf("%d queries reached the database: not a hit", pool.Queries())
		}
	}
	b.Run("inline", func(b *testing.B) {
		run(b, func() error {
			var u BenchInlineDefaultUser
			return db.Scopes(dogpile.FromCache("default")).First(&u, 42).Error
		})
	})
	b.Run("model", func(b *testing.B) {
		run(b, func() error { var u BenchDefaultUser; return db.First(&u, 42).Error })
	})
	b.Run("table", func(b *testing.B) {
		run(b, func() error {
			var u BenchInlineDefaultUser
			return db.Table("bench_default_tables").First(&u, 42).Error
		})
	})
	b.Run("uncached", func(b *testing.B) {
		q := func() error { var u BenchInlineDefaultUser; return db.First(&u, 42).Error }
		dbtest.Must(b, q())
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if err := q(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// ExampleCachedAuthor is an author cached by default: every query of the
// model is answered from the region "default".
type ExampleCachedAuthor struct {
	ID   uint
	Name string
}

func (ExampleCachedAuthor) TableName() string { return "example_authors" }

func (ExampleCachedAuthor) CacheRegion() string { return "default" }

func (ExampleCachedAuthor) CacheOptions() []dogpile.Option {
	return []dogpile.Option{dogpile.WithExpiration(5 * time.Minute)}
}

func ExampleCacheRegioner() {
	db, pool, done := openExampleDB()
	defer done()
	regions := map[string]*region.Region{"default": region.New(memory.New())}
	if err := db.Use(dogpile.New(regions)); err != nil {
		panic(err)
	}
	pool.Reset()
	for range 3 {
		var a ExampleCachedAuthor
		tx := db.Where("name = ?", "Lem").First(&a)
		fmt.Println(a.Name, dogpile.OutcomeOf(tx), pool.Queries(), "queries so far")
	}
	// Output:
	// Lem miss 1 queries so far
	// Lem hit 1 queries so far
	// Lem hit 1 queries so far
}

func ExampleWithCachedTables() {
	db, pool, done := openExampleDB()
	defer done()
	regions := map[string]*region.Region{"default": region.New(memory.New())}
	if err := db.Use(dogpile.New(regions, dogpile.WithCachedTables("default", "example_books"))); err != nil {
		panic(err)
	}
	pool.Reset()
	for range 2 {
		var titles []string
		db.Model(&ExampleBook{}).Order("title").Pluck("title", &titles)
		fmt.Println(titles, pool.Queries(), "queries so far")
	}
	// Output:
	// [Lathe of Heaven Solaris The Dispossessed] 1 queries so far
	// [Lathe of Heaven Solaris The Dispossessed] 1 queries so far
}

func ExampleNoCache() {
	db, pool, done := openExampleDB()
	defer done()
	regions := map[string]*region.Region{"default": region.New(memory.New())}
	if err := db.Use(dogpile.New(regions, dogpile.WithCachedTables("default", "example_books"))); err != nil {
		panic(err)
	}
	pool.Reset()
	for range 2 {
		var n int64
		tx := db.Scopes(dogpile.NoCache()).Model(&ExampleBook{}).Count(&n)
		fmt.Println(n, "books,", dogpile.OutcomeOf(tx), pool.Queries(), "queries so far")
	}
	// Output:
	// 3 books, not cached 1 queries so far
	// 3 books, not cached 2 queries so far
}
