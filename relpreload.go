package dogpile

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
	"gorm.io/gorm/utils"
)

// This file replaces GORM's preload step for the statements whose every
// preload is a plain has-many or has-one that RelationshipCache applies to.
// It runs the same preload query, through the same query chain (so the
// cache, hooks and errors are GORM's), but assigns the children to their
// parents from the per-parent groups the cache already has: GORM's own
// assignment looks up every child's parent in a map of stringified keys and
// appends children one at a time, which costs more than the cached query
// itself. Anything else (many2many, polymorphic, nested or joined
// preloads, clause.Associations) goes to GORM's preload unchanged.

// relHandoff is how relationQuery gives the per-parent groups of the preload
// query that preloadCached runs.
type relHandoff struct {
	dest any // the preload query's destination; only that query fills the handoff

	// Set by relationQuery when it answered the query.
	done   bool
	groups []relGroup    // in the order of the results
	arr    reflect.Value // for pointer results: the []T they point into, in order
}

// relGroup is one parent key's children in the preload results.
type relGroup struct {
	value any // the parent key value, as in the query's IN (a []any for several columns)
	n     int
}

type relHandoffKey struct{}

// preload replaces gorm:preload.
func (p *Plugin) preload(db *gorm.DB) {
	names, ok := cachedPreloads(db)
	if !ok {
		p.preloadHandle(db)
		return
	}
	// GORM preloads relations of the destination's schema, which may not be
	// the model's: check them there.
	tx := preloadSession(db)
	if tx.Error != nil {
		return // as GORM's preload does
	}
	rels := make([]*schema.Relationship, len(names))
	for i, name := range names {
		if tx.Statement.Schema.Relationships.EmbeddedRelations[name] != nil {
			p.preloadHandle(db)
			return
		}
		if rels[i] = tx.Statement.Schema.Relationships.Relations[name]; !plainRelation(rels[i]) {
			p.preloadHandle(db)
			return
		}
	}
	for i, name := range names {
		ptx := tx.Table("").Session(&gorm.Session{Context: tx.Statement.Context, SkipHooks: tx.Statement.SkipHooks})
		ptx.Statement.ReflectValue = tx.Statement.ReflectValue
		ptx.Statement.Unscoped = tx.Statement.Unscoped
		if err := preloadCached(ptx, rels[i], db.Statement.Preloads[name]); err != nil {
			db.AddError(err)
			return
		}
	}
}

// cachedPreloads returns the statement's preload names, sorted as GORM
// runs them, when they are all top-level paths RelationshipCache applies
// to and nothing else (joins, nested paths) is preloaded.
func cachedPreloads(db *gorm.DB) ([]string, bool) {
	stmt := db.Statement
	if db.Error != nil || len(stmt.Preloads) == 0 || stmt.Schema == nil || len(stmt.Joins) > 0 {
		return nil, false
	}
	v, ok := stmt.Settings.Load(relCacheKey{})
	if !ok {
		return nil, false
	}
	rels := v.(relOptions)
	names := make([]string, 0, len(stmt.Preloads))
	for name := range stmt.Preloads {
		if _, cached := rels[name]; !cached || strings.Contains(name, ".") || name == clause.Associations {
			return nil, false
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names, true
}

// plainRelation reports a has-many into a []T or []*T field, or a has-one
// into a T or *T field, keyed by columns only.
func plainRelation(rel *schema.Relationship) bool {
	if rel == nil || rel.JoinTable != nil || rel.Polymorphic != nil || rel.FieldSchema == nil {
		return false
	}
	for _, ref := range rel.References {
		if ref.PrimaryValue != "" || ref.PrimaryKey == nil || ref.ForeignKey == nil {
			return false
		}
	}
	model, ft := rel.FieldSchema.ModelType, rel.Field.FieldType
	switch rel.Type {
	case schema.HasMany:
		return ft == reflect.SliceOf(model) || ft == reflect.SliceOf(reflect.PointerTo(model))
	case schema.HasOne:
		return ft == model || ft == reflect.PointerTo(model)
	}
	return false
}

// assignGroups gives each parent its group of the results: a window of
// them, or of the array they point into. The windows' capacity ends where
// they do, so appending to one never writes over the next.
func assignGroups(tx *gorm.DB, rel *schema.Relationship, identity map[string][]reflect.Value, results reflect.Value, h *relHandoff) error {
	ctx := tx.Statement.Context
	pointers := rel.Field.FieldType.Kind() == reflect.Pointer ||
		(rel.Type == schema.HasMany && rel.Field.FieldType.Elem().Kind() == reflect.Pointer)
	at := 0
	for _, g := range h.groups {
		start := at
		at += g.n
		if g.n == 0 {
			continue
		}
		vals := []any{g.value}
		if tuple, ok := g.value.([]any); ok {
			vals = tuple
		}
		datas, ok := identity[utils.ToStringKey(vals...)]
		if !ok {
			return fmt.Errorf("failed to assign association %#v, make sure foreign fields exists", results.Index(start).Interface())
		}
		for i, data := range datas {
			if rel.Type == schema.HasOne {
				// The last child wins, as GORM sets them in turn.
				tx.AddError(rel.Field.Set(ctx, data, results.Index(at-1).Interface()))
				continue
			}
			children := h.arr.Slice3(start, at, at) // a window of the results' own array
			if pointers {
				children = results.Slice3(start, at, at)
			}
			if i > 0 {
				// Another parent with the same key: a slice of its own.
				own := reflect.MakeSlice(children.Type(), g.n, g.n)
				reflect.Copy(own, children)
				children = own
			}
			tx.AddError(rel.Field.Set(ctx, data, children.Interface()))
		}
	}
	return tx.Error
}
