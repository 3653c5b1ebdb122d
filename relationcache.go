package dogpile

import (
	"errors"
	"slices"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/dogpile-go/dogpile/region"
)

// RelationshipCache returns a scope that caches the association at path
// (a Preload path such as "Posts" or "Posts.Comments") in the named region,
// one entry per parent:
//
//	db.Scopes(dogpile.RelationshipCache("Posts", "default")).Preload("Posts").Find(&users)
//
// GORM loads a preload with one query, WHERE fk IN (parent keys); with the
// scope, the keys already cached are read in one backend round trip and the
// database is asked only for the others. Preload conditions and custom
// preload functions are part of the key. A parent with no children is
// cached as empty. Entries depend on the child rows of their own parent: a
// write to a child row invalidates the parents it belonged to before and
// after the write; where that cannot be known (raw SQL, an Update over a
// WHERE clause) it invalidates the whole association. Naming a path that no
// Preload loads does nothing. Of the options, WithExpiration and
// IgnoreExpiration apply. A region the plugin was not given is an error
// matching ErrUnknownRegion, added when the scope is applied: the query
// does not run, as with FromCache.
func RelationshipCache(path, regionName string, opts ...Option) func(*gorm.DB) *gorm.DB {
	k := scopeKey{region: regionName, rel: true, path: path}
	if tables := optionsOf(&k, opts); tables != nil {
		return (&relScope{path, newFromCache(k, tables)}).apply
	}
	// Made once per path, region and options, and shared (sharedScopes).
	return shared(k, func() func(*gorm.DB) *gorm.DB { return (&relScope{path, newFromCache(k, nil)}).apply }).scope
}

// relScope is a RelationshipCache scope. It is immutable: one serves any
// number of statements at once.
type relScope struct {
	path string
	fc   *fromCache
}

// apply adds the scope's path and options to the statement's
// RelationshipCache setting.
func (s *relScope) apply(db *gorm.DB) *gorm.DB {
	if p, err := pluginOf(db); err == nil {
		if _, err := p.regionFor(s.fc.region); err != nil {
			_ = db.AddError(err)
			return db
		}
	}
	rels := relOptions{s.path: s.fc}
	if v, ok := db.Statement.Settings.Load(relCacheKey{}); ok {
		for p, o := range v.(relOptions) {
			if p != s.path {
				rels[p] = o
			}
		}
	}
	db.Statement.Settings.Store(relCacheKey{}, rels)
	return db
}

// relCacheKey is the statement setting RelationshipCache scopes store; it is
// copied into every preload statement.
type relCacheKey struct{}

// relOptions maps a preload path to its options.
type relOptions map[string]*fromCache

// preloadCtx is what a preload statement knows of its parent: the parent's
// schema and the parent's own path.
type preloadCtx struct {
	parent *schema.Schema
	prefix string // the parent's path and "."; "" for the top-level statement
	known  bool   // the parent's path is known
}

// ownPathKey is the path of a preload statement, once identified ("" when
// it could not be).
type ownPathKey struct{}

// markPreloading runs before gorm:preload: the preload statements copy the
// parent's settings, and this tells them they are preloads, and of whom.
// Only statements that RelationshipCache applies to are marked; while one
// is, the query callback looks for the mark (Plugin.relPreloads).
func (p *Plugin) markPreloading(db *gorm.DB) {
	if len(db.Statement.Preloads) == 0 {
		return
	}
	if _, ok := db.Statement.Settings.Load(relCacheKey{}); !ok {
		return
	}
	pc := &preloadCtx{parent: db.Statement.Schema, known: true}
	if _, isChild := db.Statement.Settings.Load(preloadingKey{}); isChild {
		own, _ := db.Statement.Settings.Load(ownPathKey{})
		path, _ := own.(string)
		pc.known = path != ""
		pc.prefix = path + "."
	}
	p.relPreloads.Add(1)
	db.Statement.Settings.Store(preloadingKey{}, pc)
}

// unmarkPreloading runs after the preloads, so a reused statement is not
// taken for one.
func (p *Plugin) unmarkPreloading(db *gorm.DB) {
	if len(db.Statement.Preloads) == 0 {
		return
	}
	if _, marked := db.Statement.Settings.LoadAndDelete(preloadingKey{}); marked {
		p.relPreloads.Add(-1)
	}
}

