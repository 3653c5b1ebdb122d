package dogpile_test

// Transactions read as the database would. Inside a snapshot transaction
// (REPEATABLE READ, SERIALIZABLE, SNAPSHOT; PostgreSQL's default when the
// server's is one of them) two reads of a row agree even when another
// connection commits between them, and nothing the transaction reads fills
// the cache. Raw BEGIN / START TRANSACTION / SET TRANSACTION on a pinned
// connection (db.Connection) count too, and the writes made in such a
// transaction are invalidated at its COMMIT (and dropped at its ROLLBACK).
//
// "Another connection" is the plugin's own database outside the
// transaction: GORM takes another connection from the pool for it.

import (
	"database/sql"
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

type isoRow struct {
	ID uint
	V  string
}

// isoSQLite is dbtest.SQLite with SQLite's default, deferred transactions:
// dbtest's begin IMMEDIATE, which holds the write lock from BEGIN, so that
// no other connection could commit while a test's transaction is open.
func isoSQLite(t testing.TB) *dbtest.DB {
	t.Helper()
	return dbtest.OpenSQLite(t, "_journal_mode=WAL&_busy_timeout=10000")
}

// isoPostgres opens a fresh PostgreSQL database whose connections start
// with the given runtime settings (a DSN suffix such as
// "default_transaction_isolation='repeatable read'").
func isoPostgres(t testing.TB, settings string) *dbtest.DB {
	t.Helper()
	return dbtest.OpenPostgres(t, settings)
}

// isoEach is dbtest.Each with isoSQLite's deferred transactions.
func isoEach(t *testing.T, fn func(t *testing.T, db *dbtest.DB)) {
	t.Helper()
	for _, open := range []func(testing.TB) *dbtest.DB{isoSQLite, dbtest.Postgres} {
		db := open(t)
		t.Run(db.Dialect, func(t *testing.T) { fn(t, db) })
	}
}

// isoSetup registers the plugin and creates one row, whose id it returns.
func isoSetup(t *testing.T, db *dbtest.DB) uint {
	t.Helper()
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": r})))
	dbtest.Must(t, db.AutoMigrate(&isoRow{}))
	row := isoRow{V: "v0"}
	dbtest.Must(t, db.Create(&row).Error)
	return row.ID
}

func isoCached(tx *gorm.DB) *gorm.DB { return tx.Scopes(dogpile.FromCache("default")) }

func isoRead(t *testing.T, tx *gorm.DB, id uint) string {
	t.Helper()
	var r isoRow
	dbtest.Must(t, tx.Where("id = ?", id).Find(&r).Error)
	return r.V
}

// isoCommitElsewhere sets the row's value from another connection (a
// write through the plugin, which invalidates at its commit).
func isoCommitElsewhere(t *testing.T, db *dbtest.DB, id uint, v string) {
	t.Helper()
	dbtest.Must(t, db.Model(&isoRow{}).Where("id = ?", id).Update("v", v).Error)
}

// isoTwoReads is the core check, inside tx: read the row, let another
// connection commit a new value, read it outside through the cache (which
// fills the cache with it), and read it again inside: the second read must
// give what the first one gave.
func isoTwoReads(t *testing.T, db *dbtest.DB, tx *gorm.DB, id uint, next string) {
	t.Helper()
	first := isoRead(t, isoCached(tx), id)
	isoCommitElsewhere(t, db, id, next)
	if got := isoRead(t, isoCached(db.DB), id); got != next {
		t.Fatalf("outside, after the other commit: %q; want %q", got, next)
	}
	if got := isoRead(t, isoCached(tx), id); got != first {
		t.Errorf("second read in the transaction = %q; want %q, what its first read gave (its snapshot)", got, first)
	}
}

// isoAfter checks, after the transaction, that a read outside gives the
// database's value and that the cache holds nothing the transaction read:
// the entry is the one filled outside, a hit.
func isoAfter(t *testing.T, db *dbtest.DB, id uint, want string) {
	t.Helper()
	db.Pool.Reset()
	if got := isoRead(t, isoCached(db.DB), id); got != want || db.Pool.Queries() != 0 {
		t.Errorf("after the transaction, outside: %q (%d queries); want %q, as a hit of the entry filled outside", got, db.Pool.Queries(), want)
	}
}

func TestIsolationSnapshotLevels(t *testing.T) {
	isoEach(t, func(t *testing.T, db *dbtest.DB) {
		id := isoSetup(t, db)
		levels := []sql.IsolationLevel{sql.LevelRepeatableRead, sql.LevelSerializable}
		if db.Dialect == "sqlite" {
			levels = []sql.IsolationLevel{sql.LevelSerializable} // SQLite's only level
		}
		for _, level := range levels {
			t.Run(level.String(), func(t *testing.T) {
				next := "level-" + level.String()
				_ = isoRead(t, isoCached(db.DB), id) // cached before the transaction
				dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
					isoTwoReads(t, db, tx, id, next)
					return nil
				}, &sql.TxOptions{Isolation: level}))
				isoAfter(t, db, id, next)
			})
		}
	})
}

