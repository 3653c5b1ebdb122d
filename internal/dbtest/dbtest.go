// Package dbtest opens real databases for the plugin's tests, through a
// connection pool that counts the statements that reach the database, so
// that tests can say "reached the database exactly N times".
package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile/internal/testharness"
)

// CountingPool is a gorm.ConnPool over a *sql.DB that counts queries
// (QueryContext and QueryRowContext) and execs, including those made inside
// transactions begun through it.
type CountingPool struct {
	DB      *sql.DB
	queries atomic.Int64
	execs   atomic.Int64
}

// Queries returns the number of queries that reached the database.
func (p *CountingPool) Queries() int64 { return p.queries.Load() }

// Execs returns the number of execs that reached the database.
func (p *CountingPool) Execs() int64 { return p.execs.Load() }

// Reset sets both counters to zero.
func (p *CountingPool) Reset() { p.queries.Store(0); p.execs.Store(0) }

// PrepareContext implements gorm.ConnPool.
func (p *CountingPool) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return p.DB.PrepareContext(ctx, q)
}

// ExecContext implements gorm.ConnPool.
func (p *CountingPool) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	p.execs.Add(1)
	return p.DB.ExecContext(ctx, q, args...)
}

// QueryContext implements gorm.ConnPool.
func (p *CountingPool) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	p.queries.Add(1)
	return p.DB.QueryContext(ctx, q, args...)
}

// QueryRowContext implements gorm.ConnPool.
func (p *CountingPool) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	p.queries.Add(1)
	return p.DB.QueryRowContext(ctx, q, args...)
}

// BeginTx implements gorm.ConnPoolBeginner with a transaction that counts too.
func (p *CountingPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	tx, err := p.DB.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &countingTx{Tx: tx, p: p}, nil
}

// GetDBConn implements gorm.GetDBConnector.
func (p *CountingPool) GetDBConn() (*sql.DB, error) { return p.DB, nil }

type countingTx struct {
	*sql.Tx
	p *CountingPool
}

func (t *countingTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	t.p.execs.Add(1)
	return t.Tx.ExecContext(ctx, q, args...)
}

func (t *countingTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	t.p.queries.Add(1)
	return t.Tx.QueryContext(ctx, q, args...)
}

func (t *countingTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	t.p.queries.Add(1)
	return t.Tx.QueryRowContext(ctx, q, args...)
}

// DB is an open database with its counting pool.
type DB struct {
	*gorm.DB
	Pool    *CountingPool
	Dialect string // "sqlite" or "postgres"
}

func config() *gorm.Config {
	return &gorm.Config{Logger: logger.Discard}
}

// SQLite opens a new SQLite database file in a temporary folder. The file is
// shared by every connection of the pool (WAL mode, busy timeout), so
// concurrent tests behave as they would on a server.
func SQLite(t testing.TB) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.db")
	sqlDB, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	pool := &CountingPool{DB: sqlDB}
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: pool}), config())
	if err != nil {
		t.Fatal(err)
	}
	return &DB{DB: db, Pool: pool, Dialect: "sqlite"}
}

// Postgres opens a fresh database on the test binary's shared PostgreSQL
// server (the test package's TestMain must call testharness.Main).
func Postgres(t testing.TB) *DB {
	t.Helper()
	dsn := testharness.SharedPostgres(t).NewDatabase(t)
	sqlDB, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	pool := &CountingPool{DB: sqlDB}
	db, err := gorm.Open(postgres.New(postgres.Config{Conn: pool}), config())
	if err != nil {
		t.Fatal(err)
	}
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
