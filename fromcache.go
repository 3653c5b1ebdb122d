package dogpile

import (
	"bytes"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"

	"github.com/dogpile-go/dogpile/region"
)

// Option configures one FromCache (or RelationshipCache). Options are small
// values, not closures: passing them allocates nothing.
type Option struct {
	kind   optionKind
	d      time.Duration                   // WithExpiration
	name   string                          // WithKey
	tables []string                        // WithTables, as given
	keep   func(dest any, rows int64) bool // ShouldCache
}

type optionKind uint8

const (
	optNone optionKind = iota // the zero Option: changes nothing
	optExpiration
	optKey
	optTables
	optIgnoreExpiration
	optShouldCache
)

// fromCache is what a FromCache scope asks of a query. It is immutable once
// its scope is made: one value serves every statement the scope is applied
// to, concurrently.
type fromCache struct {
	region        string
	expiration    time.Duration
	expirationSet bool
	ignoreExpiry  bool
	name          string            // WithKey
	tables        []string          // WithTables, normalised
	keep          region.CallOption // ShouldCache (keepOf); nil: none

	clause clause.Clause // the clause its scope puts on a statement (fromCacheClause)
}

// WithExpiration overrides the region's expiration for this query (or, in
// RelationshipCache, for the association's entries). Zero or a negative d
// (region.NeverExpire among them) means never: the answer stays fresh until
// a write invalidates it, as region.WithExpiration(0) means for a region.
func WithExpiration(d time.Duration) Option {
	if d <= 0 {
		d = region.NeverExpire
	}
	return Option{kind: optExpiration, d: d}
}

// WithKey names the query's entries. The name works like a table of its own:
// InvalidateKey(tx, region, name) invalidates every entry made under it,
// whatever its bind values (which still count in the key).
func WithKey(name string) Option { return Option{kind: optKey, name: name} }

// WithTables declares the tables a query reads, for raw SQL the plugin cannot
// read the tables from. Without it, the tables come from the statement; a
// query whose tables cannot be known depends on every write.
func WithTables(tables ...string) Option { return Option{kind: optTables, tables: tables} }

// IgnoreExpiration serves a cached answer however old it is; writes still
// invalidate it.
func IgnoreExpiration() Option { return Option{kind: optIgnoreExpiration} }

// scopeKey is everything a fromCache is made of but its tables: the key of
// the scopes shared between calls (sharedScopes).
type scopeKey struct {
	region        string
	name          string
	expiration    time.Duration
	expirationSet bool
	ignoreExpiry  bool
	rel           bool // a RelationshipCache scope, of the association at path
	path          string
}

// optionsOf applies opts to the scope key k of a region, and returns the
// tables they declare (nil when none: the scope can be shared), normalised.
func optionsOf(k *scopeKey, opts []Option) (tables []string) {
	for _, o := range opts {
		switch o.kind {
		case optExpiration:
			k.expiration, k.expirationSet = o.d, true
		case optKey:
			k.name = o.name
		case optTables:
			for _, t := range o.tables {
				tables = append(tables, normTable(t))
			}
		case optIgnoreExpiration:
			k.ignoreExpiry = true
		}
	}
	return tables
}

// newFromCache returns the options of k and tables as a fromCache, with
// its clause.
func newFromCache(k scopeKey, tables []string) *fromCache {
	fc := &fromCache{region: k.region, expiration: k.expiration, expirationSet: k.expirationSet,
		ignoreExpiry: k.ignoreExpiry, name: k.name, tables: tables}
	fc.clause = clause.Clause{Name: fromCacheClause, Expression: fromCacheExpr{fc}}
	return fc
}

// apply is a FromCache scope: it puts fc's clause on the statement. It
// writes nothing but the statement's own clause map, so one scope serves
// any number of statements at once.
func (fc *fromCache) apply(db *gorm.DB) *gorm.DB {
	db.Statement.Clauses[fromCacheClause] = fc.clause
	return db
}

// sharedScopes holds the scopes FromCache and RelationshipCache return for
// options without tables, made once and shared by every call that asks for
// the same ones, so that a scope written inline in each query costs no
// allocation. It is bounded: past maxSharedScopes scopes (options made of
// ever new key names, say), it is emptied and fills again with those in use.
var sharedScopes struct {
	m    sync.Map // scopeKey → *sharedScope
	n    atomic.Int64
	last atomic.Pointer[sharedScope] // the FromCache scope without options last returned
}

// sharedScope is one scope of sharedScopes.
type sharedScope struct {
	key   scopeKey
	scope func(*gorm.DB) *gorm.DB
}

// maxSharedScopes bounds sharedScopes.
const maxSharedScopes = 1 << 10

// shared returns the shared scope of k, made by build the first time.
func shared(k scopeKey, build func() func(*gorm.DB) *gorm.DB) *sharedScope {
	if v, ok := sharedScopes.m.Load(k); ok {
		return v.(*sharedScope)
	}
	if sharedScopes.n.Add(1) > maxSharedScopes {
		sharedScopes.m.Clear()
		sharedScopes.n.Store(1)
	}
	v, _ := sharedScopes.m.LoadOrStore(k, &sharedScope{k, build()})
	return v.(*sharedScope)
}

