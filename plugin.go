package dogpile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"

	"github.com/dogpile-go/dogpile/internal/answer"
	"github.com/dogpile-go/dogpile/region"
)

// Plugin is the GORM plugin; register it with db.Use(dogpile.New(regions)).
// A Plugin serves one *gorm.DB (and the sessions and transactions made from
// it); registering it on a second one is an error: make one for each.
type Plugin struct {
	// Set by New; read-only afterwards.
	regions     map[string]*region.Region
	regionList  []*region.Region // sorted by name, for deterministic invalidation order
	regionNames []string         // the names regionList is registered under
	memo        *answer.Memo     // answers decoded from the regions; nil: disabled
	configErr   error            // what is wrong with New's arguments; Initialize returns it
	lease       time.Duration    // the longest invalidation lease of the regions (foreigntx.go)
	strict      bool             // WithStrictInvalidation: a failed pre-invalidation fails the commit
	config      pluginConfig     // what New's options said
	defaults    defaults         // cache by default (defaults.go)

	// Set once by Initialize, under initMu, before any callback of the
	// plugin can run; read-only afterwards.
	initMu        sync.Mutex
	initialized   bool           // guarded by initMu
	queryHandle   func(*gorm.DB) // GORM's own gorm:query
	preloadHandle func(*gorm.DB) // GORM's own gorm:preload
	dialect       string         // the Dialector's name
	rawPool       gorm.ConnPool  // the pool before wrapping, for what the plugin asks the database

	// Safe for concurrent use.
	scans   scanCache     // SQL text → what it reads and writes (scan.go)
	shapes  shapeCache    // shapeKey → the hash of a query's shape (keys.go)
	foreign foreignWrites // writes in transactions the plugin cannot follow (foreigntx.go)
	// rowTagged holds the tables (normTable) whose RelationshipCache entries
	// this plugin stamped with row tags: only their updates and deletes read
	// the old key values back (relwrite.go). Grows to the schema's tables.
	rowTagged sync.Map

	// The isolation level of transactions begun without one (levelSnapshot).
	// defaultLevel is learned from the database (learnMu serialises the
	// asking); sessionSnapshot is set once SQL through the plugin changed a
	// session's default to a snapshot level (SET SESSION CHARACTERISTICS …),
	// which then holds for every connection, since any may have it.
	defaultLevel    atomic.Uint32 // a defaultLevel* constant
	sessionSnapshot atomic.Bool
	learnMu         sync.Mutex

	// relPreloads counts the statements whose preloads RelationshipCache
	// applies to, while those run: when none do, no query is one of their
	// preloads, and the query callback need not look.
	relPreloads atomic.Int64

	graph graphState        // the schema's dependency graph (graph.go)
	dv    *dataVersionWatch // SQLite's data_version, when checked (dataversion.go); nil: off
	log   pluginLog         // WithLogger (log.go)
}

// PluginName is the name the plugin registers under.
const PluginName = "dogpile"

// Errors reported on queries.
var (
	// ErrUnknownRegion is added to a query whose FromCache names a region
	// the plugin was not given.
	ErrUnknownRegion = errors.New("dogpile: unknown region")
	// ErrAlreadyInitialized is returned by Initialize (and so by db.Use)
	// for a plugin already registered on another *gorm.DB.
	ErrAlreadyInitialized = errors.New("dogpile: plugin already registered on a *gorm.DB; make one with New for each")
	// ErrInvalidConfig is matched by the error Initialize (and so db.Use)
	// returns for a plugin made by New with no regions, a nil region, or a
	// region under the empty name (the error names the region), an empty
	// table name given to WithTriggerWrites, and WithDataVersionCheck with a
	// negative interval or on a database that is not SQLite.
	ErrInvalidConfig = errors.New("dogpile: invalid configuration")
)

// DefaultDecodedCacheBytes is the bound of the decoded-answer memo of a
// plugin made without WithDecodedCache.
const DefaultDecodedCacheBytes = 32 << 20

// PluginOption configures a Plugin.
type PluginOption func(*pluginConfig)

