package dogpile

import (
	"context"
	"database/sql"
	"sync"

	"gorm.io/gorm"
)

// The invalidation protocol at commit. GORM has no after-commit hook, so the
// plugin wraps the connection pool: transactions begun through it are txConns,
// which collect the invalidations of the writes made in them and apply them
// around the real commit, before Commit returns:
//
//  1. pre-invalidate the queued tags (region.PreInvalidateTags): entries
//     that read them become misses, and entries filled from now on live no
//     longer than the invalidation lease;
//  2. commit;
//  3. invalidate the tags again (region.InvalidateTags): entries filled
//     between 1 and 3 from data older than the commit become misses.
//
// A process that dies between 2 and 3 leaves stale entries for at most the
// lease. Reads never wait on a transaction, and tables are cached as usual
// while transactions write to them: only the commit window is leased.

// pool wraps GORM's connection pool so that it begins txConns.
type pool struct {
	gorm.ConnPool
	plugin *Plugin
}

// BeginTx implements gorm.ConnPoolBeginner.
func (p *pool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	var inner gorm.ConnPool
	switch b := p.ConnPool.(type) {
	case gorm.TxBeginner:
		tx, err := b.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		inner = tx
	case gorm.ConnPoolBeginner:
		tx, err := b.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		inner = tx
	default:
		return nil, gorm.ErrInvalidTransaction
	}
	committer, ok := inner.(gorm.TxCommitter)
	if !ok {
		return inner, nil
	}
	return &txConn{ConnPool: inner, committer: committer, plugin: p.plugin, ctx: ctx}, nil
}

// GetDBConn implements gorm.GetDBConnector, so db.DB() still works.
func (p *pool) GetDBConn() (*sql.DB, error) {
	switch c := p.ConnPool.(type) {
	case *sql.DB:
		return c, nil
	case gorm.GetDBConnector:
		return c.GetDBConn()
	}
	return nil, gorm.ErrInvalidDB
}

// Ping lets GORM ping the wrapped pool.
func (p *pool) Ping() error {
	if pinger, ok := p.ConnPool.(interface{ Ping() error }); ok {
		return pinger.Ping()
	}
	return nil
}

// txConn is a transaction begun through pool.
type txConn struct {
	gorm.ConnPool
	committer gorm.TxCommitter
	plugin    *Plugin
	ctx       context.Context // the context it was begun with, for its values

	mu         sync.Mutex
	pending    []invalidation // guarded by mu; what the commit invalidates
	savepoints map[string]int // guarded by mu; len(pending) when each was set
}

// txOf returns the plugin's transaction behind a statement's pool, and
// whether the pool is a transaction the plugin did not open.
func txOf(cp gorm.ConnPool) (tx *txConn, foreign bool) {
	if ps, ok := cp.(*gorm.PreparedStmtTX); ok {
		cp = ps.Tx
	}
	if tx, ok := cp.(*txConn); ok {
		return tx, false
	}
	_, isTx := cp.(gorm.TxCommitter)
	return nil, isTx
}

func (t *txConn) queue(inv invalidation) {
	t.mu.Lock()
	t.pending = append(t.pending, inv)
	t.mu.Unlock()
}

// dirty reports whether the transaction has written: its reads then go to
// the database, which has its own writes.
func (t *txConn) dirty() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending) > 0
}

func (t *txConn) savepoint(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.savepoints == nil {
		t.savepoints = make(map[string]int)
	}
	t.savepoints[name] = len(t.pending)
}

// rollbackTo drops what was queued after the savepoint: those writes are
// undone, so the cache stays as it was.
func (t *txConn) rollbackTo(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.savepoints[name]; ok && n <= len(t.pending) {
		t.pending = t.pending[:n]
	}
}

// Commit commits, with the invalidations of the transaction's writes around
// the commit; they are done when Commit returns.
func (t *txConn) Commit() error {
	t.mu.Lock()
	pending := t.pending
	t.pending = nil
	t.mu.Unlock()
	if len(pending) == 0 {
		return t.committer.Commit()
	}
	ctx := background(t.ctx)
	t.plugin.apply(ctx, pending, phasePre)
	err := t.committer.Commit()
	t.plugin.apply(ctx, pending, phasePost)
	return err
}

// Rollback rolls back and drops the queued invalidations.
func (t *txConn) Rollback() error {
	t.mu.Lock()
	t.pending = nil
	t.mu.Unlock()
	return t.committer.Rollback()
}

// StmtContext implements gorm.Tx, for GORM's prepared-statement mode.
func (t *txConn) StmtContext(ctx context.Context, stmt *sql.Stmt) *sql.Stmt {
	if s, ok := t.ConnPool.(interface {
		StmtContext(context.Context, *sql.Stmt) *sql.Stmt
	}); ok {
		return s.StmtContext(ctx, stmt)
	}
	return stmt
}
