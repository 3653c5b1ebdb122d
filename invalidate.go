package dogpile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"weak"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/dogpile-go/dogpile/internal/sqlscan"
	"github.com/dogpile-go/dogpile/region"
)

// The invalidation protocol, write side. Every write made through GORM
// invalidates the tables it wrote (region tags, see package region):
//
//   - inside a transaction opened through GORM (db.Transaction, db.Begin, or
//     GORM's own transaction around Create/Save/Update/Delete), the tables are
//     queued on the transaction; its Commit pre-invalidates them, commits, and
//     invalidates them again before it returns (txpool.go); Rollback drops
//     them, and a rollback to a savepoint drops what was queued after it;
//   - outside a transaction, the write is pre-invalidated before the
//     statement runs and invalidated after it.
//
// Tables come from the statement's table for Create, Update and Delete, and
// from the SQL text for Exec, Raw(…).Scan, and raw SQL through the query
// chain that is not a plain read (Raw("UPDATE … RETURNING …").Find, a CTE
// that writes: fromcache.go runs it as a write, never from the cache). A
// statement whose effect cannot be read (DDL, CALL, DO…) invalidates every
// table. Every write also invalidates anyTable, on which queries with
// unknown tables depend.
//
// Raw transaction control is followed too (txControl): a transaction opened
// with BEGIN on a pinned connection (db.Connection) queues its writes like
// one opened through GORM, and its COMMIT applies them around itself.

// invalidation is a set of tags to invalidate in one region, or in all
// regions when region is "". all invalidates the whole region: for
// statements whose effect cannot be read from their SQL.
type invalidation struct {
	region string
	tags   []string
	all    bool
	more   func() []string // tags known once the statement ran (relwrite.go), read when applied
	// ddl marks the invalidation of a statement that may change the schema:
	// once it is applied after the statement (or its commit), the schema
	// graph is read again (graph.go).
	ddl bool
}

// postKey holds, for a statement written outside a transaction (or one
// that commits a raw transaction), the invalidations ([]invalidation) to
// apply again after it ran.
type postKey struct{ stmt *gorm.Statement }

func (p *Plugin) beforeCreate(db *gorm.DB) {
	if c, ok := db.Statement.Clauses["INSERT"]; ok {
		if ins, ok := c.Expression.(clause.Insert); ok && strings.Contains(strings.ToUpper(ins.Modifier), "REPLACE") {
			// INSERT OR REPLACE (SQLite) deletes the rows it conflicts
			// with, and the database runs their ON DELETE actions.
			p.beforeWriteOf(db, writeAny)
			return
		}
	}
	if c, ok := db.Statement.Clauses["ON CONFLICT"]; ok {
		if oc, ok := c.Expression.(clause.OnConflict); !ok || !oc.DoNothing {
			// An upsert (Save of a slice) may update existing rows.
			p.beforeWriteOf(db, writeUpdate)
			return
		}
	}
	p.beforeWriteOf(db, writeCreate)
}
func (p *Plugin) beforeUpdate(db *gorm.DB) { p.beforeWriteOf(db, writeUpdate) }
func (p *Plugin) beforeDelete(db *gorm.DB) { p.beforeWriteOf(db, writeDelete) }

// beforeWriteOf runs before Create, Update and Delete: they write the
// statement's table (association saves and join-table rows run chains of
// their own).
func (p *Plugin) beforeWriteOf(db *gorm.DB, kind writeKind) {
	if db.Error != nil || db.DryRun {
		return
	}
	stmt := db.Statement
	t := normTable(stmt.Table)
	if t == "" && stmt.Schema != nil {
		t = normTable(stmt.Schema.Table)
	}
	if t == "" {
		p.beginWrite(db, invalidation{all: true})
		return
	}
	tx, _ := txOf(stmt.ConnPool)
	rel, after := p.relationTags(db, kind, t, tx != nil && tx.open())
	if after {
		stmt.Settings.Store(newValuesKey{stmt}, true)
	}
	db2, all := p.writeTags(db, []string{t}, kind, false) // what the database changes with it
	p.beginWrite(db, invalidation{tags: append(append([]string{t, anyTable}, rel...), db2...), all: all})
}