type pluginConfig struct {
	decodedBytes int64
	strict       bool
	// triggerWrites: WithTriggerWrites, table → the tables its triggers write.
	triggerWrites map[string][]string
	// dataVersionEvery: WithDataVersionCheck; 0 means off (dataversion.go).
	dataVersionEvery time.Duration
	// logger: WithLogger; nil means off (log.go).
	logger       *slog.Logger
	cachedTables []cachedTables // WithCachedTables (defaults.go)
}

// WithDecodedCache bounds the memory the plugin spends remembering decoded
// answers (DefaultDecodedCacheBytes without this option; 0 turns it off). A
// hit whose stored bytes are those the plugin last decoded for its key is
// served by copying the remembered value rather than decoding it again. The
// region is still read on every hit, and decides as always whether the
// answer is fresh; only the decoding is saved. Answers are deep copies:
// callers never share memory with each other or with the plugin.
func WithDecodedCache(maxBytes int64) PluginOption {
	return func(c *pluginConfig) { c.decodedBytes = maxBytes }
}

// ErrInvalidationFailed is matched by the error of a write under
// WithStrictInvalidation whose first invalidation phase could not be
// written to a region's backend: a transaction's Commit rolled it back, and
// a write outside a transaction (or a raw COMMIT) was not run. The error
// wraps the backend's.
var ErrInvalidationFailed = errors.New("dogpile: invalidation could not be written, so the write was not committed")

// WithStrictInvalidation makes a commit whose first invalidation phase
// cannot be written (the backend is down, paused, out of memory) fail: the
// transaction is rolled back and Commit returns an error matching
// ErrInvalidationFailed, so no commit exists whose invalidation did not
// reach the backend. A write outside a transaction is not run, with the
// same error; so is a raw COMMIT (Exec("COMMIT")), whose transaction then
// stays open for the caller to roll back. Entries other processes fill
// during a commit window still live no longer than the invalidation lease. Without it a cache outage never fails a write: the
// commit proceeds, its tables are bypassed in this process, and the
// invalidation is retried until it lands (see the README's failure model
// for what other processes may serve meanwhile).
func WithStrictInvalidation() PluginOption {
	return func(c *pluginConfig) { c.strict = true }
}

