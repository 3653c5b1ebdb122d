package dogpile

import (
	"reflect"
	"slices"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// The write side of RelationshipCache. Entries of preloaded associations
// depend on their parent's rows (row tags, see tags.go) and on the
// child table's coarse tag. A write through a model bumps the row tags of
// the key values of the rows it writes, before and after the write (old
// values are read back by primary key before an update or delete; new ones
// are in the model after it); a write whose rows cannot be known bumps the
// coarse tag, which invalidates every parent. The old values are read only
// for tables whose entries this plugin stamped with row tags: elsewhere an
// update or delete bumps the coarse tag and runs no query of its own.

// maxRowTags bounds the row tags one write bumps; a larger write bumps the
// coarse tag instead.
const maxRowTags = 256

// writeKind is the chain a model write runs in.
type writeKind uint8

const (
	writeCreate writeKind = iota
	writeUpdate
	writeDelete
)

// newValuesKey marks an update in a transaction whose new key values are
// queued once the update ran.
type newValuesKey struct{ stmt *gorm.Statement }

// keyColumns are the columns of s that a preload can select parents' rows
// by: its primary key and the columns its relationships reference.
func keyColumns(s *schema.Schema) []*schema.Field {
	var out []*schema.Field
	add := func(f *schema.Field) {
		if f != nil && f.Schema == s && f.DBName != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	for _, f := range s.PrimaryFields {
		add(f)
	}
	for _, rel := range s.Relationships.Relations {
		if rel.Schema != s {
			// GORM adds the back side of other models' has-many relations
			// once those models are parsed: a writer that never parsed them
			// would not know these columns, so nobody relies on them.
			continue
		}
		for _, ref := range rel.References {
			add(ref.ForeignKey)
			add(ref.PrimaryKey)
		}
	}
	return out
}

// preciseColumns reports whether a preload selecting child rows by cols can
// rely on row tags: every writer of the table bumps them.
func preciseColumns(s *schema.Schema, cols []string) bool {
	keys := keyColumns(s)
	for _, c := range cols {
		if !slices.ContainsFunc(keys, func(f *schema.Field) bool { return f.DBName == c }) {
			return false
		}
	}
	return true
}

// rowTagsOf returns the row tags of the key values held by the rows in v (a
// struct or a slice of them), or ok false when there are too many.
func rowTagsOf(db *gorm.DB, s *schema.Schema, v reflect.Value, keys []*schema.Field) ([]string, bool) {
	var tags []string
	each := func(row reflect.Value) bool {
		row = reflect.Indirect(row)
		if row.Kind() != reflect.Struct || row.Type() != s.ModelType {
			return false
		}
		for _, f := range keys {
			val, zero := f.ValueOf(db.Statement.Context, row)
			if zero && f.PrimaryKey {
				continue // not yet assigned: no entry can depend on it
			}
			tags = append(tags, rowTag(s.Table, []string{f.DBName}, []any{val}))
		}
		return len(tags) <= maxRowTags
	}
	if !eachRow(v, each) {
		return nil, false
	}
	return tags, true
}

// eachRow calls f with each row of v, a struct or a slice or array of them,
// until f returns false, and reports whether every call returned true.
func eachRow(v reflect.Value, f func(row reflect.Value) bool) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if !f(v.Index(i)) {
				return false
			}
		}
		return true
	}
	return f(v)
}

// primaryKeys returns the primary key values of the rows in v, or nil when
// any is unknown.
func primaryKeys(db *gorm.DB, s *schema.Schema, v reflect.Value) []any {
	if len(s.PrimaryFields) != 1 {
		return nil
	}
	pf := s.PrimaryFields[0]
	var out []any
	each := func(row reflect.Value) bool {
		row = reflect.Indirect(row)
		if row.Kind() != reflect.Struct || row.Type() != s.ModelType {
			return false
		}
		val, zero := pf.ValueOf(db.Statement.Context, row)
		if zero {
			return false
		}
		out = append(out, val)
		return true
	}
	if !eachRow(v, each) {
		return nil
	}
	if len(out) == 0 || len(out) > maxRowTags {
		return nil
	}
	return out
}

// oldRowTags reads back, by primary key, the key values of the rows a
// statement is about to change.
func oldRowTags(db *gorm.DB, s *schema.Schema, keys []*schema.Field) ([]string, bool) {
	pks := primaryKeys(db, s, db.Statement.ReflectValue)
	if pks == nil {
		return nil, false
	}
	cols := make([]string, len(keys))
	for i, f := range keys {
		cols[i] = f.DBName
	}
	var rows []map[string]any
	q := db.Session(&gorm.Session{NewDB: true, SkipHooks: true, Context: db.Statement.Context}).
		Table(s.Table).Select(cols).
		Where(clause.IN{Column: clause.Column{Name: s.PrimaryFields[0].DBName}, Values: pks}).
		Find(&rows)
	if q.Error != nil {
		return nil, false
	}
	var tags []string
	for _, row := range rows {
		for _, c := range cols {
			tags = append(tags, rowTag(s.Table, []string{c}, []any{row[c]}))
		}
	}
	// Rows the read did not find are written by nobody: their tags are
	// those of the model, which the caller adds.
	return tags, len(tags) <= maxRowTags
}

// relationTags returns what a model write to table t must invalidate for
// RelationshipCache entries: row tags where the rows are known, else the
// coarse tag. after reports an update in a transaction, whose new key values
// are added once it ran (newValues).
func (p *Plugin) relationTags(db *gorm.DB, kind writeKind, t string, inTx bool) (tags []string, after bool) {
	s := db.Statement.Schema
	if s == nil || normTable(s.Table) != t {
		return []string{coarseTag(t)}, false
	}
	keys := keyColumns(s)
	if len(keys) == 0 {
		return []string{coarseTag(t)}, false
	}
	model, ok := rowTagsOf(db, s, db.Statement.ReflectValue, keys)
	if !ok {
		return []string{coarseTag(t)}, false
	}
	if _, used := p.rowTagged.Load(t); !used && kind != writeCreate {
		// No RelationshipCache entry of this process depends on t's row
		// tags: reading the old key values back would be a query for
		// nothing here. The coarse tag invalidates every parent's entry,
		// whichever process made it.
		return []string{coarseTag(t)}, false
	}
	switch kind {
	case writeCreate:
		return model, false
	case writeUpdate:
		if !inTx {
			// The new values are known only after the write, too late for
			// the first phase that protects a crash after commit.
			return []string{coarseTag(t)}, false
		}
		fallthrough
	case writeDelete:
		old, ok := oldRowTags(db, s, keys)
		if !ok {
			return []string{coarseTag(t)}, false
		}
		return append(old, model...), kind == writeUpdate
	}
	return []string{coarseTag(t)}, false
}

// newValues runs before an update's transaction commits: it queues the row
// tags of the key values the update left in the model.
func (p *Plugin) newValues(db *gorm.DB) {
	if _, ok := db.Statement.Settings.LoadAndDelete(newValuesKey{db.Statement}); !ok {
		return
	}
	s := db.Statement.Schema
	t := normTable(s.Table)
	tx, _ := txOf(db.Statement.ConnPool)
	if tx == nil {
		return
	}
	tags, ok := rowTagsOf(db, s, db.Statement.ReflectValue, keyColumns(s))
	if !ok {
		tags = []string{coarseTag(t)}
	}
	tx.queue(invalidation{tags: tags})
}