// beforeSQLWrite runs before Exec and Raw(…).Scan/Row/Rows: what they write
// is read from their SQL.
func (p *Plugin) beforeSQLWrite(db *gorm.DB) {
	if db.Error != nil || db.DryRun || db.Statement.SQL.Len() == 0 {
		return // Row/Rows of a model query: SQL is built later, and reads
	}
	p.sqlWrite(db, p.scan(db.Statement.SQL.String(), ""))
}

// writesSQL reports raw SQL that the query chain must run as a write: it is
// not a plain read (UPDATE … RETURNING, a CTE that writes, a statement whose
// effect is not known) or it controls a transaction.
func writesSQL(st *scanned) bool { return st.Kind != sqlscan.Read || len(st.Tx) > 0 }

// sqlWrite is the first phase of raw SQL, whichever chain runs it: it
// follows the transaction control in it and begins the invalidation of
// what it writes. afterWrite is the second phase.
func (p *Plugin) sqlWrite(db *gorm.DB, st *scanned) {
	var around []invalidation
	tx, _ := txOf(db.Statement.ConnPool)
	if len(st.Tx) > 0 || st.Savepoint != "" || st.Release != "" {
		tx, around = p.txControl(db, st, tx)
	}
	if tx != nil {
		switch {
		case st.Savepoint != "":
			tx.savepoint(st.Savepoint)
		case st.RollbackTo != "":
			tx.rollbackTo(st.RollbackTo)
		}
	}
	var inv invalidation
	switch st.Kind {
	case sqlscan.Read, sqlscan.Control:
		if len(around) > 0 {
			p.around(db, around)
		}
		return
	case sqlscan.Write:
		tags := append([]string{anyTable}, st.Writes...)
		for _, t := range st.Writes {
			tags = append(tags, coarseTag(t))
		}
		more, all := p.writeTags(db, st.Writes, writeAny, st.Truncate)
		inv = invalidation{tags: append(tags, more...), all: all}
	default:
		inv = invalidation{all: true, ddl: st.DDL}
	}
	if len(st.Tx) == 0 {
		p.beginWrite(db, inv)
		if len(around) > 0 {
			p.around(db, around)
		}
		return
	}
	// Its writes may run inside the transaction it controls or outside:
	// invalidate them around the statement, and at the commit if it leaves
	// a transaction open.
	if tx != nil && tx.open() {
		tx.queue(inv)
	}
	p.around(db, append(around, inv))
}

// rawTxKey marks a statement whose transaction control afterWrite settles:
// when it fails, whether the transaction it began or ended is open is not
// known.
type rawTxKey struct{ stmt *gorm.Statement }

// rawTxUndo is what a statement's transaction control did.
type rawTxUndo struct {
	conn    *sql.Conn // nil: a txConn's connection
	begun   *txState  // the transaction it began, if any
	ended   *txState  // the transaction it committed, if any
	pending []invalidation
}

// settle runs after the statement: if it failed, the transactions it began
// or committed may be open or not, and are followed as uncertain.
func (u *rawTxUndo) settle(err error) {
	if err == nil {
		return
	}
	if u.begun != nil {
		u.begun.unsure(nil)
	}
	if u.ended != nil {
		u.ended.unsure(u.pending)
		if u.conn != nil {
			pinned.begin(u.conn, u.ended)
		}
	}
}

