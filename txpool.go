package dogpile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/internal/sqlscan"
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
//
// What a transaction may read from the cache depends on its isolation level
// (txState.servable). Its reads never fill the cache: its view may be older
// than the last commit. A snapshot transaction (REPEATABLE READ,
// SERIALIZABLE, SNAPSHOT, and LevelDefault where the server's default is
// one of them, see Plugin.levelSnapshot; every SQLite transaction) reads
// the database only: a value served from the cache could be newer than its
// snapshot. A READ COMMITTED one is served from the cache until it writes.
//
// Transactions opened with raw SQL (Exec("BEGIN")) on a pinned connection
// (db.Connection, whose statements run on a *sql.Conn, past the wrapped
// pool) are followed the same way, from their BEGIN to their COMMIT or
// ROLLBACK (invalidate.go, txControl): pinned holds their state, per
// *sql.Conn.

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
	level := sql.LevelDefault
	if opts != nil {
		level = opts.Isolation // ReadOnly changes nothing the cache sees
	}
	st := newTxState(p.plugin, ctx, p.plugin.levelSnapshot(ctx, level))
	return &txConn{ConnPool: inner, committer: committer, txState: st}, nil
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

// txState is what the plugin knows of one open transaction: the
// invalidations its writes queued and what its reads may take from the
// cache.
type txState struct {
	plugin *Plugin
	ctx    context.Context // the context it was begun with, for its values

	mu         sync.Mutex
	pending    []invalidation // guarded by mu; what the commit invalidates
	savepoints map[string]int // guarded by mu; len(pending) when each was set
	snapshot   bool           // guarded by mu; its reads go to the database
	// closed is set (under mu) once a raw COMMIT or ROLLBACK ended the
	// transaction of a txConn: its connection then runs each statement in
	// a transaction of its own, until a raw BEGIN.
	closed bool
	// uncertain is set (under mu) when SQL that controls the transaction
	// failed, so that whether it is open is not known: its writes are then
	// invalidated around their statements as well as at the commit, and
	// its reads go to the database.
	uncertain bool
	// outer is the savepoint whose SAVEPOINT opened the transaction (a
	// pinned SQLite connection): RELEASE of it commits. Set at creation.
	outer string
}

func newTxState(p *Plugin, ctx context.Context, snapshot bool) *txState {
	return &txState{plugin: p, ctx: ctx, snapshot: snapshot}
}

// txConn is a transaction begun through pool.
type txConn struct {
	gorm.ConnPool
	committer gorm.TxCommitter
	*txState
}

// txOf returns the state of the transaction a statement's pool runs in, when
// the plugin follows it (one begun through pool, or opened with raw SQL on a
// pinned connection), and whether the pool is a transaction the plugin does
// not follow.
func txOf(cp gorm.ConnPool) (tx *txState, foreign bool) {
	switch c := cp.(type) {
	case *pool:
		return nil, false // the common case: no transaction
	case *gorm.PreparedStmtTX:
		cp = c.Tx
	case *sql.Conn:
		if st := pinned.lookup(c); st != nil {
			return st, false
		}
		return nil, false
	}
	if tx, ok := cp.(*txConn); ok {
		return tx.txState, false
	}
	_, isTx := cp.(gorm.TxCommitter)
	return nil, isTx
}

// queue adds inv to what the commit invalidates. Once a raw COMMIT or
// ROLLBACK ended the transaction, there is no commit to wait for: inv is
// applied now.
func (t *txState) queue(inv invalidation) {
	t.mu.Lock()
	if !t.closed {
		t.pending = append(t.pending, inv)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.plugin.apply(t.ctx, []invalidation{inv}, phaseOnly)
}

// open reports whether the transaction is open (not ended by a raw COMMIT
// or ROLLBACK).
func (t *txState) open() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.closed
}

// servable reports whether the transaction's reads may be served from the
// cache: it is open, reads committed data as of each statement (not a
// snapshot), and has not written (the database has its own writes).
func (t *txState) servable() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.closed && !t.snapshot && len(t.pending) == 0
}

// toSnapshot records that the transaction reads a snapshot from now on (SET
// TRANSACTION ISOLATION LEVEL REPEATABLE READ, …). The plugin never goes
// the other way: a level lowered by SQL costs misses, never a stale read.
func (t *txState) toSnapshot() {
	t.mu.Lock()
	t.snapshot = true
	t.mu.Unlock()
}

func (t *txState) savepoint(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.savepoints == nil {
		t.savepoints = make(map[string]int)
	}
	t.savepoints[name] = len(t.pending)
}