// fromCacheClause is where a FromCache scope puts its options: among the
// statement's clauses, which GORM copies with the statement (through Session
// and chaining) but not into the statements of preloads, to which FromCache,
// like SQLAlchemy's option, does not apply. GORM builds only the clauses it
// names, so this one never reaches the SQL.
const fromCacheClause = "dogpile:fromcache"

// fromCacheExpr carries a FromCache's options as a clause.
type fromCacheExpr struct{ fc *fromCache }

// Build writes nothing: the clause is never part of the SQL.
func (fromCacheExpr) Build(clause.Builder) {}

// preloadingKey marks a statement whose preloads are running: preload
// statements copy their parent's settings, and so learn they are preloads
// (RelationshipCache applies to them).
type preloadingKey struct{}

// FromCache returns a scope that answers the query from the named region:
//
//	db.Scopes(dogpile.FromCache("default")).Where("age > ?", 30).Find(&users)
//
// It applies to the finishers that run GORM's query chain (First, Take, Last,
// Find, Count, Pluck, FirstOrInit, FindInBatches, Raw(…).Find). Row, Rows and
// Scan return driver rows and bypass the cache. Raw SQL that writes
// (UPDATE/INSERT/DELETE … RETURNING, a CTE that writes) is a write: it always
// runs against the database, is neither answered from nor stored in the
// cache, and invalidates what it writes. For SELECT … FOR UPDATE, inside a
// transaction that has written, and inside a snapshot transaction
// (REPEATABLE READ, SERIALIZABLE or SNAPSHOT; one begun without a level on
// a PostgreSQL server whose default is one of them; every SQLite
// transaction), the query goes to the database; a READ COMMITTED
// transaction that has not written may be served from the cache. No
// transaction's reads fill it.
func FromCache(regionName string, opts ...Option) func(*gorm.DB) *gorm.DB {
	if len(opts) == 0 {
		if l := sharedScopes.last.Load(); l != nil && l.key.region == regionName {
			return l.scope
		}
	}
	k := scopeKey{region: regionName}
	tables := optionsOf(&k, opts)
	if keep := keepOf(opts); tables != nil || keep != nil {
		fc := newFromCache(k, tables)
		fc.keep = keep
		return fc.apply
	}
	sc := shared(k, func() func(*gorm.DB) *gorm.DB { return newFromCache(k, nil).apply })
	if len(opts) == 0 && sharedScopes.last.Load() != sc {
		sharedScopes.last.Store(sc)
	}
	return sc.scope
}

// query replaces gorm:query. Queries without FromCache go straight to GORM's
// own handler, but for raw SQL that writes (rawWrite).
func (p *Plugin) query(db *gorm.DB) {
	clearOutcome(db)
	p.checkDataVersion(db.Statement.Context)
	if p.relPreloads.Load() > 0 && db.Error == nil {
		if pc, preloading := db.Statement.Settings.Load(preloadingKey{}); preloading {
			if rels, ok := db.Statement.Settings.Load(relCacheKey{}); ok {
				p.relationQuery(db, pc.(*preloadCtx), rels.(relOptions))
				return
			}
		}
	}
	// Raw SQL (the only SQL set before the query is built) may write: a
	// write runs as one, whatever FromCache says. Other queries cost no
	// look at their SQL.
	var scan *scanned
	if db.Statement.SQL.Len() > 0 && db.Error == nil && !db.DryRun {
		scan = p.scan(db.Statement.SQL.String(), db.Statement.Table)
		if writesSQL(scan) {
			p.rawWrite(db, scan)
			return
		}
	}
	c, ok := db.Statement.Clauses[fromCacheClause]
	if !ok {
		c, ok = p.cacheByDefault(db) // defaults.go
	}
	if !ok || db.Error != nil || db.DryRun {
		p.queryHandle(db)
		return
	}
	fc := c.Expression.(fromCacheExpr).fc
	r, err := p.regionFor(fc.region)
	if err != nil {
		db.AddError(err)
		return
	}
	callbacks.BuildQuerySQL(db)
	if db.Error != nil {
		return
	}
	stmt := db.Statement
	tx, foreignTx := txOf(stmt.ConnPool)
	sql := stmt.SQL.String()
	if scan == nil {
		scan = p.scan(sql, stmt.Table)
	}
	if _, locking := stmt.Clauses["FOR"]; locking || scan.Locking || foreignTx || (tx != nil && !tx.servable()) || prefilled(stmt.ReflectValue) ||
		(p.foreign.latest.Load() != 0 && p.foreignBypass(stmt.Context, fc.dependsOn(scan))) {
		setOutcome(db, Bypassed)
		p.queryHandle(db)
		return
	}

	key := p.cacheKey(db, fc, scan, sql, stmt.Vars)
	opts := fc.callOptions(scan)
	dest := stmt.ReflectValue
	ctx := stmt.Context

	if tx != nil {
		// In a READ COMMITTED transaction that has not written: serve what
		// is cached, but never fill from its view, which may predate the
		// last commit.
		var rows int64
		found, _ := r.Peek(ctx, key, func(b []byte) (err error) {
			rows, err = p.memo.Decode(key, b, dest, stmtRescanner{stmt})
			return err
		}, opts...)
		if !found {
			setOutcome(db, Bypassed)
			p.queryHandle(db)
			return
		}
		setOutcome(db, Hit)
		p.finish(db, rows)
		return
	}

	l := &queryLoader{
		// GORM drops Vars after the query rather than reusing their array,
		// so the slice stays valid for a creator that outlives the caller.
		stmt: stmt, sql: sql, vars: stmt.Vars,
		config: db.Config, pool: stmt.ConnPool, schema: stmt.Schema, destType: dest.Type(), dest: dest,
		memo: p.memo,
	}
	l.key[0] = key
	if err := r.Load(ctx, l.key[:], l, opts...); err != nil {
		db.AddError(err)
		return
	}
	if l.err != nil {
		db.AddError(l.err) // a scan that failed: its rows and its error
	}
	setOutcome(db, l.outcome)
	p.finish(db, l.rowsAffected)
}

