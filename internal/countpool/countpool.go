// Package countpool is a GORM connection pool that counts the statements
// reaching the database: the tests and the demo use it to show exactly how
// often a query went past the cache.
package countpool

import (
	"context"
	"database/sql"
	"sync/atomic"

	"gorm.io/gorm"
)

// Pool is a gorm.ConnPool over a *sql.DB that counts queries
// (QueryContext and QueryRowContext) and execs, including those made inside
// transactions begun through it.
type Pool struct {
	DB      *sql.DB
	queries atomic.Int64
	execs   atomic.Int64
}

// Queries returns the number of queries that reached the database.
func (p *Pool) Queries() int64 { return p.queries.Load() }

// Execs returns the number of execs that reached the database.
func (p *Pool) Execs() int64 { return p.execs.Load() }

// Reset sets both counters to zero.
func (p *Pool) Reset() { p.queries.Store(0); p.execs.Store(0) }

// PrepareContext implements gorm.ConnPool.
func (p *Pool) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return p.DB.PrepareContext(ctx, q)
}

// ExecContext implements gorm.ConnPool.
func (p *Pool) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	p.execs.Add(1)
	return p.DB.ExecContext(ctx, q, args...)
}

// QueryContext implements gorm.ConnPool.
func (p *Pool) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	p.queries.Add(1)
	return p.DB.QueryContext(ctx, q, args...)
}

// QueryRowContext implements gorm.ConnPool.
func (p *Pool) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	p.queries.Add(1)
	return p.DB.QueryRowContext(ctx, q, args...)
}

// BeginTx implements gorm.ConnPoolBeginner with a transaction that counts too.
func (p *Pool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	tx, err := p.DB.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &countingTx{Tx: tx, p: p}, nil
}

// GetDBConn implements gorm.GetDBConnector.
func (p *Pool) GetDBConn() (*sql.DB, error) { return p.DB, nil }

type countingTx struct {
	*sql.Tx
	p *Pool
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
