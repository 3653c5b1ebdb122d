package dogpile_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

type ExampleAuthor struct {
	ID    uint
	Name  string
	Books []ExampleBook `gorm:"foreignKey:AuthorID"`
}

type ExampleBook struct {
	ID       uint
	AuthorID uint
	Author   *ExampleAuthor
	Title    string
}

// countingDB is a connection pool for GORM that counts the queries reaching
// the database: the QueryContext and QueryRowContext calls made outside a
// transaction. An answer served from the cache makes none. Everything else is
// the embedded *sql.DB's.
type countingDB struct {
	*sql.DB
	queries atomic.Int64
}

func (c *countingDB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	c.queries.Add(1)
	return c.DB.QueryContext(ctx, query, args...)
}

func (c *countingDB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	c.queries.Add(1)
	return c.DB.QueryRowContext(ctx, query, args...)
}

// GetDBConn lets db.DB() return the *sql.DB.
func (c *countingDB) GetDBConn() (*sql.DB, error) { return c.DB, nil }

// Queries returns the number of queries counted since the last Reset.
func (c *countingDB) Queries() int64 { return c.queries.Load() }

// Reset sets the count to zero.
func (c *countingDB) Reset() { c.queries.Store(0) }

// openExampleDB opens a SQLite database with a counting pool, so the
// examples can show how many queries reached the database.
func openExampleDB() (*gorm.DB, *countingDB, func()) {
	dir, _ := os.MkdirTemp("", "dogpile-example")
	sqlDB, _ := sql.Open("sqlite3", filepath.Join(dir, "example.db"))
	pool := &countingDB{DB: sqlDB}
	db, _ := gorm.Open(sqlite.New(sqlite.Config{Conn: pool}), &gorm.Config{Logger: logger.Discard})
	_ = db.AutoMigrate(&ExampleAuthor{}, &ExampleBook{})
	db.Create(&ExampleAuthor{Name: "Le Guin", Books: []ExampleBook{{Title: "The Dispossessed"}, {Title: "Lathe of Heaven"}}})
	db.Create(&ExampleAuthor{Name: "Lem", Books: []ExampleBook{{Title: "Solaris"}}})
	return db, pool, func() { sqlDB.Close(); os.RemoveAll(dir) }
}

func ExampleFromCache() {
	db, pool, done := openExampleDB()
	defer done()
	regions := map[string]*region.Region{
		"default": region.New(memory.New(), region.WithExpiration(10*time.Minute)),
	}
	if err := db.Use(dogpile.New(regions)); err != nil {
		panic(err)
	}

	pool.Reset()
	for range 3 {
		var authors []ExampleAuthor
		db.Scopes(dogpile.FromCache("default")).Order("name").Find(&authors)
		fmt.Println(len(authors), "authors;", pool.Queries(), "queries so far")
	}
	// A write through GORM invalidates at commit: the next read is fresh.
	db.Model(&ExampleAuthor{}).Where("name = ?", "Lem").Update("name", "Stanisław Lem")
	var authors []ExampleAuthor
	db.Scopes(dogpile.FromCache("default")).Order("name").Find(&authors)
	fmt.Println(authors[1].Name, "after", pool.Queries(), "queries")
	// Output:
	// 2 authors; 1 queries so far
	// 2 authors; 1 queries so far
	// 2 authors; 1 queries so far
	// Stanisław Lem after 2 queries
}

func ExampleRelationshipCache() {
	db, pool, done := openExampleDB()
	defer done()
	regions := map[string]*region.Region{"default": region.New(memory.New())}
	if err := db.Use(dogpile.New(regions)); err != nil {
		panic(err)
	}
	load := func() []ExampleAuthor {
		var authors []ExampleAuthor
		db.Scopes(dogpile.FromCache("default"), dogpile.RelationshipCache("Books", "default")).
			Preload("Books", func(tx *gorm.DB) *gorm.DB { return tx.Order("id") }).
			Order("id").Find(&authors)
		return authors
	}

	pool.Reset()
	load()
	fmt.Println("cold:", pool.Queries(), "queries")
	pool.Reset()
	authors := load()
	fmt.Println("warm:", pool.Queries(), "queries;", authors[0].Name, "wrote", len(authors[0].Books), "books")

	// A change to one of Lem's books invalidates Lem's entry only.
	book := authors[1].Books[0]
	book.Title = "Solaris (1961)"
	db.Save(&book)
	pool.Reset()
	authors = load()
	fmt.Println("after a save:", pool.Queries(), "queries;", authors[1].Books[0].Title)
	// Output:
	// cold: 2 queries
	// warm: 0 queries; Le Guin wrote 2 books
	// after a save: 1 queries; Solaris (1961)
}

func ExampleWithDecodedCache() {
	db, pool, done := openExampleDB()
	defer done()
	regions := map[string]*region.Region{"default": region.New(memory.New())}
	// Keep up to 8 MiB of decoded answers; 0 would decode every hit.
	if err := db.Use(dogpile.New(regions, dogpile.WithDecodedCache(8<<20))); err != nil {
		panic(err)
	}

	pool.Reset()
	var authors []ExampleAuthor
	db.Scopes(dogpile.FromCache("default")).Order("id").Find(&authors)
	authors[0].Name = "changed by its caller" // every answer is its caller's own
	for range 2 {
		var again []ExampleAuthor
		db.Scopes(dogpile.FromCache("default")).Order("id").Find(&again)
		fmt.Println(again[0].Name, "-", pool.Queries(), "query in all")
	}
	// Output:
	// Le Guin - 1 query in all
	// Le Guin - 1 query in all
}

func ExampleInvalidateTables() {
	db, pool, done := openExampleDB()
	defer done()
	regions := map[string]*region.Region{"default": region.New(memory.New())}
	if err := db.Use(dogpile.New(regions)); err != nil {
		panic(err)
	}
	name := func() string {
		var a ExampleAuthor
		db.Scopes(dogpile.FromCache("default")).Where("id = ?", 2).Take(&a)
		return a.Name
	}

	fmt.Println(name())
	// A write made outside GORM (another program, a migration script): the
	// plugin cannot see it, so the cached answer stands...
	pool.DB.Exec("UPDATE example_authors SET name = 'S. Lem' WHERE id = 2")
	fmt.Println(name())
	// ...until the table is declared changed.
	if err := dogpile.InvalidateTables(db, "example_authors"); err != nil {
		panic(err)
	}
	fmt.Println(name())
	// Output:
	// Lem
	// Lem
	// S. Lem
}

func ExampleInvalidateKey() {
	db, pool, done := openExampleDB()
	defer done()
	regions := map[string]*region.Region{"default": region.New(memory.New())}
	if err := db.Use(dogpile.New(regions)); err != nil {
		panic(err)
	}
	// Entries named "authors-from" share one version, whatever their bind
	// values.
	count := func(fromID int) int {
		var authors []ExampleAuthor
		db.Scopes(dogpile.FromCache("default", dogpile.WithKey("authors-from"))).
			Where("id >= ?", fromID).Find(&authors)
		return len(authors)
	}
	count(1)
	count(2)

	pool.Reset()
	fmt.Println(count(1), count(2), "-", pool.Queries(), "queries")
	pool.DB.Exec("INSERT INTO example_authors (name) VALUES ('Strugatsky')")
	if err := dogpile.InvalidateKey(db, "default", "authors-from"); err != nil {
		panic(err)
	}
	fmt.Println(count(1), count(2), "-", pool.Queries(), "queries")
	// Output:
	// 2 1 - 0 queries
	// 3 2 - 2 queries
}