// txControl follows the transaction-control statements of st, run on the
// statement's connection: a raw BEGIN or START TRANSACTION on a pinned
// connection opens a transaction the plugin follows (pinned, in txpool.go),
// COMMIT ends it and returns its queued invalidations, to apply around the
// statement, ROLLBACK drops them, SET TRANSACTION ISOLATION LEVEL makes it
// a snapshot. A SAVEPOINT outside a transaction on a pinned SQLite
// connection opens one too, which RELEASE of that savepoint commits. It
// returns the statement's transaction after them.
func (p *Plugin) txControl(db *gorm.DB, st *scanned, tx *txState) (*txState, []invalidation) {
	stmt := db.Statement
	ctx := stmt.Context
	conn, _ := stmt.ConnPool.(*sql.Conn)
	var around []invalidation
	undo := &rawTxUndo{conn: conn}
	begin := func(snapshot bool, outer string) {
		switch {
		case tx != nil && tx.open():
			// BEGIN in a transaction: PostgreSQL warns and goes on in the
			// same one; the others fail.
		case conn != nil:
			tx = newTxState(p, ctx, snapshot)
			tx.outer = outer
			pinned.begin(conn, tx)
			undo.begun = tx
		case tx != nil:
			tx.reopen(snapshot) // a txConn's connection after a raw COMMIT
		}
	}
	commit := func() {
		if tx == nil || !tx.open() {
			return
		}
		pending := tx.end()
		around = append(around, pending...)
		undo.ended, undo.pending = tx, pending
		if conn != nil {
			pinned.drop(conn, tx)
		}
	}
	if conn != nil && p.dialect == "sqlite" {
		switch {
		case st.Savepoint != "" && tx == nil:
			begin(true, st.Savepoint)
		case st.Release != "" && tx != nil && tx.outer == st.Release:
			commit()
		}
	}
	for _, op := range st.Tx {
		switch op.Kind {
		case sqlscan.TxBegin:
			begin(p.sqlLevelSnapshot(ctx, op.Level), "")
		case sqlscan.TxCommit:
			commit()
		case sqlscan.TxPrepare:
			if tx != nil && tx.open() {
				// Its commit (COMMIT PREPARED, from any session) is not
				// followed: the invalidations run around PREPARE, and
				// entries filled until the lease ends die with it.
				p.warn(db, "dogpile: PREPARE TRANSACTION: the plugin does not follow the COMMIT PREPARED of a two-phase transaction; its writes were invalidated at PREPARE")
				commit()
			}
		case sqlscan.TxRollback:
			if tx != nil && tx.open() {
				tx.end()
				if conn != nil {
					pinned.drop(conn, tx)
				}
			}
		case sqlscan.TxIsolation:
			if !p.sqlLevelSnapshot(ctx, op.Level) {
				break // a lowered level costs misses, never a stale read
			}
			if tx != nil && tx.open() {
				tx.toSnapshot()
			}
			if op.Session || tx == nil || !tx.open() {
				// A session's default, or SET TRANSACTION outside a
				// transaction (the next one's level on MySQL, the session's
				// on SQL Server): any connection may now begin snapshots.
				p.sessionSnapshot.Store(true)
			}
		}
	}
	if undo.begun != nil || undo.ended != nil {
		stmt.Settings.Store(rawTxKey{stmt}, undo)
	}
	return tx, around
}

// beginWrite queues inv on the statement's transaction, or, outside one,
// pre-invalidates now and leaves the second phase to afterWrite.
func (p *Plugin) beginWrite(db *gorm.DB, inv invalidation) {
	tx, foreign := txOf(db.Statement.ConnPool)
	if tx != nil && tx.open() {
		tx.queue(inv)
		if !tx.isUncertain() {
			return
		}
	}
	if foreign {
		// A transaction the plugin did not open: its commit cannot be seen
		// (foreigntx.go).
		p.strictly(db, p.writeForeign(db.Statement.Context, inv))
		return
	}
	// Outside a transaction: entries filled from now until the second
	// phase live no longer than the invalidation lease.
	p.around(db, []invalidation{inv})
}

// around pre-invalidates invs now, and leaves the second phase to
// afterWrite, once the statement ran.
func (p *Plugin) around(db *gorm.DB, invs []invalidation) {
	stmt := db.Statement
	p.strictly(db, p.apply(stmt.Context, invs, phasePre))
	if v, ok := stmt.Settings.Load(postKey{stmt}); ok {
		invs = append(v.([]invalidation), invs...)
	}
	stmt.Settings.Store(postKey{stmt}, invs)
}

// strictly fails the statement of db, before it runs, when its first
// invalidation phase failed (err) under WithStrictInvalidation: GORM's
// Create, Update, Delete, Exec and Raw callbacks do not run a statement
// that has an error, so no write lands without its invalidation. The second
// phase still runs (afterWrite), counting the writer out where the first
// one landed.
func (p *Plugin) strictly(db *gorm.DB, err error) {
	if err != nil && p.strict {
		_ = db.AddError(fmt.Errorf("%w: %w", ErrInvalidationFailed, err))
	}
}