// New returns the plugin over the named regions. The map is copied. New
// never fails: what is wrong with its arguments (no regions, a nil region,
// a region under the empty name, which InvalidateKey could not name) is
// returned by db.Use, as an error matching ErrInvalidConfig.
func New(regions map[string]*region.Region, opts ...PluginOption) *Plugin {
	c := pluginConfig{decodedBytes: DefaultDecodedCacheBytes}
	for _, o := range opts {
		o(&c)
	}
	p := &Plugin{regions: make(map[string]*region.Region, len(regions)), memo: answer.NewMemo(c.decodedBytes), strict: c.strict, config: c}
	names := make([]string, 0, len(regions))
	for name := range regions {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	if len(regions) == 0 {
		errs = append(errs, fmt.Errorf("%w: no regions (New(nil) or an empty map): FromCache could name none", ErrInvalidConfig))
	}
	for _, n := range names {
		r := regions[n]
		switch {
		case n == "":
			errs = append(errs, fmt.Errorf("%w: region name \"\" is empty: name every region", ErrInvalidConfig))
			continue
		case r == nil:
			errs = append(errs, fmt.Errorf("%w: region %q is nil", ErrInvalidConfig, n))
			continue
		}
		p.regions[n] = r
		p.lease = max(p.lease, r.InvalidationLease())
		p.regionList = append(p.regionList, r)
		p.regionNames = append(p.regionNames, n)
	}
	errs = append(errs, triggerConfigErrors(c.triggerWrites)...)
	errs = append(errs, p.defaults.init(c.cachedTables, p.regions)...)
	p.configErr = errors.Join(errs...)
	return p
}

// Name implements gorm.Plugin.
func (p *Plugin) Name() string { return PluginName }

// Region returns the region registered under name, or nil.
func (p *Plugin) Region(name string) *region.Region { return p.regions[name] }

// regionFor returns the region registered under name, or an error that
// wraps ErrUnknownRegion.
func (p *Plugin) regionFor(name string) (*region.Region, error) {
	if r := p.regions[name]; r != nil {
		return r, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownRegion, name)
}

// Initialize implements gorm.Plugin: it wraps the connection pool so that
// commits apply their invalidations before they return, learns the
// database's default isolation level (PostgreSQL: SHOW
// default_transaction_isolation, once), and registers the callbacks of the
// query and write chains. It returns an error matching ErrInvalidConfig for
// a plugin New could not configure, and ErrAlreadyInitialized when the
// plugin is already registered on a *gorm.DB.
func (p *Plugin) Initialize(db *gorm.DB) error {
	if p.configErr != nil {
		return p.configErr
	}
	p.initMu.Lock()
	defer p.initMu.Unlock()
	if p.initialized {
		return ErrAlreadyInitialized
	}
	if db.Dialector != nil {
		p.dialect = db.Dialector.Name()
	}
	if err := checkDataVersionConfig(p.config.dataVersionEvery, p.dialect); err != nil {
		return err // before the database is changed in any way
	}
	p.initialized = true
	if err := p.initObserve(db); err != nil {
		return err
	}
	if w, ok := db.ConnPool.(*pool); ok {
		p.rawPool = w.ConnPool
	} else {
		p.rawPool = db.ConnPool
		wrapped := &pool{ConnPool: db.ConnPool, plugin: p}
		db.ConnPool = wrapped
		db.Statement.ConnPool = wrapped
	}
	p.initIsolation()
	if err := p.initGraph(db); err != nil {
		return err
	}
	if err := p.initDataVersion(db); err != nil {
		return err
	}

	p.queryHandle = db.Callback().Query().Get("gorm:query")
	if p.queryHandle == nil {
		p.queryHandle = callbacks.Query
	}
	p.preloadHandle = db.Callback().Query().Get("gorm:preload")
	if p.preloadHandle == nil {
		p.preloadHandle = callbacks.Preload
	}
	cb := db.Callback()
	steps := []struct {
		name string
		err  error
	}{
		{"query", cb.Query().Replace("gorm:query", p.query)},
		{"preload", cb.Query().Replace("gorm:preload", p.preload)},
		{"preload begin", cb.Query().Before("gorm:preload").Register("dogpile:preload_begin", p.markPreloading)},
		{"preload end", cb.Query().After("gorm:preload").Register("dogpile:preload_end", p.unmarkPreloading)},
		{"default preload begin", cb.Query().Before("gorm:preload").Register("dogpile:default_preload_begin", markInPreload)},
		{"default preload end", cb.Query().After("gorm:preload").Register("dogpile:default_preload_end", unmarkInPreload)},
		{"create before", cb.Create().Before("gorm:create").Register("dogpile:before_create", p.beforeCreate)},
		{"create after", cb.Create().After("gorm:create").Register("dogpile:after_create", p.afterWrite)},
		{"update before", cb.Update().Before("gorm:update").Register("dogpile:before_update", p.beforeUpdate)},
		{"update after", cb.Update().After("gorm:update").Register("dogpile:after_update", p.afterWrite)},
		{"update new values", cb.Update().Before("gorm:commit_or_rollback_transaction").Register("dogpile:update_new_values", p.newValues)},
		{"delete before", cb.Delete().Before("gorm:delete").Register("dogpile:before_delete", p.beforeDelete)},
		{"delete after", cb.Delete().After("gorm:delete").Register("dogpile:after_delete", p.afterWrite)},
		{"raw before", cb.Raw().Before("gorm:raw").Register("dogpile:before_raw", p.beforeSQLWrite)},
		{"raw after", cb.Raw().After("gorm:raw").Register("dogpile:after_raw", p.afterWrite)},
		{"row before", cb.Row().Before("gorm:row").Register("dogpile:before_row", p.beforeSQLWrite)},
		{"row after", cb.Row().After("gorm:row").Register("dogpile:after_row", p.afterWrite)},
	}
	for _, s := range steps {
		if s.err != nil {
			return fmt.Errorf("dogpile: register %s callback: %w", s.name, s.err)
		}
	}
	return nil
}

// background is the context of invalidations made where GORM gives none
// (Commit has no context): they must complete whatever the caller does.
func background(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return context.WithoutCancel(ctx)
}
