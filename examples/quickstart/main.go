// Command quickstart is dogpile-go's first demonstration: a SQLite database
// of a few thousand rows, a memory region, and a short tour of what the cache
// does. Run it with `make demo`; it needs no servers.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// Product is the demo's model.
type Product struct {
	ID       uint
	Name     string
	Category string
	Price    int
	Stock    int
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

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "dogpile-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// A counting pool shows how many queries reach the database.
	sqlDB, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "shop.db")+"?_journal_mode=WAL&_busy_timeout=5000")
	if err != nil {
		return err
	}
	defer sqlDB.Close()
	pool := &countingDB{DB: sqlDB}
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: pool}), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}

	// The region: bounded memory, ten-minute expiration.
	regions := map[string]*region.Region{
		"default": region.New(memory.New(memory.WithMaxBytes(64<<20)),
			region.WithName("default"), region.WithExpiration(10*time.Minute)),
	}
	if err := db.Use(dogpile.New(regions)); err != nil {
		return err
	}

	if err := seed(db, 5000); err != nil {
		return err
	}
	fmt.Println("dogpile-go quickstart: SQLite with 5000 products, a memory region.")
	fmt.Println()

	cached := func() *gorm.DB {
		return db.Scopes(dogpile.FromCache("default")).Where("category = ? AND price < ?", "tools", 100).Order("price, id")
	}

	// 1. A miss, then hits, against the uncached query.
	fmt.Println("1. The same query, uncached and through FromCache")
	var products []Product
	uncached := timeIt(200, func() error {
		return db.Where("category = ? AND price < ?", "tools", 100).Order("price, id").Find(&products).Error
	})
	pool.Reset()
	start := time.Now()
	if err := cached().Find(&products).Error; err != nil {
		return err
	}
	miss := time.Since(start)
	hit := timeIt(200, func() error { return cached().Find(&products).Error })
	fmt.Printf("   uncached query:      %8s  (%d rows)\n", round(uncached), len(products))
	fmt.Printf("   first cached (miss): %8s  -> %d database query\n", round(miss), pool.Queries())
	fmt.Printf("   cached hit:          %8s  (%.0fx faster), %d queries for 200 hits\n",
		round(hit), float64(uncached)/float64(hit), pool.Queries()-1)
	fmt.Println()

	// 2. A write invalidates, at once.
	fmt.Println("2. An update invalidates what it touched")
	first := products[0]
	if err := db.Model(&Product{}).Where("id = ?", first.ID).Update("name", "renamed").Error; err != nil {
		return err
	}
	pool.Reset()
	if err := cached().Find(&products).Error; err != nil {
		return err
	}
	fmt.Printf("   renamed product %d: the next cached read went to the database (%d query) and sees %q\n",
		first.ID, pool.Queries(), products[0].Name)
	fmt.Println()

	// 3. A rolled-back transaction leaves the cache as it was.
	fmt.Println("3. A transaction that rolls back leaves the cache alone")
	if err := cached().Find(&products).Error; err != nil {
		return err
	}
	pool.Reset()
	tx := db.Begin()
	tx.Model(&Product{}).Where("category = ?", "tools").Update("stock", 0)
	tx.Rollback()
	if err := cached().Find(&products).Error; err != nil {
		return err
	}
	fmt.Printf("   after the rollback the cached read made %d queries (still a hit)\n", pool.Queries())
	err = db.Transaction(func(tx *gorm.DB) error {
		return tx.Model(&Product{}).Where("id = ?", products[0].ID).Update("stock", 7).Error
	})
	if err != nil {
		return err
	}
	pool.Reset()
	if err := cached().Find(&products).Error; err != nil {
		return err
	}
	fmt.Printf("   after a committed one it went to the database (%d query) and sees stock %d\n", pool.Queries(), products[0].Stock)
	fmt.Println()

	// 4. A burst of goroutines on a cold, slow query reaches the database once.
	fmt.Println("4. 200 goroutines ask for the same cold, slow report at once")
	type row struct {
		Category string
		Ranked   int
	}
	report := func(tx *gorm.DB) *gorm.DB {
		return tx.Raw(`SELECT p.category, COUNT(*) AS ranked FROM products p
			JOIN products q ON q.category = p.category AND q.price < p.price WHERE p.id <= 1500
			GROUP BY p.category ORDER BY p.category`)
	}
	var rows []row
	slow := timeIt(1, func() error { return report(db).Scan(&rows).Error })
	pool.Reset()
	var wg sync.WaitGroup
	begin := make(chan struct{})
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-begin
			var rs []row
			_ = report(db.Scopes(dogpile.FromCache("default"))).Find(&rs).Error
		}()
	}
	close(begin)
	wg.Wait()
	fmt.Printf("   the report takes %s; database queries for 200 callers: %d (one ran it, the others waited for its answer)\n",
		round(slow), pool.Queries())
	fmt.Println()

	printMetrics(regions["default"])
	return nil
}

// printMetrics prints a region's metrics as its Stats give them: what an
// operator reads on a dashboard (examples/prometheus exports the same
// through OpenTelemetry).
func printMetrics(r *region.Region) {
	st := r.Stats()
	fmt.Printf("Metrics of region %q:\n", r.Name())
	row := func(name string, v int64, what string) { fmt.Printf("   %-26s %8d  %s\n", name, v, what) }
	row("hits", st.Hits, "answers served from the cache")
	row("misses", st.Misses, "answers that were not cached")
	row("stale_served", st.StaleServed, "expired answers served while one caller refreshed them")
	row("regenerations", st.Regenerations, "queries run to fill the cache")
	row("lock_waits", st.LockWaits, "callers that waited for another's query instead of running it")
	row("decode_failures", st.DecodeFailures, "stored answers that could not be read back (misses)")
	for _, reason := range region.NotStoredReasons() {
		row("not_stored{"+reason.String()+"}", st.NotStoredBy.Of(reason), "answers given to callers but not stored")
	}
	row("backend_errors", st.Errors, "backend calls that failed (each cost a miss, never an error)")
	row("invalidations", st.Invalidations, "invalidations written (a commit writes its tables twice: before and after)")
	row("invalidation_failures", st.InvalidationFailures, "invalidations that could not be written (retried)")
	if hits, all := st.Hits+st.StaleServed, st.Hits+st.StaleServed+st.Misses; all > 0 {
		fmt.Printf("   hit ratio %.1f%%\n", 100*float64(hits)/float64(all))
	}
}

// seed creates n products in batches.
func seed(db *gorm.DB, n int) error {
	if err := db.AutoMigrate(&Product{}); err != nil {
		return err
	}
	categories := []string{"tools", "books", "games", "garden", "kitchen"}
	batch := make([]Product, 0, 500)
	for i := range n {
		batch = append(batch, Product{
			Name:     fmt.Sprintf("product-%04d", i),
			Category: categories[i%len(categories)],
			Price:    (i * 7919) % 1000,
			Stock:    i % 50,
		})
		if len(batch) == cap(batch) {
			if err := db.Create(&batch).Error; err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

// timeIt returns the mean duration of n runs of fn.
func timeIt(n int, fn func() error) time.Duration {
	start := time.Now()
	for range n {
		if err := fn(); err != nil {
			log.Fatal(err)
		}
	}
	return time.Since(start) / time.Duration(n)
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d > time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}