// rollbackTo drops what was queued after the savepoint: those writes are
// undone, so the cache stays as it was.
func (t *txState) rollbackTo(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.savepoints[name]; ok && n <= len(t.pending) {
		t.pending = t.pending[:n]
	}
}

// take returns and clears what the commit must invalidate.
func (t *txState) take() []invalidation {
	t.mu.Lock()
	defer t.mu.Unlock()
	pending := t.pending
	t.pending, t.savepoints = nil, nil
	return pending
}

// end marks the transaction ended by raw SQL and returns what its commit
// must invalidate.
func (t *txState) end() []invalidation {
	t.mu.Lock()
	defer t.mu.Unlock()
	pending := t.pending
	t.pending, t.savepoints, t.closed = nil, nil, true
	return pending
}

// reopen marks a txConn's connection in a transaction again (a raw BEGIN
// after a raw COMMIT).
func (t *txState) reopen(snapshot bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed, t.snapshot = false, snapshot
}

// unsure records that SQL controlling the transaction failed: it may or may
// not be open. pending is put back (the invalidations of a COMMIT that
// failed, already applied around it, are applied again at the next one).
func (t *txState) unsure(pending []invalidation) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed, t.snapshot, t.uncertain = false, true, true
	t.pending = append(pending, t.pending...)
}

// isUncertain reports whether unsure was called.
func (t *txState) isUncertain() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.uncertain
}

// Commit commits, with the invalidations of the transaction's writes around
// the commit; they are done when Commit returns. Under
// WithStrictInvalidation, a first phase that cannot be written rolls the
// transaction back instead, and Commit returns an error matching
// ErrInvalidationFailed.
func (t *txConn) Commit() error {
	pending := t.take()
	if len(pending) == 0 {
		return t.committer.Commit()
	}
	ctx := background(t.ctx)
	if err := t.plugin.apply(ctx, pending, phasePre); err != nil && t.plugin.strict {
		// WithStrictInvalidation: no commit without its invalidation.
		rerr := t.committer.Rollback()
		_ = t.plugin.apply(ctx, pending, phasePost) // count out where the first phase landed
		return errors.Join(fmt.Errorf("%w: %w", ErrInvalidationFailed, err), rerr)
	}
	err := t.committer.Commit()
	_ = t.plugin.apply(ctx, pending, phasePost) // retried by the regions
	if hasDDL(pending) || t.plugin.graph.stale.Load() {
		// Its DDL, or a graph left stale (by a read of the catalog that
		// failed, or by writes reported from outside) that the writes of
		// transactions, GORM's default ones included, never read again:
		// its connection is back in the pool now.
		t.plugin.reloadGraph(ctx, nil)
	}
	return err
}

// Rollback rolls back and drops the queued invalidations.
func (t *txConn) Rollback() error {
	t.take()
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

// pinned holds the transactions opened with raw SQL on pinned connections,
// by connection. An entry lives from the BEGIN to the COMMIT or ROLLBACK;
// the map holds its connections weakly, and the entry of a connection
// dropped while its transaction was open is removed when the connection is
// collected (its invalidations are applied then: the plugin cannot know
// whether the database committed them). The map is bounded by the number
// of live *sql.Conn values in open transactions.
var pinned pinnedTxs

type pinnedTxs struct {
	n  atomic.Int64 // entries in m: when 0, lookups take no lock
	mu sync.Mutex
	m  map[weak.Pointer[sql.Conn]]*pinnedTx // guarded by mu
}

type pinnedTx struct {
	st      *txState
	cleanup runtime.Cleanup
}

// lookup returns the state of conn's open transaction, or nil.
func (r *pinnedTxs) lookup(conn *sql.Conn) *txState {
	if r.n.Load() == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.m[weak.Make(conn)]; e != nil {
		return e.st
	}
	return nil
}

// begin records the transaction st opened on conn, replacing any other.
func (r *pinnedTxs) begin(conn *sql.Conn, st *txState) {
	k := weak.Make(conn)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[weak.Pointer[sql.Conn]]*pinnedTx)
	}
	if old := r.m[k]; old != nil {
		old.cleanup.Stop()
		r.n.Add(-1)
	}
	e := &pinnedTx{st: st}
	e.cleanup = runtime.AddCleanup(conn, r.collected, pinnedKey{k, e})
	r.m[k] = e
	r.n.Add(1)
}

// drop forgets conn's transaction, if st is still the one recorded.
func (r *pinnedTxs) drop(conn *sql.Conn, st *txState) {
	k := weak.Make(conn)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.m[k]; e != nil && e.st == st {
		e.cleanup.Stop()
		delete(r.m, k)
		r.n.Add(-1)
	}
}

