package dogpile

import (
	"context"
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

// preloadSession is the statement GORM's preload starts from.
func preloadSession(db *gorm.DB) *gorm.DB {
	tx := db.Session(&gorm.Session{Context: db.Statement.Context, NewDB: true, SkipHooks: db.Statement.SkipHooks, Initialized: true})
	db.Statement.Settings.Range(func(k, v any) bool {
		tx.Statement.Settings.Store(k, v)
		return true
	})
	if err := tx.Statement.Parse(db.Statement.Dest); err != nil {
		tx.AddError(err)
		return tx
	}
	tx.Statement.ReflectValue = db.Statement.ReflectValue
	tx.Statement.Unscoped = db.Statement.Unscoped
	return tx
}

// preloadCached loads rel for the parents in tx.Statement.ReflectValue with
// the query GORM's preload makes, and assigns the children as it does.
func preloadCached(tx *gorm.DB, rel *schema.Relationship, conds []any) error {
	ctx := tx.Statement.Context
	parents := tx.Statement.ReflectValue
	var (
		relForeignKeys   []string
		relForeignFields []*schema.Field
		foreignFields    []*schema.Field
	)
	for _, ref := range rel.References {
		if ref.OwnPrimaryKey {
			relForeignKeys = append(relForeignKeys, ref.ForeignKey.DBName)
			relForeignFields = append(relForeignFields, ref.ForeignKey)
			foreignFields = append(foreignFields, ref.PrimaryKey)
		} else {
			relForeignKeys = append(relForeignKeys, ref.PrimaryKey.DBName)
			relForeignFields = append(relForeignFields, ref.PrimaryKey)
			foreignFields = append(foreignFields, ref.ForeignKey)
		}
	}
	identity, foreignValues := parentIdentity(ctx, parents, foreignFields)
	if len(foreignValues) == 0 {
		return nil
	}

	results := rel.FieldSchema.MakeSlice().Elem()
	column, values := schema.ToQueryValues(clause.CurrentTable, relForeignKeys, foreignValues)
	tx = tx.Model(results.Addr().Interface()).Where(clause.IN{Column: column, Values: values})
	var inline []any
	for _, cond := range conds {
		if fc, ok := cond.(func(*gorm.DB) *gorm.DB); ok {
			tx = fc(tx)
		} else {
			inline = append(inline, cond)
		}
	}
	if len(inline) > 0 {
		tx = tx.Where(inline[0], inline[1:]...)
	}
	h := &relHandoff{dest: results.Addr().Interface()}
	tx.Statement.Settings.Store(relHandoffKey{}, h)
	if err := tx.Find(h.dest).Error; err != nil {
		return err
	}

	// Every parent starts cleared, as GORM's preload leaves it.
	var empty reflect.Value
	if rel.Type == schema.HasMany {
		empty = reflect.MakeSlice(rel.Field.FieldType, 0, 0) // shared: its capacity is 0
	}
	clearField := func(parent reflect.Value) {
		if rel.Type == schema.HasMany {
			tx.AddError(rel.Field.Set(ctx, parent, empty.Interface()))
		} else {
			tx.AddError(rel.Field.Set(ctx, parent, reflect.New(rel.Field.FieldType).Interface()))
		}
	}
	switch parents.Kind() {
	case reflect.Struct:
		clearField(parents)
	case reflect.Slice, reflect.Array:
		for i := 0; i < parents.Len(); i++ {
			clearField(parents.Index(i))
		}
	}

	// The groups are by the keys the children were cached under; an
	// AfterFind hook may change a child's key, and GORM assigns by the key
	// after the hooks.
	if h.done && h.arr.IsValid() && !rel.FieldSchema.AfterFind {
		return assignGroups(tx, rel, identity, results, h)
	}
	return assignEach(tx, rel, identity, results, relForeignFields)
}

// parentIdentity is schema.GetIdentityFieldValuesMap for a slice or struct
// of parents, with the same keys and order in fewer allocations: the
// parents' key values, once per distinct key, and the parents under each.
func parentIdentity(ctx context.Context, parents reflect.Value, fields []*schema.Field) (map[string][]reflect.Value, [][]any) {
	if k := parents.Kind(); (k != reflect.Slice && k != reflect.Array) || !parents.CanAddr() {
		return schema.GetIdentityFieldValuesMap(ctx, parents, fields)
	}
	if k := parents.Type().Elem().Kind(); k != reflect.Struct && k != reflect.Pointer {
		return schema.GetIdentityFieldValuesMap(ctx, parents, fields)
	}
	n := parents.Len()
	identity := make(map[string][]reflect.Value, n)
	values := make([][]any, 0, n)
	space := make([]any, n*len(fields)) // every parent's key values
	var seen map[uintptr]bool           // pointers already taken; elements of a []T are distinct
	if parents.Type().Elem().Kind() == reflect.Pointer {
		seen = make(map[uintptr]bool, n)
	}
	for i := 0; i < n; i++ {
		elem := parents.Index(i)
		if seen != nil {
			if seen[elem.Pointer()] {
				continue
			}
			seen[elem.Pointer()] = true
		}
		vals := space[i*len(fields) : (i+1)*len(fields) : (i+1)*len(fields)]
		notZero := false
		for j, f := range fields {
			var zero bool
			vals[j], zero = f.ValueOf(ctx, elem)
			notZero = notZero || !zero
		}
		if !notZero {
			continue
		}
		key := utils.ToStringKey(vals...)
		if _, ok := identity[key]; !ok {
			values = append(values, vals)
		}
		identity[key] = append(identity[key], elem)
	}
	return identity, values
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

// assignEach assigns the results child by child, as GORM's preload does:
// the query was answered by the database (in a transaction, say), so there
// are no groups.
func assignEach(tx *gorm.DB, rel *schema.Relationship, identity map[string][]reflect.Value, results reflect.Value, relForeignFields []*schema.Field) error {
	ctx := tx.Statement.Context
	fieldValues := make([]any, len(relForeignFields))
	for i := 0; i < results.Len(); i++ {
		elem := results.Index(i)
		for j, f := range relForeignFields {
			fieldValues[j], _ = f.ValueOf(ctx, elem)
		}
		datas, ok := identity[utils.ToStringKey(fieldValues...)]
		if !ok {
			return fmt.Errorf("failed to assign association %#v, make sure foreign fields exists", elem.Interface())
		}
		for _, data := range datas {
			if rel.Type == schema.HasOne {
				tx.AddError(rel.Field.Set(ctx, data, elem.Interface()))
				continue
			}
			cur := rel.Field.ReflectValueOf(ctx, data)
			if cur.Type().Elem().Kind() == reflect.Pointer {
				tx.AddError(rel.Field.Set(ctx, data, reflect.Append(cur, elem).Interface()))
			} else {
				tx.AddError(rel.Field.Set(ctx, data, reflect.Append(cur, elem.Elem()).Interface()))
			}
		}
	}
	return tx.Error
}
