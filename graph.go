package dogpile

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/internal/sqlscan"
)

// The schema's dependency graph: what the database changes besides the
// tables a statement names. It is read from the catalog when the plugin is
// registered, and again after every DDL statement the plugin runs:
//
//   - foreign-key actions: an update of a parent table rewrites the
//     children whose foreign keys have ON UPDATE CASCADE, SET NULL or SET
//     DEFAULT; a delete deletes the children with ON DELETE CASCADE and
//     updates those with SET NULL or SET DEFAULT; each of these is a write
//     of the child in turn, followed transitively. TRUNCATE … CASCADE
//     empties every referencing table, whatever its actions;
//   - views: a read of a view depends on the relations its query reads,
//     transitively through views of views (scan.go); a materialized view is
//     a relation of its own, written by REFRESH MATERIALIZED VIEW; a write
//     through an updatable view writes its base relations;
//   - partitions and inheritance (PostgreSQL): a write to a partition is a
//     write to its parent, and one to the parent to every partition;
//   - triggers and rules: a write to a table with triggers (or, on
//     PostgreSQL, non-SELECT rules) also writes what WithTriggerWrites
//     declares for it; without a declaration it writes tables the plugin
//     cannot know, and invalidates every entry, as raw SQL it cannot
//     analyse does. The plugin's own triggers (named dogpile_…, the
//     invalidation feed) do not count.
//
// The graph follows the catalog of the database the plugin is registered
// on; DDL run by another process is seen once this process runs DDL of its
// own or reloads (see README, "Writes the application does not make").

// graphState holds the current graph of the plugin's database.
type graphState struct {
	cur   atomic.Pointer[schemaGraph] // the last graph loaded; never nil once initGraph ran
	stale atomic.Bool                 // DDL ran since cur was loaded: load again outside a transaction
	gen   atomic.Uint64               // counts the graphs stored; scanned entries carry the one they used
	mu    sync.Mutex                  // serialises loads
	// lastFail is when a load last failed (UnixNano; 0: it did not). A
	// graph that cannot be read is tried again after graphRetry, not on
	// every statement.
	lastFail atomic.Int64
}

// graphRetry is how long after a failed load the catalog is read again.
const graphRetry = time.Second

// schemaGraph is one reading of the catalog. It is immutable once built.
type schemaGraph struct {
	// known is false when the catalog could not be read: every write then
	// invalidates every entry, and every read depends on every write.
	known bool
	kinds map[string]relKind // every relation of the schema by name

	onUpdate     map[string][]string // parent → children an update of its rows rewrites
	onDelete     map[string][]fkEdge // parent → children a delete of its rows changes
	referencedBy map[string][]string // parent → every child referencing it (TRUNCATE … CASCADE)
	family       map[string][]string // partition or inheritance parent ↔ children
	viewBases    map[string][]string // view or materialized view → the relations its query reads
	triggers     map[string]bool     // relations with triggers or rules of the application's
	// opaqueViews are the views whose queries call functions of the
	// application's: what those read is not in the catalog, so a read of
	// the view depends on every write.
	opaqueViews map[string]bool

	// effects remembers effect for one table (effectKey → effectMemo):
	// model writes ask it for their table on every write. Bounded by the
	// schema's relations times the operations.
	effects sync.Map
}

type effectKey struct {
	table string
	op    graphOp
}

type effectMemo struct {
	changed []string
	all     bool
}

// relKind is what kind of relation a name is.
type relKind uint8

const (
	relTable relKind = iota
	relView
	relMatView
)

// fkEdge is one foreign key's ON DELETE action, as seen from the parent.
type fkEdge struct {
	child   string
	cascade bool // ON DELETE CASCADE: the child's rows are deleted; else updated
}

// unknownGraph stands for a catalog that could not be read.
var unknownGraph = &schemaGraph{}

// initGraph reads the graph the first time, through the pool the plugin
// was registered with.
func (p *Plugin) initGraph(db *gorm.DB) error {
	// New checked the trigger declarations (triggerConfigErrors).
	ctx := context.Background()
	if db.Statement != nil && db.Statement.Context != nil {
		ctx = db.Statement.Context
	}
	p.graph.cur.Store(unknownGraph)
	p.graph.stale.Store(true)
	p.reloadGraph(ctx, nil)
	return nil
}