// rawWrite runs raw SQL sent through the query chain that writes (or
// controls a transaction) as the write it is, whether FromCache is on it or
// not: against the database, with the same two phases as any write (queued
// on the plugin's transaction, which it makes dirty, or around the
// statement outside one). FromCache naming an unknown region is still the
// error it always is.
func (p *Plugin) rawWrite(db *gorm.DB, scan *scanned) {
	if c, ok := db.Statement.Clauses[fromCacheClause]; ok {
		if _, err := p.regionFor(c.Expression.(fromCacheExpr).fc.region); err != nil {
			db.AddError(err)
			return
		}
	}
	if _, ok := db.Statement.Clauses[fromCacheClause]; ok {
		setOutcome(db, Bypassed)
	}
	p.sqlWrite(db, scan)
	p.queryHandle(db)
	p.afterWrite(db)
}

// prefilled reports a destination that already holds values GORM would
// scan over and partly keep (a struct's unselected fields, a scalar left as
// it was when no row matches): such queries go to the database. Slices are
// reset by GORM's scan and maps merged into, as the cache does.
func prefilled(dest reflect.Value) bool {
	switch dest.Kind() {
	case reflect.Slice, reflect.Map:
		return false
	}
	return !zeroMemory(dest) && !dest.IsZero()
}

// zeroMemory reports whether the memory of dest (addressable, at most
// len(zeroBytes) bytes) is all zero bytes, as a value just declared is: the
// zero value of every type is, so that is IsZero without walking its
// fields. Another dest, or one that is zero otherwise (an empty string
// whose pointer is not nil), is left to IsZero.
func zeroMemory(dest reflect.Value) bool {
	n := dest.Type().Size()
	if !dest.CanAddr() || n > uintptr(len(zeroBytes)) {
		return false
	}
	return bytes.Equal(unsafe.Slice((*byte)(dest.Addr().UnsafePointer()), n), zeroBytes[:n])
}

// zeroBytes is what zeroMemory compares with.
var zeroBytes [1024]byte

// finish does what GORM's query handler does after scanning.
func (p *Plugin) finish(db *gorm.DB, rows int64) {
	db.RowsAffected = rows
	if db.Statement.Result != nil {
		db.Statement.Result.RowsAffected = rows
	}
	if rows == 0 && db.Statement.RaiseErrorOnNotFound && db.Error == nil {
		db.AddError(gorm.ErrRecordNotFound)
	}
}

// callOptions maps a FromCache to region call options: the tags are the
// tables the query reads (WithTables, or those of its SQL, or the wildcard
// when they cannot be known) and the key name.
func (fc *fromCache) callOptions(scan *scanned) []region.CallOption {
	if fc.tables == nil && fc.name == "" && !fc.expirationSet && !fc.ignoreExpiry {
		if fc.keep != nil {
			return append(scan.opts[:len(scan.opts):len(scan.opts)], fc.keep)
		}
		return scan.opts // the common case: nothing to build
	}
	return fc.withExpiry(region.WithTags(fc.dependsOn(scan)...))
}

// dependsOn returns the tags a FromCache query's entries depend on.
func (fc *fromCache) dependsOn(scan *scanned) []string {
	tags := fc.tables
	if len(tags) == 0 {
		tags = scan.tables
	}
	if fc.name != "" {
		tags = append(append([]string(nil), tags...), keyTag(fc.name))
	}
	return tags
}

// withExpiry returns opts and the call options of the FromCache's
// expiration settings.
func (fc *fromCache) withExpiry(opts ...region.CallOption) []region.CallOption {
	if fc.expirationSet {
		opts = append(opts, region.ExpireAfter(fc.expiration))
	}
	if fc.ignoreExpiry {
		opts = append(opts, region.IgnoreExpiration())
	}
	if fc.keep != nil {
		opts = append(opts, fc.keep)
	}
	return opts
}
