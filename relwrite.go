package dogpile

import (
	"reflect"
	"slices"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// The write side of RelationshipCache. Entries of preloaded associations
// depend on their parent's rows (row tags, see tags.go) and on the child
// table's coarse tag. A write through a model bumps the row tags of the key
// values of the rows it writes, before and after the write (new values are
// in the model after it); a write whose rows cannot be known bumps the
// coarse tag, which invalidates every parent. Old values are needed only
// for tables whose entries this plugin stamped with row tags: elsewhere an
// update or delete bumps the coarse tag and runs no query.
//
// Old values: the primary key's are the model's, in the statement's WHERE,
// so a table whose key columns are all its primary key (a belongs-to or
// many2many target) reads nothing. The others come from the database, never
// the model, which may be stale (another writer moved the row to a parent
// whose entry, filled since, lists it). Nor can a child's own primary key
// tag stand in: a has-many entry depends on "<child>#<fk>=<parent>" only.
// A delete in a transaction the plugin follows reads them in the statement
// (DELETE … RETURNING: the rows it deleted, as they were), for its commit
// (returnKeys). Otherwise one SELECT by primary key reads them first: GORM
// scans an UPDATE's RETURNING into the model (one row, new values; PostgreSQL
// has RETURNING old.col from 18 only, and a CTE means rewriting GORM's
// UPDATE), and a delete outside a transaction needs them before it runs.

// maxRowTags bounds the row tags one write bumps; a larger write bumps the
// coarse tag instead.
const maxRowTags = 256

// writeKind is the chain a model write runs in.
type writeKind uint8

const (
	writeCreate writeKind = iota
	writeUpdate
	writeDelete
	writeAny // raw SQL and writes reported from outside: any of the above
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

// oldRowTags returns the row tags of the key values of the rows a
// statement is about to change, as they are before it: those of the primary
// key from the statement, the others read back by primary key.
func oldRowTags(db *gorm.DB, s *schema.Schema, keys []*schema.Field) ([]string, bool) {
	pks := primaryKeys(db, s, db.Statement.ReflectValue)
	if pks == nil {
		return nil, false
	}
	pk := s.PrimaryFields[0].DBName
	tags := make([]string, len(pks))
	for i, v := range pks {
		tags[i] = rowTag(s.Table, []string{pk}, []any{v})
	}
	cols := otherKeys(keys)
	if len(cols) == 0 {
		return tags, true // no query: the primary key is every key column
	}
	var rows []map[string]any
	q := db.Session(&gorm.Session{NewDB: true, SkipHooks: true, Context: db.Statement.Context}).
		Table(s.Table).Select(cols).
		Where(clause.IN{Column: clause.Column{Name: pk}, Values: pks}).
		Find(&rows)
	if q.Error != nil {
		return nil, false
	}
	tags = append(tags, keyRowTags(s.Table, cols, rows)...)
	// Rows the read did not find are written by nobody: their tags are
	// those of the model, which the caller adds.
	return tags, len(tags) <= maxRowTags
}

// otherKeys returns the key columns that are not the primary key.
func otherKeys(keys []*schema.Field) []string {
	var cols []string
	for _, f := range keys {
		if !f.PrimaryKey {
			cols = append(cols, f.DBName)
		}
	}
	return cols
}

// keyRowTags returns the row tags of the values of cols in rows.
func keyRowTags(table string, cols []string, rows []map[string]any) []string {
	var tags []string
	for _, row := range rows {
		for _, c := range cols {
			tags = append(tags, rowTag(table, []string{c}, []any{row[c]}))
		}
	}
	return tags
}

// returnedKeys is the RETURNING clause of a delete that reads its rows'
// key values (returnKeys). While GORM runs it, rows stands in for the Dest:
// GORM scans RETURNING into the Dest, and into a map slice it reads every
// row (into a struct, one) and counts them in RowsAffected.
type returnedKeys struct {
	db      *gorm.DB
	cols    []string
	dest    any // the statement's Dest, once swapped
	swapped bool
	rows    []map[string]any
}

// returnKey holds a statement's *returnedKeys until it ran.
type returnKey struct{ stmt *gorm.Statement }

// Build writes the columns, and swaps the Dest: the statement is built
// right before it runs, after a soft delete set its column through the
// Dest (Statement.SetColumn), which a map slice would fail.
func (r *returnedKeys) Build(b clause.Builder) {
	for i, c := range r.cols {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteQuoted(clause.Column{Name: c})
	}
	if stmt, ok := b.(*gorm.Statement); ok && !r.swapped {
		r.dest, r.swapped = stmt.Dest, true
		stmt.Dest = &r.rows
	}
}

// tags returns the row tags of the rows the delete returned, or the coarse
// tag when they are not all known. The commit reads them: GORM's own
// transaction commits before the plugin's callback after the delete.
func (r *returnedKeys) tags() []string {
	t := r.db.Statement.Schema.Table
	tags := keyRowTags(t, r.cols, r.rows)
	if !r.swapped || r.db.Error != nil || len(tags) > maxRowTags {
		// Not built with the clause, or failed after it may have deleted.
		return []string{coarseTag(t)}
	}
	return tags
}

// returnKeys makes the delete db is about to run return keys, and reports
// whether it did: in a transaction the plugin follows, where the dialect
// builds RETURNING (for an UPDATE too: a soft delete) and nothing else reads
// the statement's RETURNING rows or result.
func returnKeys(db *gorm.DB, s *schema.Schema, keys []*schema.Field) bool {
	stmt := db.Statement
	tx, _ := txOf(stmt.ConnPool)
	if tx == nil || !tx.open() || tx.isUncertain() {
		return false
	}
	_, own := stmt.Clauses["RETURNING"]
	_, custom := db.ClauseBuilders["RETURNING"]
	cb := db.Callback()
	if own || custom || stmt.Result != nil || stmt.RaiseErrorOnNotFound || len(stmt.ColumnMapping) > 0 ||
		!slices.Contains(stmt.BuildClauses, "RETURNING") || !slices.Contains(cb.Delete().Clauses, "RETURNING") ||
		(len(s.DeleteClauses) > 0 && !slices.Contains(cb.Update().Clauses, "RETURNING")) {
		return false
	}
	r := &returnedKeys{db: db}
	for _, f := range keys {
		r.cols = append(r.cols, f.DBName)
	}
	stmt.Clauses["RETURNING"] = clause.Clause{Name: "RETURNING", Expression: r}
	stmt.Settings.Store(returnKey{stmt}, r)
	tx.queue(invalidation{more: r.tags})
	return true
}

// keysReturned runs after a delete that returned its key values: the
// statement gets its Dest back, without the clause.
func (p *Plugin) keysReturned(db *gorm.DB) {
	stmt := db.Statement
	if v, ok := stmt.Settings.LoadAndDelete(returnKey{stmt}); ok {
		r := v.(*returnedKeys)
		if c := stmt.Clauses["RETURNING"]; c.Expression == clause.Expression(r) {
			delete(stmt.Clauses, "RETURNING")
		}
		if r.swapped {
			stmt.Dest = r.dest
		}
	}
}

// relationTags returns what a model write to table t must invalidate for
// RelationshipCache entries: row tags where the rows are known, else the
// coarse tag. after reports an update in a transaction, whose new key values
// are added once it ran (newValues). A delete that returns its key values
// queues their tags itself (returnKeys).
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
	case writeDelete:
		if len(otherKeys(keys)) > 0 && primaryKeys(db, s, db.Statement.ReflectValue) != nil && returnKeys(db, s, keys) {
			return model, false // and the rows' own, queued by returnKeys
		}
	}
	old, ok := oldRowTags(db, s, keys)
	if !ok {
		return []string{coarseTag(t)}, false
	}
	return append(old, model...), kind == writeUpdate
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