// schema returns the graph to use for a statement of db: the current one,
// read again first when DDL made it stale, unless the statement runs in a
// transaction (whose connection the catalog read must not wait for; its
// DDL invalidates every entry at its commit anyway, which then reloads).
func (p *Plugin) schema(db *gorm.DB) *schemaGraph {
	if !p.graph.stale.Load() {
		return p.graph.cur.Load()
	}
	var via gorm.ConnPool
	if db != nil && db.Statement != nil {
		if tx, foreign := txOf(db.Statement.ConnPool); (tx != nil && tx.open()) || foreign {
			return p.graph.cur.Load()
		}
		if _, pinned := db.Statement.ConnPool.(interface{ Raw(func(any) error) error }); pinned {
			return p.graph.cur.Load() // a pinned connection (db.Connection) may hold a raw transaction
		}
		// A transaction ended by a raw COMMIT still holds its connection:
		// read through it, not through a pool that may have no other.
		via = db.Statement.ConnPool
	}
	return p.reloadGraph(contextOf(db), via)
}

// graphLoadTimeout bounds one reading of the catalog. A caller that holds
// the only connection of a pool elsewhere (InvalidateTables on the outer
// *gorm.DB inside db.Transaction, say) would otherwise wait for it for
// ever; it gets the unknown graph instead, which invalidates more, never
// less.
const graphLoadTimeout = 2 * time.Second

// graphStale marks the graph to be read again: DDL ran.
func (p *Plugin) graphStale() { p.graph.stale.Store(true) }

// reloadGraph reads the catalog, stores the graph and returns it. It reads
// through via, the connection of a statement that ran outside an open
// transaction (a pinned connection, or a transaction's ended by a raw
// COMMIT: with a pool of one connection, no other is free), or through the
// plugin's own pool when via is nil or that pool. When the catalog cannot
// be read it returns the unknown graph and stays stale.
func (p *Plugin) reloadGraph(ctx context.Context, via gorm.ConnPool) *schemaGraph {
	gs := &p.graph
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if !gs.stale.Load() {
		return gs.cur.Load() // another caller loaded it meanwhile
	}
	if f := gs.lastFail.Load(); f != 0 && time.Since(time.Unix(0, f)) < graphRetry {
		return unknownGraph
	}
	if _, wrapped := via.(*pool); via == nil || wrapped {
		via = p.rawPool
	}
	gs.stale.Store(false) // before reading: DDL from now on makes it stale again
	lctx, cancel := context.WithTimeout(background(ctx), graphLoadTimeout)
	defer cancel()
	g, err := loadGraph(lctx, via, p.dialect)
	if err != nil {
		p.logf(ctx, slog.LevelWarn, LogMsgGraphFailed, slog.Any("error", err))
		gs.stale.Store(true)
		gs.lastFail.Store(time.Now().UnixNano())
		return unknownGraph
	}
	gs.lastFail.Store(0)
	gs.cur.Store(g)
	gs.gen.Add(1)
	return g
}