// relationQuery answers a preload statement from per-parent entries.
func (p *Plugin) relationQuery(db *gorm.DB, pc *preloadCtx, rels relOptions) {
	stmt := db.Statement
	in, inAt := findIN(stmt)
	var rel *schema.Relationship
	phase := ""
	if pc.known && pc.parent != nil && stmt.Schema != nil && in != nil {
		rel, phase = matchRelation(pc.parent, stmt.Schema, columnNames(in.Column))
	}
	if rel == nil {
		stmt.Settings.Store(ownPathKey{}, "")
		p.queryHandle(db)
		return
	}
	path := pc.prefix + rel.Name
	if phase == "" {
		stmt.Settings.Store(ownPathKey{}, path)
	}
	fc := rels[path]
	if fc == nil || db.DryRun || !cacheablePreload(stmt, phase) {
		p.queryHandle(db)
		return
	}
	if tx, foreign := txOf(stmt.ConnPool); tx != nil || foreign {
		// Inside a transaction the database answers: it has the
		// transaction's own writes, and its snapshot must not fill the cache.
		p.queryHandle(db)
		return
	}
	if t := normTable(stmt.Schema.Table); p.foreign.latest.Load() != 0 && p.foreignBypass(stmt.Context, []string{t, coarseTag(t)}) {
		p.queryHandle(db) // a write this process cannot see commit (foreigntx.go)
		return
	}
	r, err := p.regionFor(fc.region)
	if err != nil {
		db.AddError(err)
		return
	}
	l := newRelLoader(db, r, fc, in, inAt, path, phase)
	if l == nil {
		p.queryHandle(db)
		return
	}
	l.memo = p.memo
	// Entries depend on their own parent's rows where every writer of the
	// child table bumps those (see relwrite.go), else on any write to it.
	t := normTable(stmt.Schema.Table)
	opts := fc.withExpiry(region.WithTags(t))
	if deps := p.graph.cur.Load().readTables([]string{t}); len(deps) > 1 {
		// A view (graph.go): its rows change with its base relations, whose
		// writers know nothing of the view's rows.
		opts = fc.withExpiry(region.WithTags(deps...))
	} else if preciseColumns(stmt.Schema, columnNames(in.Column)) {
		opts = fc.withExpiry(region.WithTags(coarseTag(stmt.Schema.Table)), region.WithKeyTags(l.keyTags))
		p.rowTagged.Store(normTable(stmt.Schema.Table), true) // its writers now read old key values (relwrite.go)
	}
	if err := r.Load(stmt.Context, l.keys, l, opts...); err != nil {
		if errors.Is(err, errUnmatchedChild) {
			p.queryHandle(db)
			return
		}
		db.AddError(err)
		return
	}
	var h *relHandoff
	if v, ok := stmt.Settings.Load(relHandoffKey{}); ok && v.(*relHandoff).dest == stmt.Dest && l.byPK == nil {
		h = v.(*relHandoff)
	}
	p.finish(db, l.assemble(h))
}

// cacheablePreload reports whether per-parent entries can reproduce the
// preload query's answer. A LIMIT or OFFSET applies to all parents at once,
// so it cannot be split per parent. The rows of a many2many's target phase
// are shared between parents in an order the database chose: the entries
// can give them back in primary-key order only, so an ORDER BY on anything
// else goes to the database.
func cacheablePreload(stmt *gorm.Statement, phase string) bool {
	if _, ok := stmt.Clauses["LIMIT"]; ok {
		return false
	}
	if phase != "target" {
		return true
	}
	c, ok := stmt.Clauses["ORDER BY"]
	if !ok {
		return len(stmt.Schema.PrimaryFields) == 1
	}
	ob, ok := c.Expression.(clause.OrderBy)
	if !ok || ob.Expression != nil || len(ob.Columns) != 1 || ob.Columns[0].Desc || len(stmt.Schema.PrimaryFields) != 1 {
		return false
	}
	col := ob.Columns[0].Column
	name := col.Name
	if col.Raw {
		name = strings.TrimSpace(strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), " asc"))
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			name = name[i+1:]
		}
		name = strings.Trim(name, "\"`")
	}
	return name == stmt.Schema.PrimaryFields[0].DBName
}

// findIN returns the WHERE clause's IN on the current table that a preload
// adds, and its index among the WHERE expressions.
func findIN(stmt *gorm.Statement) (*clause.IN, int) {
	c, ok := stmt.Clauses["WHERE"]
	if !ok {
		return nil, -1
	}
	w, ok := c.Expression.(clause.Where)
	if !ok {
		return nil, -1
	}
	for i, e := range w.Exprs {
		in, ok := e.(clause.IN)
		if !ok {
			continue
		}
		switch col := in.Column.(type) {
		case clause.Column:
			if col.Table == clause.CurrentTable {
				return &in, i
			}
		case []clause.Column:
			if len(col) > 0 && col[0].Table == clause.CurrentTable {
				return &in, i
			}
		}
	}
	return nil, -1
}

func columnNames(c any) []string {
	switch col := c.(type) {
	case clause.Column:
		return []string{col.Name}
	case []clause.Column:
		out := make([]string, len(col))
		for i, x := range col {
			out[i] = x.Name
		}
		return out
	}
	return nil
}

// matchRelation finds the relationship of parent that child's query loads
// by cols, and whether it is a many2many's join-table phase ("join"). Two
// candidates, or none, give nil: the query is then not cached.
func matchRelation(parent, child *schema.Schema, cols []string) (*schema.Relationship, string) {
	var (
		found *schema.Relationship
		phase string
		n     int
	)
	for _, rel := range parent.Relationships.Relations {
		relCols, joinCols, targetCols := loadColumns(rel)
		if rel.JoinTable != nil {
			if child.Table == rel.JoinTable.Table && slices.Equal(cols, joinCols) {
				found, phase, n = rel, "join", n+1
			} else if rel.FieldSchema != nil && child.Table == rel.FieldSchema.Table && slices.Equal(cols, targetCols) {
				found, phase, n = rel, "target", n+1
			}
			continue
		}
		if rel.FieldSchema == nil || child.Table != rel.FieldSchema.Table {
			continue
		}
		if slices.Equal(cols, relCols) {
			found, phase, n = rel, "", n+1
		}
	}
	if n != 1 {
		return nil, ""
	}
	return found, phase
}

// loadColumns returns the columns GORM's preload puts in its IN for rel, in
// reference order (all), and split into those of the relation's own keys
// (own: the join table's, for a many2many) and the others (the target's).
// References fixed to a value (polymorphic types) are conditions, not keys.
func loadColumns(rel *schema.Relationship) (all, own, other []string) {
	for _, ref := range rel.References {
		switch {
		case ref.OwnPrimaryKey:
			all, own = append(all, ref.ForeignKey.DBName), append(own, ref.ForeignKey.DBName)
		case ref.PrimaryValue == "":
			all, other = append(all, ref.PrimaryKey.DBName), append(other, ref.PrimaryKey.DBName)
		}
	}
	return all, own, other
}
