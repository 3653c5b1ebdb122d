// Package dbtest opens real databases for the plugin's tests, through a
// connection pool that counts the statements that reach the database, so
// that tests can say "reached the database exactly N times".
package dbtest

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile/internal/countpool"
	"github.com/dogpile-go/dogpile/internal/testharness"
)

// DB is an open database with its counting pool.
type DB struct {
	*gorm.DB
	Pool    *countpool.Pool
	Dialect string // "sqlite" or "postgres"
}

func config() *gorm.Config {
	return &gorm.Config{Logger: logger.Discard}
}

// SQLite opens a new SQLite database file in a temporary folder. The file is
// shared by every connection of the pool (WAL mode, busy timeout), so
// concurrent tests behave as they would on a server; transactions begin
// IMMEDIATE.
func SQLite(t testing.TB) *DB {
	return OpenSQLite(t, "_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate")
}

// OpenSQLite is SQLite with the given DSN parameters.
func OpenSQLite(t testing.TB, params string) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.db")
	sqlDB, err := sql.Open("sqlite3", "file:"+path+"?"+params)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	pool := &countpool.Pool{DB: sqlDB}
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: pool}), config())
	if err != nil {
		t.Fatal(err)
	}
	force(t, db)
	return &DB{DB: db, Pool: pool, Dialect: "sqlite"}
}

// Postgres opens a fresh database on the test binary's shared PostgreSQL
// server (the test package's TestMain must call testharness.Main).
func Postgres(t testing.TB) *DB { return OpenPostgres(t, "") }

// OpenPostgres is Postgres whose connections start with the given runtime
// settings (a DSN suffix such as "default_transaction_isolation='repeatable
// read'"; "" for none).
func OpenPostgres(t testing.TB, settings string) *DB {
	t.Helper()
	dsn := testharness.SharedPostgres(t).NewDatabase(t)
	if settings != "" {
		dsn += " " + settings
	}
	sqlDB, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	pool := &countpool.Pool{DB: sqlDB}
	db, err := gorm.Open(postgres.New(postgres.Config{Conn: pool}), config())
	if err != nil {
		t.Fatal(err)
	}
	force(t, db)
	return &DB{DB: db, Pool: pool, Dialect: "postgres"}
}

// Each runs fn once per database kind, as subtests named after the dialect.
func Each(t *testing.T, fn func(t *testing.T, db *DB)) {
	t.Helper()
	for _, open := range []func(testing.TB) *DB{SQLite, Postgres} {
		db := open(t)
		t.Run(db.Dialect, func(t *testing.T) { fn(t, db) })
	}
}

// Must fails the test on err.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(fmt.Errorf("unexpected error: %w", err))
	}
}
