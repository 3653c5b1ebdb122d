package dogpile

import (
	"fmt"
	"reflect"
	"sync"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/dogpile-go/dogpile/internal/answer"
	"github.com/dogpile-go/dogpile/region"
)

// Cache by default: a model that says once which region caches it, and
// tables the plugin is told to cache, have their queries answered from the
// cache without a FromCache scope on each. A query cached this way is given
// the FromCache of its default where query() looks its FromCache up, and so
// runs through the very same code (keys, tags, bypasses, invalidation).
//
// Precedence, for one statement: its own FromCache, then NoCache, then its
// model (CacheRegioner), then its table (WithCachedTables). Defaults apply
// to the top-level statements GORM builds: not to raw SQL (Raw(…).Find),
// whose tables the model says nothing about, and not to the queries of
// preloads, which RelationshipCache caches per parent.

// CacheRegioner is implemented by a model whose queries are cached by
// default, in the region it names:
//
//	func (User) CacheRegion() string { return "default" }
//
// Every query whose model (or destination, without Model) is of its type is
// then answered as with FromCache(CacheRegion()), unless it has a FromCache
// of its own or NoCache. The method is called once per schema, on a zero
// value; an empty name means not cached by default. A region the plugin
// was not given is the query's error, matching ErrUnknownRegion, as with
// FromCache.
type CacheRegioner interface {
	CacheRegion() string
}

// CacheOptioner is implemented by a CacheRegioner whose default FromCache
// takes options (WithExpiration, IgnoreExpiration, ShouldCache, WithKey):
//
//	func (User) CacheOptions() []dogpile.Option {
//		return []dogpile.Option{dogpile.WithExpiration(time.Minute), dogpile.ShouldCache(dogpile.NonEmpty)}
//	}
//
// It is called once per schema, with CacheRegion.
type CacheOptioner interface {
	CacheOptions() []Option
}

// WithCachedTables caches every query whose table is one of tables in the
// named region, as if it had FromCache(regionName): the table is the
// statement's own (its model's, or Table's), compared as the plugin
// compares table names (unquoted, without schema, lower case). Other tables
// a query joins are its tags as with FromCache, but do not make it cached.
// A model's CacheRegioner wins over its table's option. db.Use returns an
// error matching ErrInvalidConfig for a region the plugin was not given, an
// empty table name, or a table listed for two regions.
func WithCachedTables(regionName string, tables ...string) PluginOption {
	return func(c *pluginConfig) {
		c.cachedTables = append(c.cachedTables, cachedTables{regionName, tables})
	}
}

// cachedTables is one WithCachedTables.
type cachedTables struct {
	region string
	tables []string
}

// NoCache returns a scope that opts one query out of cache by default (its
// model's CacheRegioner, its table's WithCachedTables): it goes to the
// database as without the plugin's cache. A FromCache on the same query
// wins over it; RelationshipCache still applies to its preloads.
func NoCache() func(*gorm.DB) *gorm.DB { return noCache }

// noCache is the NoCache scope.
func noCache(db *gorm.DB) *gorm.DB {
	db.Statement.Clauses[noCacheClause] = clause.Clause{Name: noCacheClause, Expression: noCacheExpr{}}
	return db
}

// noCacheClause is where NoCache marks a statement, among its clauses
// (never built into the SQL), which chaining and Session copy.
const noCacheClause = "dogpile:nocache"

// noCacheExpr is NoCache's mark.
type noCacheExpr struct{}

// Build writes nothing: the clause is never part of the SQL.
func (noCacheExpr) Build(clause.Builder) {}

// ShouldCache stores a FromCache query's answer only when keep returns
// true, as dogpile's should_cache_fn; the answer is returned to the caller
// either way. An answer not stored is counted in the region's
// Stats().NotStoredBy.ShouldCache and reported to its observers
// (region.ReasonShouldCache); the next identical query runs again.
//
// keep is called once per answer a query makes, in the goroutine that ran
// it, before any caller reads it: dest is a pointer to the destination as
// scanned, of the type given to the finisher (*[]User, *User, *int64, ...),
// and rows the query's RowsAffected. keep must not change or keep dest.
// NonEmpty is the keep of "not an empty result".
//
// It applies to FromCache and to cache by default (CacheOptioner); a
// RelationshipCache ignores it. A scope with ShouldCache is built at each
// call, as one with WithTables is: make it once where it is used often.
func ShouldCache(keep func(dest any, rows int64) bool) Option {
	return Option{kind: optShouldCache, keep: keep}
}

// NonEmpty is a ShouldCache keep that stores only the answers of queries
// that returned rows (RowsAffected > 0): an empty Find, a First that found
// nothing, are not cached. A Count returns a row, even of zero, and is
// cached.
func NonEmpty(_ any, rows int64) bool { return rows > 0 }

// keepOf returns the region option of the last ShouldCache of opts, or nil.
func keepOf(opts []Option) region.CallOption {
	var keep func(any, int64) bool
	for _, o := range opts {
		if o.kind == optShouldCache {
			keep = o.keep
		}
	}
	if keep == nil {
		return nil
	}
	return region.ShouldCache(func(res *answer.Result) bool {
		if res.Why() != "" {
			return false // not storable anyway
		}
		v, ok := res.For(true) // stored answers: the scanned value itself, not copied
		if !ok || !v.CanAddr() {
			return false
		}
		return keep(v.Addr().Interface(), res.Rows())
	})
}