// A miss inside a snapshot transaction does not fill the cache.
func TestIsolationSnapshotNeverFills(t *testing.T) {
	isoEach(t, func(t *testing.T, db *dbtest.DB) {
		id := isoSetup(t, db)
		isoCommitElsewhere(t, db, id, "cold") // nothing cached
		dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
			if got := isoRead(t, isoCached(tx), id); got != "cold" {
				t.Errorf("read in the transaction: %q", got)
			}
			return nil
		}, &sql.TxOptions{Isolation: sql.LevelSerializable}))
		db.Pool.Reset()
		if got := isoRead(t, isoCached(db.DB), id); got != "cold" || db.Pool.Queries() != 1 {
			t.Errorf("outside after the transaction: %q (%d queries); want a miss (1): the transaction stored nothing", got, db.Pool.Queries())
		}
	})
}

// PostgreSQL with LevelDefault: the server's default_transaction_isolation
// decides, learned from the server.
func TestIsolationPostgresServerDefault(t *testing.T) {
	db := isoPostgres(t, "default_transaction_isolation='repeatable read'")
	id := isoSetup(t, db)
	_ = isoRead(t, isoCached(db.DB), id)
	dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
		var level string
		dbtest.Must(t, tx.Raw("SHOW transaction_isolation").Scan(&level).Error)
		if level != "repeatable read" {
			t.Fatalf("test bug: the transaction runs at %q", level)
		}
		isoTwoReads(t, db, tx, id, "server-default")
		return nil
	}))
	isoAfter(t, db, id, "server-default")
}

// SET TRANSACTION ISOLATION LEVEL inside a GORM transaction switches it.
func TestIsolationSetTransaction(t *testing.T) {
	db := dbtest.Postgres(t) // SQLite has no SET TRANSACTION
	id := isoSetup(t, db)
	for _, stmt := range []string{
		"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
		"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
	} {
		t.Run(stmt, func(t *testing.T) {
			next := "set-" + stmt[len(stmt)-4:]
			_ = isoRead(t, isoCached(db.DB), id)
			dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
				dbtest.Must(t, tx.Exec(stmt).Error)
				isoTwoReads(t, db, tx, id, next)
				return nil
			}))
			isoAfter(t, db, id, next)
		})
	}
}