// size returns the number of transactions followed.
func (r *pinnedTxs) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

type pinnedKey struct {
	k weak.Pointer[sql.Conn]
	e *pinnedTx
}

// collected runs once a connection left in an open transaction is garbage:
// whether the database committed it is unknown, so its writes are
// invalidated.
func (r *pinnedTxs) collected(pk pinnedKey) {
	r.mu.Lock()
	if r.m[pk.k] == pk.e {
		delete(r.m, pk.k)
		r.n.Add(-1)
	}
	r.mu.Unlock()
	if pending := pk.e.st.end(); len(pending) > 0 {
		pk.e.st.plugin.apply(pk.e.st.ctx, pending, phaseOnly)
	}
}

// Isolation levels of transactions begun without one. PostgreSQL's is the
// server's default_transaction_isolation (which a database, a role or the
// connection string can set), asked once; SQLite's transactions are all
// snapshots (a deferred one's starts at its first read); on any other
// dialect the level is not known and is taken to be a snapshot: its
// transactions read the database.
const (
	defaultLevelUnknown       uint32 = iota // not learned yet (asking failed)
	defaultLevelReadCommitted               // READ COMMITTED or READ UNCOMMITTED
	defaultLevelSnapshot                    // REPEATABLE READ, SERIALIZABLE, or not known
)

// learnTimeout bounds the question Initialize asks the database; when it
// fails, the next transaction begun without a level asks again.
const learnTimeout = 5 * time.Second

// initIsolation sets what the plugin knows of the default isolation level
// at Initialize.
func (p *Plugin) initIsolation() {
	switch p.dialect {
	case "postgres":
		ctx, cancel := context.WithTimeout(context.Background(), learnTimeout)
		defer cancel()
		p.learnDefault(ctx)
	default: // SQLite: every transaction is a snapshot; others: not known
		p.defaultLevel.Store(defaultLevelSnapshot)
	}
}

// learnDefault asks PostgreSQL its default isolation level, unless that is
// known, and returns it; when asking fails it returns defaultLevelSnapshot
// without remembering it.
func (p *Plugin) learnDefault(ctx context.Context) uint32 {
	p.learnMu.Lock()
	defer p.learnMu.Unlock()
	if l := p.defaultLevel.Load(); l != defaultLevelUnknown {
		return l
	}
	var row *sql.Row
	if c, ok := p.rawPool.(gorm.GetDBConnector); ok {
		if sqlDB, err := c.GetDBConn(); err == nil && sqlDB != nil {
			row = sqlDB.QueryRowContext(ctx, "SHOW default_transaction_isolation")
		}
	}
	if row == nil && p.rawPool != nil {
		row = p.rawPool.QueryRowContext(ctx, "SHOW default_transaction_isolation")
	}
	var level string
	if row == nil || row.Scan(&level) != nil {
		return defaultLevelSnapshot
	}
	l := defaultLevelSnapshot
	switch strings.ToLower(strings.TrimSpace(level)) {
	case "read committed", "read uncommitted":
		l = defaultLevelReadCommitted
	}
	p.defaultLevel.Store(l)
	return l
}

// levelSnapshot reports whether a transaction begun at level reads a
// snapshot (its reads then go to the database).
func (p *Plugin) levelSnapshot(ctx context.Context, level sql.IsolationLevel) bool {
	if p.dialect == "sqlite" {
		return true
	}
	switch level {
	case sql.LevelReadUncommitted, sql.LevelReadCommitted:
		return false
	case sql.LevelDefault:
		return p.defaultSnapshot(ctx)
	}
	return true // REPEATABLE READ, SNAPSHOT, SERIALIZABLE, LINEARIZABLE, and levels not known
}

// defaultSnapshot reports whether a transaction begun without a level reads
// a snapshot.
func (p *Plugin) defaultSnapshot(ctx context.Context) bool {
	if p.sessionSnapshot.Load() {
		return true
	}
	l := p.defaultLevel.Load()
	if l == defaultLevelUnknown {
		l = p.learnDefault(ctx)
	}
	return l != defaultLevelReadCommitted
}

// sqlLevelSnapshot is levelSnapshot for a level named in SQL.
func (p *Plugin) sqlLevelSnapshot(ctx context.Context, level sqlscan.Isolation) bool {
	switch level {
	case sqlscan.IsolationUnnamed:
		return p.levelSnapshot(ctx, sql.LevelDefault)
	case sqlscan.IsolationReadUncommitted, sqlscan.IsolationReadCommitted:
		return p.levelSnapshot(ctx, sql.LevelReadCommitted)
	}
	return true
}