// defaults is what a plugin caches by default.
type defaults struct {
	// tables: WithCachedTables, normTable → the FromCache of its region.
	// Read-only after New.
	tables map[string]*fromCache
	// schemas: *schema.Schema → *schemaDefault, decided once per schema.
	schemas sync.Map
}

// init sets the table defaults of cfg and returns what is wrong with them.
func (d *defaults) init(cfg []cachedTables, regions map[string]*region.Region) []error {
	var errs []error
	for _, c := range cfg {
		if regions[c.region] == nil {
			errs = append(errs, fmt.Errorf("%w: WithCachedTables: unknown region %q", ErrInvalidConfig, c.region))
			continue
		}
		fc := newFromCache(scopeKey{region: c.region}, nil)
		for _, t := range c.tables {
			n := normTable(t)
			if n == "" {
				errs = append(errs, fmt.Errorf("%w: WithCachedTables(%q): empty table name", ErrInvalidConfig, c.region))
				continue
			}
			if prev, ok := d.tables[n]; ok {
				if prev.region != c.region {
					errs = append(errs, fmt.Errorf("%w: WithCachedTables: table %q listed for regions %q and %q", ErrInvalidConfig, n, prev.region, c.region))
				}
				continue
			}
			if d.tables == nil {
				d.tables = make(map[string]*fromCache)
			}
			d.tables[n] = fc
		}
	}
	return errs
}

// cacheByDefault returns the FromCache clause a statement without one gets
// from its defaults, if any (the precedence is stated at the top of this
// file). A statement whose model and table have no default pays one map
// load.
func (p *Plugin) cacheByDefault(db *gorm.DB) (clause.Clause, bool) {
	stmt := db.Statement
	var fc *fromCache
	switch s := stmt.Schema; {
	case s == nil:
		fc = p.defaults.ofTable(tableOf(stmt))
	case stmt.Table == s.Table && stmt.TableExpr == nil:
		fc = p.defaults.ofSchema(s).own
	default: // the model on another table (Table)
		if fc = p.defaults.ofSchema(s).model; fc == nil {
			fc = p.defaults.ofTable(tableOf(stmt))
		}
	}
	if fc == nil || stmt.SQL.Len() > 0 {
		return clause.Clause{}, false
	}
	if _, no := stmt.Clauses[noCacheClause]; no {
		return clause.Clause{}, false
	}
	if _, preload := stmt.Settings.Load(inPreloadKey{}); preload {
		return clause.Clause{}, false
	}
	return fc.clause, true
}

// tableOf returns the table a statement reads from: the first name of
// what Table was given ("users u" is users, where GORM names it u), else
// the statement's table.
func tableOf(stmt *gorm.Statement) string {
	if e := stmt.TableExpr; e != nil && len(e.Vars) == 0 {
		return e.SQL
	}
	return stmt.Table
}

// ofTable returns the FromCache of table's WithCachedTables, or nil.
func (d *defaults) ofTable(table string) *fromCache {
	if len(d.tables) == 0 || table == "" {
		return nil
	}
	return d.tables[normTable(table)]
}

// schemaDefault is what a schema's statements are cached by default with.
type schemaDefault struct {
	model *fromCache // its model's CacheRegioner; nil: none
	own   *fromCache // on its own table: model, else the table's option
}

// ofSchema returns the defaults of s's statements, decided once.
func (d *defaults) ofSchema(s *schema.Schema) *schemaDefault {
	if v, ok := d.schemas.Load(s); ok {
		return v.(*schemaDefault)
	}
	sd := &schemaDefault{model: modelDefault(s.ModelType)}
	if sd.own = sd.model; sd.own == nil {
		sd.own = d.ofTable(s.Table)
	}
	v, _ := d.schemas.LoadOrStore(s, sd)
	return v.(*schemaDefault)
}

var cacheRegionerType = reflect.TypeFor[CacheRegioner]()

// modelDefault returns the FromCache a model of type t asks for through
// CacheRegioner (and CacheOptioner), or nil.
func modelDefault(t reflect.Type) *fromCache {
	if t == nil || (!t.Implements(cacheRegionerType) && !reflect.PointerTo(t).Implements(cacheRegionerType)) {
		return nil
	}
	m := reflect.New(t).Interface() // a pointer has the methods of both receivers
	name := m.(CacheRegioner).CacheRegion()
	if name == "" {
		return nil
	}
	var opts []Option
	if o, ok := m.(CacheOptioner); ok {
		opts = o.CacheOptions()
	}
	k := scopeKey{region: name}
	fc := newFromCache(k, optionsOf(&k, opts))
	fc.keep = keepOf(opts)
	return fc
}

// inPreloadKey marks a statement whose preloads are running, in its
// settings, which its preload statements copy: cache by default does not
// apply to them.
type inPreloadKey struct{}

// markInPreload runs before gorm:preload.
func markInPreload(db *gorm.DB) {
	if len(db.Statement.Preloads) > 0 {
		db.Statement.Settings.Store(inPreloadKey{}, true)
	}
}

// unmarkInPreload runs after gorm:preload, so a reused statement is not
// taken for a preload.
func unmarkInPreload(db *gorm.DB) {
	if len(db.Statement.Preloads) > 0 {
		db.Statement.Settings.Delete(inPreloadKey{})
	}
}