// A transaction opened with raw SQL on a pinned connection: its reads are
// never stored, and a snapshot's are never served.
func TestIsolationPinnedConnection(t *testing.T) {
	isoEach(t, func(t *testing.T, db *dbtest.DB) {
		id := isoSetup(t, db)
		begins := [][]string{{"BEGIN"}}
		if db.Dialect == "postgres" {
			begins = [][]string{
				{"BEGIN ISOLATION LEVEL REPEATABLE READ"},
				{"START TRANSACTION ISOLATION LEVEL SERIALIZABLE"},
				{"BEGIN", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"},
			}
		}
		for i, begin := range begins {
			// First read from the database (the snapshot starts), then
			// through the cache: the read that would fill it. Then with the
			// row cached before the transaction: the first read is the one
			// that would be served.
			for _, cachedFirst := range []bool{false, true} {
				name := begin[len(begin)-1]
				if cachedFirst {
					name += "/CachedBefore"
				}
				t.Run(name, func(t *testing.T) {
					next := fmt.Sprintf("pinned-%d-%v", i, cachedFirst)
					if cachedFirst {
						_ = isoRead(t, isoCached(db.DB), id)
					}
					dbtest.Must(t, db.Connection(func(c *gorm.DB) error {
						c = c.Session(&gorm.Session{}) // chain from c without changing it
						for _, s := range begin {
							dbtest.Must(t, c.Exec(s).Error)
						}
						first := isoRead(t, c, id)
						if cachedFirst {
							first = isoRead(t, isoCached(c), id)
						}
						isoCommitElsewhere(t, db, id, next)
						if got := isoRead(t, isoCached(c), id); got != first {
							t.Errorf("second read in the pinned transaction = %q; want %q", got, first)
						}
						return c.Exec("COMMIT").Error
					}))
					if got := isoRead(t, isoCached(db.DB), id); got != next {
						t.Errorf("outside after the pinned transaction committed: %q; want %q (the cache was filled from its snapshot)", got, next)
					}
				})
			}
		}
	})
}

// A READ COMMITTED transaction opened on a pinned connection may be served
// while it has not written, but fills nothing.
func TestIsolationPinnedReadCommittedNeverFills(t *testing.T) {
	db := dbtest.Postgres(t) // every SQLite transaction is a snapshot
	id := isoSetup(t, db)
	isoCommitElsewhere(t, db, id, "rc")
	dbtest.Must(t, db.Connection(func(c *gorm.DB) error {
		c = c.Session(&gorm.Session{}) // chain from c without changing it
		dbtest.Must(t, c.Exec("BEGIN ISOLATION LEVEL READ COMMITTED").Error)
		if got := isoRead(t, isoCached(c), id); got != "rc" {
			t.Errorf("read in the pinned transaction: %q", got)
		}
		return c.Exec("COMMIT").Error
	}))
	db.Pool.Reset()
	if got := isoRead(t, isoCached(db.DB), id); got != "rc" || db.Pool.Queries() != 1 {
		t.Errorf("outside after the pinned transaction: %q (%d queries); want a miss (1): it stored nothing", got, db.Pool.Queries())
	}
	// Now cached: a clean READ COMMITTED pinned transaction is served.
	dbtest.Must(t, db.Connection(func(c *gorm.DB) error {
		c = c.Session(&gorm.Session{}) // chain from c without changing it
		dbtest.Must(t, c.Exec("BEGIN").Error)
		if got := isoRead(t, isoCached(c), id); got != "rc" {
			t.Errorf("read in the second pinned transaction: %q", got)
		}
		return c.Exec("COMMIT").Error
	}))
}

// Writes in a pinned raw transaction are invalidated at its COMMIT, and
// dropped at its ROLLBACK; its own reads see them (from the database).
func TestIsolationPinnedTransactionWrites(t *testing.T) {
	isoEach(t, func(t *testing.T, db *dbtest.DB) {
		id := isoSetup(t, db)
		t.Run("Commit", func(t *testing.T) {
			before := isoRead(t, isoCached(db.DB), id)
			dbtest.Must(t, db.Connection(func(c *gorm.DB) error {
				c = c.Session(&gorm.Session{}) // chain from c without changing it
				dbtest.Must(t, c.Exec("BEGIN").Error)
				dbtest.Must(t, c.Exec("UPDATE iso_rows SET v = ? WHERE id = ?", "pinned-commit", id).Error)
				if got := isoRead(t, isoCached(c), id); got != "pinned-commit" {
					t.Errorf("the pinned transaction's read of its own write = %q", got)
				}
				// Outside, the committed value: still a hit.
				db.Pool.Reset()
				if got := isoRead(t, isoCached(db.DB), id); got != before || db.Pool.Queries() != 0 {
					t.Errorf("outside during the pinned transaction: %q (%d queries); want the committed %q as a hit", got, db.Pool.Queries(), before)
				}
				return c.Exec("COMMIT").Error
			}))
			if got := isoRead(t, isoCached(db.DB), id); got != "pinned-commit" {
				t.Errorf("outside right after the pinned COMMIT: %q; want %q", got, "pinned-commit")
			}
		})
		t.Run("Rollback", func(t *testing.T) {
			before := isoRead(t, isoCached(db.DB), id)
			dbtest.Must(t, db.Connection(func(c *gorm.DB) error {
				c = c.Session(&gorm.Session{}) // chain from c without changing it
				dbtest.Must(t, c.Exec("BEGIN").Error)
				dbtest.Must(t, c.Exec("UPDATE iso_rows SET v = ? WHERE id = ?", "pinned-rollback", id).Error)
				if got := isoRead(t, isoCached(c), id); got != "pinned-rollback" {
					t.Errorf("the pinned transaction's read of its own write = %q", got)
				}
				return c.Exec("ROLLBACK").Error
			}))
			db.Pool.Reset()
			if got := isoRead(t, isoCached(db.DB), id); got != before || db.Pool.Queries() != 0 {
				t.Errorf("outside after the pinned ROLLBACK: %q (%d queries); want %q as a hit", got, db.Pool.Queries(), before)
			}
		})
	})
}

// Every SQLite transaction is a snapshot (a deferred one's starts at its
// first read): a plain db.Transaction too.
func TestIsolationSQLitePlainTransaction(t *testing.T) {
	db := isoSQLite(t)
	id := isoSetup(t, db)
	_ = isoRead(t, isoCached(db.DB), id)
	dbtest.Must(t, db.Transaction(func(tx *gorm.DB) error {
		isoTwoReads(t, db, tx, id, "sqlite-plain")
		return nil
	}))
	isoAfter(t, db, id, "sqlite-plain")
}
