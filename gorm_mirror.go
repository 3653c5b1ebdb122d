package dogpile

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"

	"github.com/dogpile-go/dogpile/internal/answer"
	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
	"gorm.io/gorm/utils"
)

// Code mirrored from GORM. Everything here follows gorm.io/gorm v1.31.2
// (the version go.mod requires) and must be compared with it, function by
// function, on every upgrade of GORM:
//
//   - newScanner, runScan, rescan, stmtRescanner: callbacks/query.go, Query
//     (the query and gorm.Scan into a fresh destination, off the caller's
//     statement; with rows the database sent, replayed, for answers stored
//     as rows);
//   - stmtShape.build: callbacks/query.go, BuildQuerySQL, called on a
//     statement rebuilt from the fields it reads;
//   - preloadSession: callbacks/preload.go, preloadDB;
//   - preloadCached, assignEach: callbacks/preload.go, preload (the has-many
//     and has-one branch: the IN query, clearing the parents' fields, and
//     assigning each child to its parents);
//   - parentIdentity: schema/utils.go, GetIdentityFieldValuesMap.
//
// What differs from GORM is said at each function; the rest is GORM's
// behaviour, which the parity tests compare value by value.

// newScanner returns a *gorm.DB that gorm.Scan fills into fresh: stmt
// lends it the fields GORM never writes after the query callback.
func newScanner(ctx context.Context, config *gorm.Config, pool gorm.ConnPool, s *schema.Schema, stmt *gorm.Statement, fresh reflect.Value) *gorm.DB {
	tx := &gorm.DB{Config: config}
	tx.Statement = &gorm.Statement{
		DB: tx, ConnPool: pool, Context: ctx, Schema: s, Table: stmt.Table,
		ColumnMapping: stmt.ColumnMapping, Joins: stmt.Joins,
		Dest: fresh.Interface(), ReflectValue: fresh.Elem(),
	}
	return tx
}

// runScan runs sql on pool and scans its rows with tx, as GORM's own query
// handler does, leaving a not-found to the caller. queried reports that the
// query itself ran: an error then came from scanning its rows, and tx holds
// what was scanned, as GORM leaves it. With capture, the rows the database
// sent are read first, returned, and scanned from what was read (see
// answer.StoredAsRows).
func runScan(ctx context.Context, tx *gorm.DB, pool gorm.ConnPool, sql string, vars []any, capture bool) (sent *answer.Rows, queried bool, err error) {
	rows, err := pool.QueryContext(ctx, sql, vars...)
	if err != nil {
		return nil, false, err
	}
	if capture {
		var readErr error
		sent, readErr = answer.ReadRows(rows)
		if err := rescan(tx, sent, ctx); err != nil {
			return sent, true, err
		}
		if readErr != nil {
			tx.AddError(readErr) // as gorm.Scan adds rows.Err()
		}
		return sent, true, tx.Error
	}
	gorm.Scan(rows, tx, 0)
	if err := rows.Close(); err != nil && tx.Error == nil {
		return nil, true, err
	}
	return nil, true, tx.Error
}

// rescan scans rows the database sent, as read by answer.ReadRows, with tx.
func rescan(tx *gorm.DB, sent *answer.Rows, ctx context.Context) error {
	rows, err := sent.Replay(ctx)
	if err != nil {
		return err
	}
	gorm.Scan(rows, tx, 0)
	if err := rows.Close(); err != nil && tx.Error == nil {
		tx.AddError(err)
	}
	return nil
}

// stmtRescanner scans the rows of an answer stored as rows into a
// destination, with the scan of the statement that made it
// (answer.Rescanner). It is used in the caller's goroutine only.
type stmtRescanner struct{ stmt *gorm.Statement }

// Rescan implements answer.Rescanner.
func (r stmtRescanner) Rescan(dest reflect.Value, rows *sql.Rows) error {
	stmt := r.stmt
	tx := newScanner(stmt.Context, stmt.DB.Config, stmt.ConnPool, stmt.Schema, stmt, dest.Addr())
	gorm.Scan(rows, tx, 0)
	if err := rows.Close(); err != nil && tx.Error == nil {
		return err
	}
	return tx.Error
}

// stmtShape is what building and scanning a statement's query needs,
// captured so that it can be done off the caller's goroutine.
type stmtShape struct {
	ctx      context.Context
	config   *gorm.Config
	pool     gorm.ConnPool
	stmt     *gorm.Statement // for Joins, which GORM never writes after building
	clauses  map[string]clause.Clause
	build0   []string
	selects  []string
	omits    []string
	distinct bool
	unscoped bool
	table    string
	tableExp *clause.Expr
	schema   *schema.Schema
	model    any
}

func captureShape(stmt *gorm.Statement) stmtShape {
	clauses := make(map[string]clause.Clause, len(stmt.Clauses))
	for k, c := range stmt.Clauses {
		clauses[k] = c
	}
	return stmtShape{
		ctx: stmt.Context, config: stmt.DB.Config, pool: stmt.ConnPool, stmt: stmt, clauses: clauses,
		build0: stmt.BuildClauses, selects: stmt.Selects, omits: stmt.Omits, distinct: stmt.Distinct,
		unscoped: stmt.Unscoped, table: stmt.Table, tableExp: stmt.TableExpr, schema: stmt.Schema, model: stmt.Model,
	}
}

// build returns the SQL and vars of the shape's query with clauses.
func (s stmtShape) build(clauses map[string]clause.Clause) (string, []any) {
	tx := &gorm.DB{Config: s.config}
	tx.Statement = &gorm.Statement{
		DB: tx, ConnPool: s.pool, Context: s.ctx, Clauses: clauses, BuildClauses: s.build0,
		Selects: s.selects, Omits: s.omits, Distinct: s.distinct, Unscoped: s.unscoped,
		Table: s.table, TableExpr: s.tableExp, Schema: s.schema, Model: s.model, Joins: s.stmt.Joins,
	}
	callbacks.BuildQuerySQL(tx)
	return tx.Statement.SQL.String(), tx.Statement.Vars
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