// loadGraph reads the catalog: one query.
func loadGraph(ctx context.Context, q gorm.ConnPool, dialect string) (*schemaGraph, error) {
	g := &schemaGraph{
		known:        true,
		kinds:        map[string]relKind{},
		onUpdate:     map[string][]string{},
		onDelete:     map[string][]fkEdge{},
		referencedBy: map[string][]string{},
		family:       map[string][]string{},
		viewBases:    map[string][]string{},
		triggers:     map[string]bool{},
		opaqueViews:  map[string]bool{},
	}
	var query string
	switch dialect {
	case "postgres":
		query = postgresCatalog
	case "sqlite":
		query = sqliteCatalog
	default:
		return g, nil // not read: statements name what they write
	}
	if q == nil {
		return nil, fmt.Errorf("dogpile: schema graph: no connection pool")
	}
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("dogpile: schema graph: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var what, a, b, c string
		if err := rows.Scan(&what, &a, &b, &c); err != nil {
			return nil, fmt.Errorf("dogpile: schema graph: %w", err)
		}
		g.add(dialect, what, normTable(a), b, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dogpile: schema graph: %w", err)
	}
	return g, nil
}

// postgresCatalog lists, in one result: every relation of the non-system
// schemas and its kind; every foreign key with its update and delete
// actions (pg_constraint: a no action, r restrict, c cascade, n set null, d
// set default); what each view's and materialized view's query reads
// (pg_rewrite's _RETURN rule and its pg_depend entries), and the views that
// call functions outside pg_catalog (what those read is unknown); the relations with
// triggers of the application's (pg_trigger, not the constraint triggers
// PostgreSQL makes for foreign keys, not the plugin's own dogpile_…) or
// rules that are not views' ON SELECT; and partitions and inheritance
// (pg_inherits).
const postgresCatalog = `
SELECT 'rel', c.relname::text, c.relkind::text, ''
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
UNION ALL
SELECT 'fk', ch.relname::text, pa.relname::text, c.confupdtype::text || c.confdeltype::text
  FROM pg_constraint c
  JOIN pg_class ch ON ch.oid = c.conrelid
  JOIN pg_class pa ON pa.oid = c.confrelid
 WHERE c.contype = 'f'
UNION ALL
SELECT DISTINCT 'view', v.relname::text, b.relname::text, ''
  FROM pg_rewrite r
  JOIN pg_class v ON v.oid = r.ev_class
  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
  JOIN pg_class b ON b.oid = d.refobjid
 WHERE v.relkind IN ('v', 'm') AND r.rulename = '_RETURN' AND b.oid <> v.oid
UNION ALL
SELECT DISTINCT 'viewfn', v.relname::text, '', ''
  FROM pg_rewrite r
  JOIN pg_class v ON v.oid = r.ev_class
  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_proc'::regclass
  JOIN pg_proc f ON f.oid = d.refobjid
  JOIN pg_namespace fn ON fn.oid = f.pronamespace
 WHERE v.relkind IN ('v', 'm') AND r.rulename = '_RETURN' AND fn.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT DISTINCT 'trigger', c.relname::text, '', ''
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE NOT t.tgisinternal AND t.tgname NOT LIKE 'dogpile\_%'
UNION ALL
SELECT DISTINCT 'trigger', c.relname::text, '', ''
  FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
 WHERE r.ev_type <> '1'
UNION ALL
SELECT 'inherits', ch.relname::text, pa.relname::text, ''
  FROM pg_inherits i
  JOIN pg_class ch ON ch.oid = i.inhrelid
  JOIN pg_class pa ON pa.oid = i.inhparent`

// sqliteCatalog lists every table, view and trigger of the main schema
// (with its SQL: a view's is scanned for what it reads) and every foreign
// key with its update and delete actions.
const sqliteCatalog = `
SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master WHERE type IN ('table', 'view', 'trigger')
UNION ALL
SELECT 'fk', m.name, f."table", f.on_update || '|' || f.on_delete
  FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f
 WHERE m.type = 'table'`

// add records one row of the catalog query.
func (g *schemaGraph) add(dialect, what, name, b, c string) {
	switch what {
	case "rel": // PostgreSQL
		// Tags have no schema: one name may be a view in one schema and a
		// table in another. A view's kind wins, so that its reads expand.
		switch {
		case b == "v":
			g.kinds[name] = relView
		case g.kinds[name] == relView:
		case b == "m":
			g.kinds[name] = relMatView
		default:
			if _, seen := g.kinds[name]; !seen {
				g.kinds[name] = relTable
			}
		}
	case "viewfn": // PostgreSQL: a view calling a function of the application's
		g.opaqueViews[name] = true
	case "table": // SQLite
		g.kinds[name] = relTable
	case "view": // both: PostgreSQL's dependency rows, SQLite's definitions
		if dialect == "sqlite" {
			g.kinds[name] = relView
			for _, r := range sqlscan.Scan(c).Reads {
				g.viewBases[name] = appendNew(g.viewBases[name], r)
			}
			return
		}
		g.viewBases[name] = appendNew(g.viewBases[name], normTable(b))
	case "trigger":
		if dialect == "sqlite" {
			if strings.HasPrefix(strings.ToLower(name), "dogpile_") {
				return
			}
			name = normTable(b) // the trigger's table
		}
		g.triggers[name] = true
	case "fk":
		parent := normTable(b)
		g.referencedBy[parent] = appendNew(g.referencedBy[parent], name)
		upd, del := fkActions(dialect, c)
		if upd != fkNone {
			g.onUpdate[parent] = appendNew(g.onUpdate[parent], name)
		}
		if del != fkNone {
			e := fkEdge{child: name, cascade: del == fkCascade}
			if !slices.Contains(g.onDelete[parent], e) {
				g.onDelete[parent] = append(g.onDelete[parent], e)
			}
		}
	case "inherits":
		parent := normTable(b)
		g.family[parent] = appendNew(g.family[parent], name)
		g.family[name] = appendNew(g.family[name], parent)
	}
}

// fkAction is what a foreign key does to its child's rows.
type fkAction uint8

const (
	fkNone    fkAction = iota // NO ACTION, RESTRICT: nothing, or the statement fails
	fkCascade                 // CASCADE: the child's rows follow (updated, or deleted)
	fkSet                     // SET NULL, SET DEFAULT: the child's rows are updated
)

// fkActions decodes the update and delete actions of one foreign key.
func fkActions(dialect, s string) (update, delete fkAction) {
	if dialect == "postgres" {
		if len(s) != 2 {
			return fkCascade, fkCascade // not understood: assume they change the child
		}
		return pgAction(s[0]), pgAction(s[1])
	}
	u, d, _ := strings.Cut(s, "|")
	return sqliteAction(u), sqliteAction(d)
}

func pgAction(c byte) fkAction {
	switch c {
	case 'a', 'r':
		return fkNone
	case 'n', 'd':
		return fkSet
	default:
		return fkCascade
	}
}

func sqliteAction(s string) fkAction {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "NO ACTION", "RESTRICT", "":
		return fkNone
	case "SET NULL", "SET DEFAULT":
		return fkSet
	default:
		return fkCascade
	}
}

