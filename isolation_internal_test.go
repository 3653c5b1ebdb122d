package dogpile

// The state of transactions opened with raw SQL on pinned connections is
// kept per *sql.Conn from BEGIN to COMMIT or ROLLBACK, and no longer: the
// map is cleaned at their end, and when a connection left in an open
// transaction is collected.

import (
	"database/sql"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
)

// pinDB is an open database for these tests, which cannot use
// internal/dbtest (it imports this package).
type pinDB struct {
	*gorm.DB
	dialect string
}

func pinOpen(t *testing.T, dialect string) pinDB {
	t.Helper()
	var (
		sqlDB *sql.DB
		d     gorm.Dialector
		err   error
	)
	switch dialect {
	case "sqlite":
		sqlDB, err = sql.Open("sqlite3", "file:"+filepath.Join(t.TempDir(), "pin.db")+"?_journal_mode=WAL&_busy_timeout=10000")
		d = sqlite.New(sqlite.Config{Conn: sqlDB})
	default:
		sqlDB, err = sql.Open("pgx", testharness.SharedPostgres(t).NewDatabase(t))
		d = postgres.New(postgres.Config{Conn: sqlDB})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard})
	pinMust(t, err)
	pinMust(t, db.Use(New(map[string]*region.Region{"default": region.New(memory.New())})))
	return pinDB{DB: db, dialect: dialect}
}

func pinEach(t *testing.T, fn func(t *testing.T, db pinDB)) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		db := pinOpen(t, dialect)
		t.Run(dialect, func(t *testing.T) { fn(t, db) })
	}
}

func pinMust(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestPinnedTransactionsForgotten(t *testing.T) {
	pinEach(t, func(t *testing.T, db pinDB) {
		base := pinned.size()
		for _, end := range []string{"COMMIT", "ROLLBACK", "END"} {
			pinMust(t, db.Connection(func(c *gorm.DB) error {
				c = c.Session(&gorm.Session{})
				pinMust(t, c.Exec("BEGIN").Error)
				if n := pinned.size(); n != base+1 {
					t.Errorf("in a pinned transaction: %d followed; want %d", n, base+1)
				}
				if st, _ := txOf(c.Statement.ConnPool); st == nil {
					t.Errorf("txOf of the pinned connection in its transaction: nil")
				}
				pinMust(t, c.Exec(end).Error)
				if n := pinned.size(); n != base {
					t.Errorf("after %s: %d followed; want %d", end, n, base)
				}
				if st, _ := txOf(c.Statement.ConnPool); st != nil {
					t.Errorf("txOf of the pinned connection after %s: not nil", end)
				}
				return nil
			}))
		}
		if db.dialect == "postgres" {
			// A failed BEGIN-and-write leaves the transaction uncertain:
			// followed until its ROLLBACK.
			pinMust(t, db.Connection(func(c *gorm.DB) error {
				c = c.Session(&gorm.Session{})
				if err := c.Exec("BEGIN; SELECT 1/0").Error; err == nil {
					t.Fatal("test bug: the statement did not fail")
				}
				st, _ := txOf(c.Statement.ConnPool)
				if st == nil || !st.isUncertain() || st.servable() {
					t.Errorf("after a failed BEGIN: state %+v; want an uncertain transaction, never served", st)
				}
				pinMust(t, c.Exec("ROLLBACK").Error)
				return nil
			}))
			if n := pinned.size(); n != base {
				t.Errorf("after the ROLLBACK: %d followed; want %d", n, base)
			}
		}
	})
}

// A connection dropped in an open transaction (a bug of its user) does not
// stay in the map once it is garbage.
func TestPinnedTransactionCollected(t *testing.T) {
	pinEach(t, func(t *testing.T, db pinDB) {
		base := pinned.size()
		pinMust(t, db.Connection(func(c *gorm.DB) error {
			return c.Session(&gorm.Session{}).Exec("BEGIN").Error
		}))
		if n := pinned.size(); n != base+1 {
			t.Fatalf("after the connection was closed in its transaction: %d followed; want %d until it is collected", n, base+1)
		}
		// Cleanups run after a collection, on their own goroutine: wait
		// for it (a bound, not a timing assertion).
		deadline := time.Now().Add(10 * time.Second)
		for pinned.size() != base && time.Now().Before(deadline) {
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		if n := pinned.size(); n != base {
			t.Errorf("after collection: %d followed; want %d", n, base)
		}
	})
}
