package dogpile_test

import (
	"context"
	"log"
	"os"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// The PostgreSQL invalidation feed: writes made outside the application
// (psql, another service, a writer that died after its commit) invalidate
// the cache too. InstallPostgresTriggers runs once, as a migration (again
// after new tables are created); every process that caches runs a
// Listener. It needs a server, so it is compiled but not run: set
// DATABASE_URL to try it.
func ExampleListenPostgres() {
	ctx := context.Background()
	db, err := gorm.Open(postgres.Open(os.Getenv("DATABASE_URL")), &gorm.Config{})
	if err != nil {
		log.Fatal(err)
	}
	r := region.New(memory.New(), region.WithExpiration(10*time.Minute))
	if err := db.Use(dogpile.New(map[string]*region.Region{"default": r})); err != nil {
		log.Fatal(err)
	}

	// The migration: a trigger on every table of the current schema.
	if err := dogpile.InstallPostgresTriggers(ctx, db); err != nil {
		log.Fatal(err)
	}

	// The listener: ctx bounds its first connection only; it connects
	// again by itself until Close.
	connectCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := dogpile.ListenPostgres(connectCtx, db)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	// Cached reads as usual: a row changed by any client is read again
	// shortly after its commit.
	var n int64
	db.Scopes(dogpile.FromCache("default")).Table("users").Count(&n)

	// Its counters, for monitoring: reconnects, apply errors, deduplicated
	// invalidations of shared regions.
	s := l.Stats()
	log.Printf("feed: connected %v, %d transactions, %d reconnects, %d apply errors", s.Connected, s.Transactions, s.Reconnects, s.ApplyErrors)
}