func appendNew(list []string, s string) []string {
	if s == "" || slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// graphOp is how a write changes a table, for following what the database
// does next.
type graphOp uint8

const (
	opInsert graphOp = iota
	opUpdate
	opDelete
	opAny // raw SQL, writes reported from outside: insert, update or delete
	opTruncate
)

func opOf(kind writeKind) graphOp {
	switch kind {
	case writeCreate:
		return opInsert
	case writeUpdate:
		return opUpdate
	case writeDelete:
		return opDelete
	default:
		return opAny
	}
}

// effect returns the relations a write (op) to tables changes besides
// tables themselves, following foreign-key actions, views written through,
// partitions and declared trigger writes; all reports a write to a table
// with triggers nobody declared, whose effect is unknown.
func (g *schemaGraph) effect(tables []string, op graphOp, declared map[string][]string) (changed []string, all bool) {
	if !g.known {
		return nil, true
	}
	type step struct {
		table string
		op    graphOp
	}
	seen := map[step]bool{}
	var work []step
	push := func(t string, o graphOp) {
		s := step{t, o}
		if !seen[s] {
			seen[s] = true
			work = append(work, s)
		}
	}
	for _, t := range tables {
		push(normTable(t), op)
	}
	for len(work) > 0 {
		s := work[len(work)-1]
		work = work[:len(work)-1]
		if !slices.Contains(tables, s.table) {
			changed = appendNew(changed, s.table)
		}
		if g.kinds[s.table] == relView {
			for _, b := range g.viewBases[s.table] {
				push(b, s.op)
			}
		}
		for _, f := range g.family[s.table] {
			push(f, s.op)
		}
		if w, ok := declared[s.table]; ok {
			for _, t := range w {
				push(t, opAny)
			}
		} else if g.triggers[s.table] {
			all = true
		}
		if s.op == opUpdate || s.op == opAny {
			for _, c := range g.onUpdate[s.table] {
				push(c, opUpdate)
			}
		}
		if s.op == opDelete || s.op == opAny {
			for _, e := range g.onDelete[s.table] {
				if e.cascade {
					push(e.child, opDelete)
				} else {
					push(e.child, opUpdate)
				}
			}
		}
		if s.op == opTruncate {
			for _, c := range g.referencedBy[s.table] {
				push(c, opTruncate)
			}
		}
	}
	return changed, all
}

// readTables returns tables with the relations the views among them read,
// transitively (a materialized view is read as itself). With the catalog
// unknown, it adds anyTable: every write then invalidates the read.
func (g *schemaGraph) readTables(tables []string) []string {
	if !g.known {
		if slices.Contains(tables, anyTable) {
			return tables
		}
		return append(slices.Clip(tables), anyTable)
	}
	out := tables
	grew := false
	for i := 0; i < len(out); i++ {
		if g.kinds[out[i]] != relView {
			continue
		}
		if g.opaqueViews[out[i]] && !slices.Contains(out, anyTable) {
			if !grew {
				out = append([]string(nil), out...)
				grew = true
			}
			out = append(out, anyTable)
		}
		for _, b := range g.viewBases[out[i]] {
			if !slices.Contains(out, b) {
				if !grew {
					out = append([]string(nil), out...)
					grew = true
				}
				out = append(out, b)
			}
		}
	}
	return out
}

// writeTags returns the tags a write (kind; truncate for TRUNCATE) to
// tables adds for what the database changes with it: each changed
// relation and its RelationshipCache coarse tag. all reports that the
// write must invalidate every entry.
func (p *Plugin) writeTags(db *gorm.DB, tables []string, kind writeKind, truncate bool) (tags []string, all bool) {
	op := opOf(kind)
	if truncate {
		op = opTruncate
	}
	g := p.schema(db)
	var changed []string
	if len(tables) == 1 && g.known {
		k := effectKey{tables[0], op}
		if m, ok := g.effects.Load(k); ok {
			changed, all = m.(effectMemo).changed, m.(effectMemo).all
		} else {
			changed, all = g.effect(tables, op, p.config.triggerWrites)
			g.effects.Store(k, effectMemo{changed, all})
		}
	} else {
		changed, all = g.effect(tables, op, p.config.triggerWrites)
	}
	if len(changed) == 0 {
		return nil, all
	}
	tags = make([]string, 0, 2*len(changed))
	for _, t := range changed {
		tags = append(tags, t, coarseTag(t))
	}
	return tags, all
}

// writeInvalidation returns what a write of kind to tables invalidates:
// the tables, their coarse tags, anyTable, and what the database changes
// with them (writeTags).
func (p *Plugin) writeInvalidation(_ context.Context, db *gorm.DB, tables []string, kind writeKind) invalidation {
	tags := []string{anyTable}
	norm := make([]string, 0, len(tables))
	for _, t := range tables {
		t = normTable(t)
		norm = append(norm, t)
		tags = append(tags, t, coarseTag(t))
	}
	more, all := p.writeTags(db, norm, kind, false)
	return invalidation{tags: append(tags, more...), all: all}
}

// WithTriggerWrites declares what the triggers of table write: a write to
// table also invalidates writes (and what the database changes with them).
// Without a declaration, a write to a table that has triggers (or, on
// PostgreSQL, rules) invalidates every entry of every region, since what its
// triggers write cannot be known; the triggers the plugin installs itself
// (InstallPostgresTriggers) do not count. A declaration is used whether or
// not the catalog shows triggers on table. Calling it again for one table
// adds to its declaration; WithTriggerWrites(table) with no writes declares
// that its triggers write nothing the cache holds. An empty name is an
// error at db.Use.
func WithTriggerWrites(table string, writes ...string) PluginOption {
	return func(c *pluginConfig) {
		if c.triggerWrites == nil {
			c.triggerWrites = map[string][]string{}
		}
		t := normTable(table)
		list := c.triggerWrites[t]
		if list == nil {
			list = []string{}
		}
		for _, w := range writes {
			if n := normTable(w); n == "" {
				list = append(list, "")
			} else {
				list = appendNew(list, n)
			}
		}
		c.triggerWrites[t] = list
	}
}

// triggerConfigErrors returns what is wrong with the WithTriggerWrites
// declarations: empty table names.
func triggerConfigErrors(declared map[string][]string) []error {
	var errs []error
	tables := make([]string, 0, len(declared))
	for t := range declared {
		tables = append(tables, t)
	}
	slices.Sort(tables)
	for _, t := range tables {
		if t == "" || slices.Contains(declared[t], "") {
			errs = append(errs, fmt.Errorf("%w: WithTriggerWrites(%q, %q): empty table name", ErrInvalidConfig, t, declared[t]))
		}
	}
	return errs
}