// afterWrite is the second phase of a write made outside a transaction, and
// of raw transaction control.
func (p *Plugin) afterWrite(db *gorm.DB) {
	stmt := db.Statement
	p.keysReturned(db) // a delete's RETURNING rows (relwrite.go)
	if v, ok := stmt.Settings.LoadAndDelete(rawTxKey{stmt}); ok {
		v.(*rawTxUndo).settle(db.Error)
	}
	if v, ok := stmt.Settings.LoadAndDelete(postKey{stmt}); ok {
		invs := v.([]invalidation)
		_ = p.apply(stmt.Context, invs, phasePost) // retried by the regions
		if hasDDL(invs) {
			p.reloadGraph(stmt.Context, stmt.ConnPool)
		}
	}
}

// hasDDL reports whether invs include the invalidation of DDL.
func hasDDL(invs []invalidation) bool {
	return slices.ContainsFunc(invs, func(inv invalidation) bool { return inv.ddl })
}

// phase is which part of an invalidation apply does.
type phase uint8

const (
	phaseOnly phase = iota // a single invalidation (no commit to wrap)
	phasePre               // before a commit or statement: mark and bump
	phasePost              // after it: bump again and withdraw the mark
)

// apply invalidates invs in their regions: one call per region and phase,
// which a shared backend sends as one round trip (a statement whose tables
// are unknown adds region.EveryValue, the whole region, to the same call).
// The regions are called in parallel, so that a phase costs a write one
// backend timeout at most during an outage, however many regions it
// touches. Errors are kept by the regions, which retry them and bypass the
// affected tags until they land: a cache outage never fails a write. It
// returns the errors, for WithStrictInvalidation.
func (p *Plugin) apply(ctx context.Context, invs []invalidation, ph phase) error {
	ctx = background(ctx)
	if ph != phasePre && hasDDL(invs) {
		// The schema may have changed: the graph is read again before the
		// next write that needs it (afterWrite and Commit read it at once).
		p.graphStale()
	}
	type call struct {
		r    *region.Region
		tags []string
	}
	var calls []call
	for i, r := range p.regionList {
		if tags := p.regionTags(invs, p.regionNames[i]); len(tags) > 0 {
			calls = append(calls, call{r, tags})
		}
	}
	if len(calls) == 1 {
		return invalidatePhase(ctx, calls[0].r, calls[0].tags, ph)
	}
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() { errs[i] = invalidatePhase(ctx, c.r, c.tags, ph) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// invalidatePhase sends one phase of an invalidation of tags to r.
func invalidatePhase(ctx context.Context, r *region.Region, tags []string, ph phase) error {
	switch ph {
	case phasePre:
		return r.PreInvalidateTags(ctx, tags...)
	case phasePost:
		return r.PostInvalidateTags(ctx, tags...)
	default:
		return r.InvalidateTags(ctx, tags...)
	}
}

// regionTags returns the tags of invs that concern the region registered
// under name, each once, in the order they first appear.
func (p *Plugin) regionTags(invs []invalidation, name string) []string {
	var tags []string
	seen := make(map[string]struct{})
	add := func(t string) {
		if _, dup := seen[t]; !dup {
			seen[t] = struct{}{}
			tags = append(tags, t)
		}
	}
	for _, inv := range invs {
		// The name the region is registered under: InvalidateKey's,
		// whatever name the region gave itself.
		if inv.region != "" && inv.region != name {
			continue
		}
		if inv.all {
			add(region.EveryValue)
		}
		for _, t := range inv.tags {
			add(t)
		}
		if inv.more != nil {
			for _, t := range inv.more() {
				add(t)
			}
		}
	}
	return tags
}

// pluginOf finds the plugin registered on db.
func pluginOf(db *gorm.DB) (*Plugin, error) {
	if db == nil || db.Config == nil {
		return nil, ErrNotRegistered
	}
	p, ok := db.Config.Plugins[PluginName].(*Plugin)
	if !ok {
		return nil, ErrNotRegistered
	}
	return p, nil
}

// ErrNotRegistered is returned by InvalidateTables and InvalidateKey when
// given no database: a nil *gorm.DB, or one without a Config. On a database
// without the plugin they return nil (see InvalidateTables).
var ErrNotRegistered = errors.New("dogpile: plugin not registered on this *gorm.DB (call db.Use(dogpile.New(regions)))")

// withoutPlugin reports whether db is a database without the plugin, on
// which InvalidateTables and InvalidateKey have nothing to do; it says so
// once per database, through the database's logger.
func withoutPlugin(db *gorm.DB, fn string) bool {
	if db == nil || db.Config == nil {
		return false
	}
	if _, ok := db.Config.Plugins[PluginName].(*Plugin); ok {
		return false
	}
	cb := db.Callback() // one per gorm.Open, shared by its sessions
	if cb == nil {
		warnWithoutPlugin(db, fn)
		return true
	}
	k := weak.Make(cb)
	if _, said := warnedDBs.LoadOrStore(k, struct{}{}); !said {
		runtime.AddCleanup(cb, func(k any) { warnedDBs.Delete(k) }, any(k))
		warnWithoutPlugin(db, fn)
	}
	return true
}

// warnedDBs holds the databases (weakly, by their callbacks) told that the
// plugin is not registered on them.
var warnedDBs sync.Map

func warnWithoutPlugin(db *gorm.DB, fn string) {
	if db.Logger == nil {
		return
	}
	db.Logger.Warn(contextOf(db), "dogpile: %s on a *gorm.DB without the dogpile plugin: nothing is cached through this database, "+
		"so there is nothing to invalidate; caches that other processes hold (a shared backend) are not invalidated by its writes. "+
		"Said once for this database.", fn)
}

func contextOf(db *gorm.DB) context.Context {
	if db != nil && db.Statement != nil && db.Statement.Context != nil {
		return db.Statement.Context
	}
	return context.Background()
}

// warn says msg through db's logger.
func (p *Plugin) warn(db *gorm.DB, msg string) {
	if db.Logger != nil {
		db.Logger.Warn(contextOf(db), "%s", msg)
	}
}

// InvalidateTables invalidates every cached answer that read any of tables,
// in every region: for model hooks, and for writes made outside GORM. Called
// inside a transaction, it takes effect at the commit (and not at all if the
// transaction rolls back). A cache outage is not reported: the region keeps
// the invalidation and retries it.
//
// On a *gorm.DB without the plugin (a seed script, a migration, an admin
// tool sharing the models' hooks) it does nothing and returns nil: nothing
// is cached through that database. It says so once per database, as a
// warning through the database's logger. It returns ErrNotRegistered for a
// nil *gorm.DB.
func InvalidateTables(tx *gorm.DB, tables ...string) error {
	if withoutPlugin(tx, "InvalidateTables") {
		return nil
	}
	p, err := pluginOf(tx)
	if err != nil {
		return err
	}
	tags := make([]string, 0, len(tables)+1)
	for _, t := range tables {
		tags = append(tags, normTable(t))
	}
	more, all := p.writeTags(tx, tags, writeAny, false) // what the database changed with them
	p.invalidate(tx, invalidation{tags: append(append(tags, anyTable), more...), all: all})
	return nil
}

// InvalidateKey invalidates every entry made in the named region with
// FromCache(…, WithKey(name)), whatever its bind values. Inside a
// transaction it takes effect at the commit. It returns an error matching
// ErrUnknownRegion for a region the plugin was not given. On a *gorm.DB
// without the plugin it does nothing and returns nil, as InvalidateTables
// does; it returns ErrNotRegistered for a nil *gorm.DB.
func InvalidateKey(tx *gorm.DB, regionName, name string) error {
	if withoutPlugin(tx, "InvalidateKey") {
		return nil
	}
	p, err := pluginOf(tx)
	if err != nil {
		return err
	}
	if _, err := p.regionFor(regionName); err != nil {
		return err
	}
	p.invalidate(tx, invalidation{region: regionName, tags: []string{keyTag(name)}})
	return nil
}

func (p *Plugin) invalidate(db *gorm.DB, inv invalidation) {
	ctx := context.Background()
	if db.Statement != nil {
		if db.Statement.Context != nil {
			ctx = db.Statement.Context
		}
		tx, foreign := txOf(db.Statement.ConnPool)
		if tx != nil {
			tx.queue(inv)
			return
		}
		if foreign {
			_ = p.writeForeign(ctx, inv) // retried by the regions
			return
		}
	}
	_ = p.apply(ctx, []invalidation{inv}, phaseOnly) // retried by the regions
}
